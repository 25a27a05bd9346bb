import { analyzeGarbage } from '../core/garbage.ts';
import {
  DEFAULT_GC_GRACE_MS,
  deletePacks,
  markGeneration,
  readGenerations,
  settleGenerations,
  tidyGenerations,
  waitForGrace,
  type GcContext,
} from '../core/gc-collect.ts';
import type { GcGeneration } from '../core/gc-generation.ts';
import { INDEX_PREFIX, PACKS_PREFIX } from '../core/layout.ts';
import { PieceIndex } from '../core/piece-index.ts';
import type { Repository, Who } from '../core/repository.ts';
import type { DeletableStorage } from '../core/storage.ts';
import { PackWriter } from '../pipeline/pack-writer.ts';
import type { ProgressListener } from '../progress/progress.ts';
import { failureDetails, record, underLock, operationContext } from './operation.ts';
import { collectLogs, type LogCollection } from '../core/pitr-planning.ts';

export interface PruneOptions {
  who: Who;
  progress: ProgressListener;
  concurrency: number;
  dryRun: boolean;
  /** Repack a pack when more than this fraction of its bytes is no longer used. */
  maxUnused: number;
  leaseMs?: number | undefined;
  lockWaitMs?: number | undefined;
  now?: (() => number) | undefined;
  /**
   * How long, by the storage's clock, a mark stays pending before its packs are deleted
   * (DEFAULT_GC_GRACE_MS unless given): the time a backup that checked the GC generations just
   * before the mark has to get its manifest stored, so the sweep re-reads it.
   */
  graceMs?: number | undefined;
  /** How prune waits out the grace (a timer unless a test injects one: it must not sleep). */
  wait?: ((ms: number) => Promise<void>) | undefined;
}

export interface PruneReport {
  dryRun: boolean;
  snapshots: number;
  packsBefore: number;
  packsDeleted: number;
  packsRepacked: number;
  packsWritten: number;
  indexFilesReplaced: number;
  /** GC generations marked and settled by this run (a run also settles the marks of an earlier one that was killed). */
  generations: { marked: string | undefined; settled: string[] };
  /** Packs a mark named that a snapshot committed after it turned out to use: kept. */
  packsRescued: number;
  bytesBefore: number;
  bytesFreed: number;
  bytesAfter: number;
  /** The log archive's files older than every base snapshot that needs them (docs/pitr.md). */
  logs: LogCollection[];
}

/**
 * Two-phase garbage collection (core/gc-collect.ts, docs/locks-and-gc.md):
 *
 * 1. under the exclusive lock: records of generations settled a grace ago are removed, and marks
 *    that stayed pending a day (a killed run's, or forged: they are never settled, see
 *    core/gc-collect.ts); the analysis decides, the mark (a sealed generation record) is written,
 *    the live pieces of sparse packs are copied into new packs (indexed), archived logs are
 *    collected;
 * 2. the grace, by the storage's clock, with no lock held: backups run meanwhile (they drop
 *    the marked pieces from their index and upload them again);
 * 3. under the exclusive lock again: the mark is settled (the manifests committed since are
 *    read and whatever they use is kept; one new index replaces the old index files) and the
 *    doomed packs are deleted.
 *
 * The lock only keeps backups from wasting work; what is deleted does not depend on it, nor on
 * any clock but the storage's. Killed at any point, a rerun starts from what is in the
 * repository: its analysis marks again whatever is still garbage.
 */
export async function prune(repo: Repository, storage: DeletableStorage, options: PruneOptions): Promise<PruneReport> {
  const ctx = operationContext(repo, options);
  const graceMs = options.graceMs ?? DEFAULT_GC_GRACE_MS;
  const wait = options.wait ?? ((ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms)));
  const gcContext = (assertHeld: () => void): GcContext => ({
    repo,
    storage,
    who: options.who,
    concurrency: options.concurrency,
    assertHeld,
    warn: (message) => options.progress.warn(message),
  });
  try {
    const decided = await underLock(ctx, 'prune', !options.dryRun, (lease) =>
      decide(
        gcContext(() => lease.assertHeld()),
        options,
        graceMs,
      ),
    );
    const { mark } = decided;
    if (mark !== undefined) {
      // The grace, with no lock held: backups go on meanwhile; the settlement reads what they commit.
      await waitForGrace(
        gcContext(() => undefined),
        mark.generation,
        graceMs,
        wait,
      );
      await underLock(ctx, 'prune', true, async (lease) => {
        const gc = gcContext(() => lease.assertHeld());
        // Read again under the lock: the mark must still be there (settleGenerations).
        const settlement = await settleGenerations(gc, await readGenerations(gc), graceMs, [mark]);
        await deletePacks(gc, settlement.packs);
        decided.deleted += settlement.packs.length;
        decided.rescued += settlement.rescuedPacks.length;
        decided.repackedDeleted = settlement.packs.filter((p) => decided.analysis.repack.has(p)).length;
        decided.settled.push(...settlement.generations);
      });
    }
    const report = await summarize(storage, options, decided);
    if (!options.dryRun) await record(ctx, 'prune', { ...report });
    return report;
  } catch (error) {
    await record(ctx, 'prune.failed', failureDetails(error));
    throw error;
  }
}

