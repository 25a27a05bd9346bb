import { mapLimit } from '../core/concurrency.ts';
import { CairnError, NotFoundError, errorMessage } from '../core/errors.ts';
import { PACKS_PREFIX, packKey } from '../core/layout.ts';
import { decodeTrailer, packDataKey, packSaltFromHeader, type IndexEntry } from '../core/pack.ts';
import { PieceIndex } from '../core/piece-index.ts';
import { PieceReader, frameProblem } from '../core/piece-reader.ts';
import type { Repository } from '../core/repository.ts';
import type { DeletableStorage } from '../core/storage.ts';
import { PackWriter } from '../pipeline/pack-writer.ts';
import { failureDetails, operationContext, record, underLock } from './operation.ts';
import { groupByPack, listPacks, readIndexFiles, uniqueEntries, writeIndexFiles, type RepairOptions } from './repair-index.ts';
import { assertCanDelete } from './repair-rights.ts';

export interface RepairPacksOptions extends RepairOptions {
  /** Check only these packs (ids or unique prefixes of at least 4 hex digits); empty or absent: every indexed pack. */
  packs?: string[] | undefined;
}

export interface DamagedPack {
  pack: string;
  problems: string[];
  /** Indexed pieces in it that read back whole (copied into new packs). */
  salvaged: number;
  /** Indexed pieces in it that are lost here (missing, failing authentication or their id). */
  lost: number;
}

export interface RepairPacksReport {
  dryRun: boolean;
  packsChecked: number;
  bytesRead: number;
  damagedPacks: DamagedPack[];
  /** Pieces no longer indexed anywhere after the repair: the next backup of their files uploads them again. */
  piecesLost: number;
  piecesSalvaged: number;
  packsWritten: number;
  indexFilesWritten: number;
  indexFilesRemoved: number;
  packsRemoved: number;
}

interface PackCheck {
  packId: string;
  problems: string[];
  good: IndexEntry[];
  bad: IndexEntry[];
}

/**
 * `cairn repair packs`, after restic's: reads every indexed pack (or those
 * named) whole, as `verify --read-data` does, and for each damaged one — missing, a bad
 * header or trailer, a frame that fails authentication, a piece that does not
 * match its id — copies the pieces that still read back whole into new packs,
 * replaces the index files that name it with ones that do not, and deletes
 * it. The damaged pieces are then in no index, so the next backup of their
 * files reads them again and uploads them (same content, same ids: older
 * snapshots that used them are whole again). Deleting the damaged pack keeps
 * `repair index` from putting its pieces back from its trailer. Under the
 * exclusive lock; a storage failure stops the repair (it is not damage).
 */
export async function repairPacks(repo: Repository, storage: DeletableStorage, options: RepairPacksOptions): Promise<RepairPacksReport> {
  if (!options.dryRun)
    await assertCanDelete(repo, storage, 'cairn repair packs', 'the index files naming damaged packs, and those packs', options.who);
  const ctx = operationContext(repo, options);
  return underLock(ctx, 'repair-packs', !options.dryRun, async (lease) => {
    try {
      const report = await repairPacksLocked(repo, storage, options, () => lease.assertHeld());
      if (!options.dryRun) await record(ctx, 'repair.packs', { ...report, damagedPacks: report.damagedPacks.slice(0, 100) });
      return report;
    } catch (error) {
      if (!options.dryRun) await record(ctx, 'repair.packs.failed', failureDetails(error));
      throw error;
    }
  });
}

