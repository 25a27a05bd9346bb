import { CairnError, DamagedError } from './errors.ts';
import { loadIndexFiles, replaceIndex, type GarbageAnalysis } from './garbage.ts';
import {
  doomedPieces,
  listGenerations,
  newGenerationName,
  writeGeneration,
  writeSwept,
  type GcGeneration,
  type StoredGeneration,
} from './gc-generation.ts';
import { gcGenerationKey, gcSweptKey, packKey } from './layout.ts';
import { clearEndedLocks, type ClearedLocks } from './lock-cleanup.ts';
import { probeStorageClock } from './locks.ts';
import { PACK_HEADER_BYTES, decodeTrailer, type PieceLocation } from './pack.ts';
import { PieceReader } from './piece-reader.ts';
import { collectReferences, PieceSet } from './references.ts';
import type { Repository, Who } from './repository.ts';
import type { DeletableStorage } from './storage.ts';

/**
 * The two phases of garbage collection (docs/locks-and-gc.md), shared by
 * `cairn prune` and the control plane's retention function:
 *
 * 1. **mark** (`markGeneration`): the decision is written as a sealed
 *    generation record before anything is deleted;
 * 2. **settle** (`settleGenerations`), once the storage's clock says a grace has
 *    passed since the mark was stored: every manifest the mark did not see is
 *    read, and every pack any location of a piece they use names is kept; then
 *    one index without the rest replaces the old index files. Deleting the
 *    packs (`deletePacks`, or the control plane's per-prefix sweep) follows.
 *
 * A collection settles only the marks it wrote itself, in this process, from what it holds in
 * memory. A mark on storage is sealed with the repository key, which every host holds: a host
 * that may only create objects could write one whose `seen` set lists every snapshot and whose
 * packs hold their data, and a settlement trusting it would delete that data. Marks this
 * process did not write (a forgery, or a killed run's) are never acted on; whatever they named
 * that is still unused, this run's own analysis marks again, and `tidyGenerations` removes them
 * once they are long stale.
 *
 * A backup, for its part, forgets the pieces of every generation it finds when
 * it starts and re-reads the generations before it commits
 * (core/gc-backup-guard.ts). Locks only keep the two from wasting each other's
 * work; no lease and no host clock decides what is deleted.
 */

/** How long a mark stays pending before it may be settled, by the storage's clock, when the caller does not say. */
export const DEFAULT_GC_GRACE_MS = 60_000;

export interface GcContext {
  repo: Repository;
  storage: DeletableStorage;
  who: Who;
  concurrency: number;
  /** Throws when the caller's lock was lost (work stops before the next deletion). */
  assertHeld: () => void;
  warn: (message: string) => void;
}

/** The storage's current time: a clock probe written, stat-ed and removed. */
export async function storageNow(ctx: Pick<GcContext, 'repo' | 'storage' | 'who'>): Promise<number> {
  const { key, storageNow: now } = await probeStorageClock(ctx.repo, ctx.who);
  await ctx.storage.delete(key);
  return now;
}

/** Writes the mark for `packs` and the analysis' unused pieces; undefined when there is nothing to collect. */
export async function markGeneration(
  ctx: GcContext,
  analysis: Pick<GarbageAnalysis, 'manifests' | 'unused'>,
  packs: Iterable<string>,
  operation: string,
): Promise<GcGeneration | undefined> {
  const doomed = [...new Set(packs)].sort();
  if (doomed.length === 0 && analysis.unused.length === 0) return undefined;
  const generation: GcGeneration = {
    generation: newGenerationName(),
    created: new Date().toISOString(),
    by: { ...ctx.who, operation },
    seen: analysis.manifests.map((s) => s.id).sort(),
    packs: doomed,
    pieces: analysis.unused,
  };
  ctx.assertHeld();
  await writeGeneration(ctx.repo, generation);
  return generation;
}

export interface GenerationState {
  generations: StoredGeneration[];
  /** The storage's time when they were listed. */
  now: number;
}

export async function readGenerations(ctx: GcContext): Promise<GenerationState> {
  const now = await storageNow(ctx);
  return { generations: await listGenerations(ctx.repo, ctx.warn), now };
}

/**
 * How long a mark no collection settles stays pending before `tidyGenerations` removes it (by the
 * storage's clock; at least twice the grace): far longer than a prune waits between its mark and its
 * settlement, so a prune running meanwhile loses its mark only if it stalled that long (it then fails
 * before deleting anything).
 */
export const STALE_MARK_MS = 24 * 3_600_000;