interface Decided {
  analysis: Awaited<ReturnType<typeof analyzeGarbage>>;
  marked: string | undefined;
  /** The mark as this run wrote it: the only one it settles (core/gc-collect.ts). */
  mark: GcGeneration | undefined;
  settled: string[];
  deleted: number;
  rescued: number;
  repackedDeleted: number;
  packsWritten: number;
  logs: LogCollection[];
}

async function decide(gc: GcContext, options: PruneOptions, graceMs: number): Promise<Decided> {
  const { repo, storage } = gc;
  // Records of settled generations and long-stale marks go; a mark an earlier run left pending is not
  // settled (only a mark this run writes is: core/gc-collect.ts), this run's analysis marks its garbage again.
  if (!options.dryRun) await tidyGenerations(gc, await readGenerations(gc), graceMs);

  const analysis = await analyzeGarbage(repo, storage, { maxUnused: options.maxUnused, concurrency: options.concurrency });
  const { index, reader, used, remove, repack } = analysis;
  let packsWritten = 0;
  let mark: GcGeneration | undefined;
  if (!options.dryRun) {
    mark = await markGeneration(gc, analysis, [...remove, ...repack], 'prune');
    // The live pieces of sparse packs go into new packs, every one of them: a location of a used
    // piece is dropped only once a copy this run wrote and read back by its keyed id exists (another
    // index entry of the piece may be forged). The writer dedupes only against its own copies.
    const copies = new PieceIndex();
    const writer = new PackWriter(repo, copies, { compression: repo.config.compression, concurrency: options.concurrency });
    for (const entry of index.entries()) {
      if (!repack.has(entry.packId) || !used.has(entry.id) || copies.has(entry.id)) continue;
      gc.assertHeld();
      await writer.add(entry.id, entry.type, await reader.read(entry.id));
    }
    await writer.flush();
    packsWritten = writer.stats.packsWritten;
  }
  const logs = await collectLogs(repo, storage, { dryRun: options.dryRun, assertHeld: gc.assertHeld, snapshots: analysis.manifests });
  return { analysis, marked: mark?.generation, mark, settled: [], deleted: 0, rescued: 0, repackedDeleted: 0, packsWritten, logs };
}

async function summarize(storage: DeletableStorage, options: PruneOptions, decided: Decided): Promise<PruneReport> {
  const { analysis, marked, settled, deleted, rescued, repackedDeleted, packsWritten, logs } = decided;
  const { packSizes, remove, repack, bytesBefore } = analysis;
  let freed = 0;
  for (const packId of [...remove, ...repack]) freed += packSizes.get(packId) ?? 0;
  const bytesAfter = options.dryRun ? bytesBefore - freed : await repositoryDataBytes(storage);
  return {
    dryRun: options.dryRun,
    snapshots: analysis.snapshots,
    packsBefore: packSizes.size,
    packsDeleted: options.dryRun ? remove.size : deleted - repackedDeleted,
    packsRepacked: options.dryRun ? repack.size : repackedDeleted,
    packsWritten,
    indexFilesReplaced: options.dryRun || settled.length === 0 ? 0 : analysis.indexFiles.length,
    generations: { marked, settled },
    packsRescued: rescued,
    bytesBefore,
    bytesFreed: options.dryRun ? freed : Math.max(0, bytesBefore - bytesAfter),
    bytesAfter,
    logs,
  };
}

async function repositoryDataBytes(storage: DeletableStorage): Promise<number> {
  let total = 0;
  for (const prefix of [PACKS_PREFIX, INDEX_PREFIX]) for await (const object of storage.list(prefix)) total += object.size;
  return total;
}