async function repairPacksLocked(
  repo: Repository,
  storage: DeletableStorage,
  options: RepairPacksOptions,
  assertHeld: () => void,
): Promise<RepairPacksReport> {
  const { files, unreadable } = await readIndexFiles(repo, options.concurrency * 2);
  if (unreadable.length > 0) {
    throw new CairnError(
      'Cairn.Damaged',
      `${unreadable.length} index file(s) cannot be read (${unreadable[0]?.object}: ${unreadable[0]?.problem}); repair packs needs the whole index`,
      { hint: 'run `cairn repair index` first (it rebuilds the index from the packs), then `cairn repair packs`' },
    );
  }
  const byPack = groupByPack(uniqueEntries(files.flatMap((f) => f.entries)));
  const sizes = await listPacks(storage);
  const chosen = choosePacks([...byPack.keys()], options.packs ?? []);
  const reader = new PieceReader(repo, new PieceIndex());
  const checks: PackCheck[] = [];
  let bytesRead = 0;
  let done = 0;
  await mapLimit(chosen, options.concurrency, async (packId) => {
    options.signal?.throwIfAborted();
    const entries = byPack.get(packId) ?? [];
    const check = await checkPack(repo, reader, packId, entries, sizes.has(packId));
    bytesRead += check.bytes;
    if (check.problems.length > 0) checks.push(check);
    options.progress.progress({ phase: 'verify', files: ++done, bytes: bytesRead, totalFiles: chosen.length });
  });
  checks.sort((a, b) => a.packId.localeCompare(b.packId));
  const damaged = new Set(checks.map((c) => c.packId));
  // What stays indexed: every location outside the damaged packs (a damaged piece kept elsewhere stays).
  const kept = new PieceIndex();
  for (const [packId, entries] of byPack) if (!damaged.has(packId)) for (const e of entries) kept.add(e);
  const lostIds = new Set<string>();
  for (const c of checks) for (const e of c.bad) if (!kept.has(e.id)) lostIds.add(e.id.toString('hex'));
  const report: RepairPacksReport = {
    dryRun: options.dryRun,
    packsChecked: chosen.length,
    bytesRead,
    damagedPacks: checks.map((c) => ({ pack: packKey(c.packId), problems: c.problems, salvaged: c.good.length, lost: c.bad.length })),
    piecesLost: lostIds.size,
    piecesSalvaged: checks.reduce((n, c) => n + c.good.length, 0),
    packsWritten: 0,
    indexFilesWritten: 0,
    indexFilesRemoved: 0,
    packsRemoved: 0,
  };
  if (options.dryRun || checks.length === 0) return report;

  // 1. The good pieces of damaged packs into new packs (the writer indexes them; one kept elsewhere is not copied).
  const writer = new PackWriter(repo, kept, { compression: repo.config.compression, concurrency: options.concurrency });
  for (const c of checks) {
    if (c.good.length === 0) continue;
    const data = await repo.storage.get(packKey(c.packId));
    const key = packDataKey(repo.masterKey(), packSaltFromHeader(data, c.packId));
    for (const [offset, pieces] of groupByFrame(c.good)) {
      const first = pieces[0] as IndexEntry;
      const plain = await reader.decode(first, data.subarray(offset, offset + first.frameLength), key);
      for (const e of pieces) {
        const bytes = plain.data.subarray(e.offsetInFrame, e.offsetInFrame + e.length);
        // Checked again: only bytes that prove their id go into a new pack.
        if (!repo.pieceId(bytes).equals(e.id)) throw new CairnError('Cairn.Damaged', `pack ${c.packId} changed while it was repaired`);
        await writer.add(e.id, e.type, bytes);
      }
    }
  }
  await writer.flush();
  report.packsWritten = writer.stats.packsWritten;
  // 2. Index files naming a damaged pack are replaced by ones without its entries, written first.
  const touched = files.filter((f) => f.entries.some((e) => damaged.has(e.packId)));
  const stays = uniqueEntries(touched.flatMap((f) => f.entries).filter((e) => !damaged.has(e.packId)));
  report.indexFilesWritten = await writeIndexFiles(repo, stays);
  assertHeld();
  for (const f of touched) {
    await storage.delete(f.key);
    report.indexFilesRemoved++;
  }
  // 3. Then the damaged packs: nothing names them any more.
  for (const c of checks) {
    assertHeld();
    await storage.delete(packKey(c.packId));
    report.packsRemoved++;
  }
  return report;
}

/**
 * Reads one pack whole and sorts its indexed pieces into those that read back
 * whole and those that do not. Damage (missing, failing authentication or its
 * id) is a finding; any other failure (the storage's) is thrown.
 */