/**
 * The bookkeeping a collection clears first, under its exclusive lock and by the storage's clock
 * it has just read (`state.now`):
 *
 * - the records of generations settled at least one grace ago. They were kept that long so that
 *   a backup that loaded the index just before the settlement still finds the pieces it must not
 *   reuse (core/gc-backup-guard.ts);
 * - the records of locks that ended more than a day ago (core/lock-cleanup.ts), which every lock
 *   acquisition would otherwise go on reading. Here because the retention run and `cairn prune`
 *   both start with this step, holding delete rights and the exclusive lock.
 */
export async function tidyGenerations(
  ctx: GcContext,
  state: GenerationState,
  graceMs: number,
): Promise<{ generations: number; abandoned: number; locks: ClearedLocks }> {
  let removed = 0;
  let abandoned = 0;
  for (const g of state.generations) {
    if (g.swept === undefined && state.now - g.marked >= Math.max(2 * graceMs, STALE_MARK_MS)) {
      // Never settled by its writer (a killed run, or a mark a host forged): it only made backups upload its pieces again.
      ctx.assertHeld();
      await ctx.storage.delete(gcGenerationKey(g.generation));
      ctx.warn(
        `removed the GC mark ${g.generation}, pending since ${new Date(g.marked).toISOString()} (written as ${g.by.operation} by ${g.by.user}@${g.by.host}, which never settled it); nothing it named was deleted: a collection acts only on marks it wrote itself`,
      );
      abandoned++;
      continue;
    }
    if (g.swept === undefined || state.now - g.swept < graceMs) continue;
    ctx.assertHeld();
    await ctx.storage.delete(gcSweptKey(g.generation));
    await ctx.storage.delete(gcGenerationKey(g.generation));
    removed++;
  }
  const locks = await clearEndedLocks(ctx.repo, ctx.storage, { storageNow: state.now, assertHeld: ctx.assertHeld });
  return { generations: removed, abandoned, locks };
}

export interface Settlement {
  generations: string[];
  /** The packs to delete now: the marks' packs but those a manifest committed since uses. */
  packs: string[];
  /** Packs the marks named that a newer manifest turned out to use: kept. */
  rescuedPacks: string[];
}

/**
 * Phase 2's decision for `own`, the marks this process wrote, as it wrote them (see the top of
 * this file; never a mark read back from storage): each must still be on storage, pending, with
 * its grace passed by the storage's clock (`state`, from waitForGrace). Reads every manifest each
 * mark did not see, keeps the packs any location of a piece they use names, writes one index
 * without the doomed packs and pieces, deletes the old index files, and records each generation
 * as swept. The caller deletes `packs` afterwards; until then nothing indexes them, and a crash
 * leaves them to the next collection (a pack no index names is garbage).
 */
export async function settleGenerations(
  ctx: GcContext,
  state: GenerationState,
  graceMs: number,
  own: readonly GcGeneration[],
): Promise<Settlement> {
  const due = own.filter((mark) => {
    const stored = state.generations.find((g) => g.generation === mark.generation);
    // Gone (removed as stale while this run stalled): backups since then have not dropped its pieces.
    if (!stored)
      throw new CairnError(
        'Cairn.Failure',
        `the GC mark ${mark.generation} this run wrote is gone from ${ctx.repo.storage.location}; nothing was deleted`,
        { hint: 'run the collection again' },
      );
    if (state.now - stored.marked < graceMs) throw new CairnError('Cairn.Failure', `the GC mark ${mark.generation} is not yet a grace old`);
    // This run writes its mark's .swept record only below: one there already is someone else's, and would only stop collection.
    if (stored.swept !== undefined)
      ctx.warn(`a record says the GC mark ${mark.generation} was swept, but this run, which wrote the mark, has not settled it: ignored`);
    return true;
  });
  if (due.length === 0) return { generations: [], packs: [], rescuedPacks: [] };
  // Manifests before the index, as in analyzeGarbage: a listed manifest's index files are all loaded.
  const { snapshots, unreadable } = await ctx.repo.listSnapshots();
  if (unreadable.length > 0) {
    throw new DamagedError(
      `${unreadable.length} snapshot manifest(s) cannot be read (${unreadable.map((u) => u.id.slice(0, 8)).join(', ')}); garbage collection deletes nothing while it cannot see every snapshot`,
      { hint: 'run `cairn verify`; forget the damaged snapshots explicitly if they are beyond repair' },
    );
  }
  const { index, indexFiles } = await loadIndexFiles(ctx.repo, ctx.storage, ctx.concurrency);
  const seen = due.map((g) => new Set(g.seen));
  const newer = snapshots.filter((s) => seen.some((ids) => !ids.has(s.id)));
  const rescued = await collectReferences(newer, new PieceReader(ctx.repo, index), new PieceSet());

  const marked = new Set(due.flatMap((g) => g.packs));
  // A marked pack that holds a piece a newer manifest uses is kept, unless that piece also lives in
  // an unmarked pack whose own trailer confirms it there (a backup during the grace uploaded it
  // again): index entries are only claims, a pack's sealed trailer is the pack's own word.
  const keep = new Set<string>();
  const reader = new PieceReader(ctx.repo, index);
  const trailers = new Map<string, Promise<Set<string> | undefined>>();
  const confirmed = async (id: Buffer): Promise<boolean> => {
    for (const location of index.locations(id)) {
      if (marked.has(location.packId)) continue;
      let entries = trailers.get(location.packId);
      if (!entries) {
        entries = trailerLocations(ctx, reader, location.packId);
        trailers.set(location.packId, entries);
      }
      if ((await entries)?.has(locationKey(id, location))) return true;
    }
    return false;
  };
  for (const entry of index.entries()) {
    if (!marked.has(entry.packId) || keep.has(entry.packId) || !rescued.has(entry.id)) continue;
    if (!(await confirmed(entry.id))) keep.add(entry.packId);
  }
  const packs = [...marked].filter((p) => !keep.has(p)).sort();
  const doomedPacks = new Set(packs);
  const doomed = doomedPieces(due);
  const stays = (entry: { id: Buffer; packId: string }): boolean =>
    !doomedPacks.has(entry.packId) && !(doomed.has(entry.id.toString('hex')) && !rescued.has(entry.id));
  let changes = false;
  for (const entry of index.entries()) {
    if (!stays(entry)) {
      changes = true;
      break;
    }
  }
  if (changes || indexFiles.length > 1) await replaceIndex(ctx.repo, ctx.storage, { index, indexFiles }, stays, ctx.assertHeld);
  for (const g of due) {
    ctx.assertHeld();
    await writeSwept(ctx.repo, g.generation).catch((error: unknown) => {
      // Settled twice (a retried run): the first record stands.
      if (!(error instanceof CairnError && error.code === 'Cairn.AlreadyExists')) throw error;
    });
  }
  return { generations: due.map((g) => g.generation), packs, rescuedPacks: [...keep].sort() };
}

function locationKey(id: Buffer, location: PieceLocation): string {
  return `${id.toString('hex')}@${location.frameOffset}+${location.frameLength}/${location.offsetInFrame}+${location.length}`;
}

/**
 * The locations a pack's sealed trailer lists (two ranged reads), or undefined when it cannot
 * be read (missing, damaged, forged, or behind a storage hook whose sizes are not the pack's):
 * then it confirms nothing.
 */
async function trailerLocations(ctx: GcContext, reader: PieceReader, packId: string): Promise<Set<string> | undefined> {
  if (ctx.repo.storage.transform) return undefined;
  try {
    const info = await ctx.repo.storage.stat(packKey(packId));
    if (!info || info.size < PACK_HEADER_BYTES + 8) return undefined;
    const tail = await ctx.repo.storage.getRange(packKey(packId), info.size - 8, 8);
    const length = tail.readUInt32LE(0);
    if (length > info.size - 8 - PACK_HEADER_BYTES) return undefined;
    const sealed = await ctx.repo.storage.getRange(packKey(packId), info.size - 8 - length, length);
    // decodeTrailer reads a whole pack; the frames between header and trailer do not matter to it.
    const entries = decodeTrailer(await reader.packKey(packId), Buffer.concat([Buffer.alloc(PACK_HEADER_BYTES), sealed, tail]), packId);
    return new Set(entries.map((e) => locationKey(e.id, e)));
  } catch (error) {
    if (error instanceof CairnError && (error.code === 'Cairn.Damaged' || error.code === 'Cairn.NotFound')) return undefined;
    throw error;
  }
}

/** Deletes settled packs, checking the caller's lock before each; returns the bytes freed. */
export async function deletePacks(ctx: GcContext, packs: readonly string[]): Promise<number> {
  let bytes = 0;
  for (const packId of packs) {
    ctx.assertHeld();
    const info = await ctx.storage.stat(packKey(packId));
    if (!info) continue;
    await ctx.storage.delete(packKey(packId));
    bytes += info.size;
  }
  return bytes;
}

/**
 * Waits until the storage's clock says `graceMs` has passed since `generation` was stored.
 * `wait` is the caller's sleep (tests inject one that advances a storage clock or runs a backup).
 */
export async function waitForGrace(
  ctx: GcContext,
  generation: string,
  graceMs: number,
  wait: (ms: number) => Promise<void>,
): Promise<GenerationState> {
  for (;;) {
    const state = await readGenerations(ctx);
    const mark = state.generations.find((g) => g.generation === generation);
    if (!mark)
      throw new CairnError('Cairn.Failure', `the GC generation ${generation} just written is gone from ${ctx.repo.storage.location}`);
    const left = mark.marked + graceMs - state.now;
    if (left <= 0) return state;
    ctx.assertHeld();
    await wait(Math.min(left, graceMs));
  }
}