async function checkPack(
  repo: Repository,
  reader: PieceReader,
  packId: string,
  entries: IndexEntry[],
  listed: boolean,
): Promise<PackCheck & { bytes: number }> {
  const result = { packId, problems: [] as string[], good: [] as IndexEntry[], bad: [] as IndexEntry[], bytes: 0 };
  const lostAll = (problem: string): PackCheck & { bytes: number } => {
    result.problems.push(problem);
    result.bad = entries;
    result.good = [];
    return result;
  };
  if (!listed) return lostAll(`pack ${packId} is missing`);
  let data: Buffer;
  try {
    data = await repo.storage.get(packKey(packId));
  } catch (error) {
    if (error instanceof NotFoundError) return lostAll(`pack ${packId} is missing`);
    throw error;
  }
  result.bytes = data.length;
  let key: Buffer;
  try {
    key = packDataKey(repo.masterKey(), packSaltFromHeader(data, packId));
  } catch (error) {
    return lostAll(errorMessage(error));
  }
  try {
    decodeTrailer(key, data, packId);
  } catch (error) {
    if (!isDamage(error)) throw error;
    result.problems.push(errorMessage(error)); // its frames may still be whole: they are salvaged
  }
  for (const [offset, pieces] of groupByFrame(entries)) {
    const first = pieces[0] as IndexEntry;
    try {
      if (offset + first.frameLength > data.length) throw new CairnError('Cairn.Damaged', `pack ${packId} is truncated`);
      const plain = await reader.decode(first, data.subarray(offset, offset + first.frameLength), key);
      for (const e of pieces) {
        const slot = plain.ids.findIndex((id) => id.equals(e.id));
        const bytes = plain.data.subarray(e.offsetInFrame, e.offsetInFrame + e.length);
        if (slot < 0 || plain.offsets[slot] !== e.offsetInFrame || !repo.pieceId(bytes).equals(e.id)) {
          result.problems.push(`pack ${packId} frame @${offset}: piece ${e.id.toString('hex')} does not match its id`);
          result.bad.push(e);
        } else {
          result.good.push(e);
        }
      }
    } catch (error) {
      if (!isDamage(error)) throw error;
      result.problems.push(frameProblem(packId, offset, error));
      result.bad.push(...pieces);
    }
  }
  return result;
}

/** The packs named (each id or unique prefix must match one indexed pack), or every indexed pack. */
function choosePacks(indexed: string[], refs: string[]): string[] {
  if (refs.length === 0) return indexed;
  const chosen = new Set<string>();
  for (const ref of refs) {
    const id = ref.startsWith(PACKS_PREFIX) ? ref.slice(ref.lastIndexOf('/') + 1) : ref;
    if (!/^[0-9a-f]{4,64}$/.test(id))
      throw new CairnError('Cairn.Usage', `invalid pack id ${JSON.stringify(ref)}`, {
        hint: 'give a pack id (64 hex digits, or at least 4 of them) or its object name, as verify prints it',
      });
    const matches = indexed.filter((p) => p.startsWith(id));
    if (matches.length === 0)
      throw new CairnError('Cairn.NotFound', `no indexed pack ${ref}`, {
        hint: 'run `cairn verify --read-data` to list the damaged packs',
      });
    if (matches.length > 1)
      throw new CairnError('Cairn.Usage', `pack id prefix ${ref} is ambiguous (${matches.length} packs)`, { hint: 'give more digits' });
    chosen.add(matches[0] as string);
  }
  return [...chosen];
}

function isDamage(error: unknown): boolean {
  return error instanceof CairnError && error.code === 'Cairn.Damaged';
}

function groupByFrame(entries: IndexEntry[]): Map<number, IndexEntry[]> {
  const frames = new Map<number, IndexEntry[]>();
  for (const e of entries) {
    const list = frames.get(e.frameOffset);
    if (list) list.push(e);
    else frames.set(e.frameOffset, [e]);
  }
  return frames;
}
