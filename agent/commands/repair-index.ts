import { mapLimit } from '../core/concurrency.ts';
import { open } from '../core/crypto.ts';
import { CairnError, DamagedError, NotFoundError, errorMessage } from '../core/errors.ts';
import { INDEX_PREFIX, PACKS_PREFIX, idFromKey, packKey } from '../core/layout.ts';
import {
  PACK_END,
  PACK_HEADER_BYTES,
  decodeIndexEntries,
  decodeTrailer,
  packDataKey,
  packSaltFromHeader,
  type IndexEntry,
} from '../core/pack.ts';
import type { Repository } from '../core/repository.ts';
import type { DeletableStorage } from '../core/storage.ts';
import { failureDetails, operationContext, record, underLock, type OperationOptions } from './operation.ts';
import { assertCanDelete } from './repair-rights.ts';

export interface RepairOptions extends OperationOptions {
  concurrency: number;
  /** Say what would change; write and delete nothing (and take only the shared lock). */
  dryRun: boolean;
  signal?: AbortSignal | undefined;
}

export interface RepairIndexReport {
  dryRun: boolean;
  /** Packs on storage, each of whose trailers was read. */
  packs: number;
  /** Locations (piece in pack) the rebuilt index holds. */
  pieces: number;
  indexFilesBefore: number;
  /** Old index files that could not be read (replaced like the others). */
  unreadableIndexFiles: Array<{ object: string; problem: string }>;
  /** Locations found in trailers that no readable old index file named. */
  piecesAdded: number;
  /** Locations old index files named that no pack's trailer lists (the pack is gone, or the entry was never true). */
  piecesDropped: number;
  /** Packs whose trailer cannot be read: the old index's entries for them, if any, are kept. */
  unreadablePacks: Array<{ pack: string; problem: string; keptFromIndex: number }>;
  indexFilesWritten: number;
  indexFilesRemoved: number;
}

/** Entries per index file written by a repair (as prune writes them). */
const ENTRIES_PER_FILE = 50_000;
const TRAILER_AAD = Buffer.from('cairn/v1/pack-trailer');

/**
 * `cairn repair index`: rebuilds the index from the packs' trailers (each pack
 * repeats its own index entries, docs/repository-format.md "Packs"), for when
 * index files were lost or damaged. Under the exclusive lock, so no backup
 * adds index files meanwhile: every pack's trailer is read, new index files
 * covering every piece found are written, and only then are the old index
 * files deleted (a crash in between leaves both: duplicates are harmless). A
 * pack whose trailer cannot be read keeps whatever the old index said about
 * it (`repair packs` then salvages it). Deleting needs delete rights: they are
 * asked of the storage before anything is written.
 */
export async function repairIndex(repo: Repository, storage: DeletableStorage, options: RepairOptions): Promise<RepairIndexReport> {
  if (!options.dryRun) await assertCanDelete(repo, storage, 'cairn repair index', 'the old index files', options.who);
  const ctx = operationContext(repo, options);
  return underLock(ctx, 'repair-index', !options.dryRun, async (lease) => {
    try {
      const old = await readIndexFiles(repo, options.concurrency * 2);
      const packSizes = await listPacks(storage);
      const oldByPack = groupByPack(old.files.flatMap((f) => f.entries));
      const found: IndexEntry[] = [];
      const unreadablePacks: RepairIndexReport['unreadablePacks'] = [];
      await mapLimit(packSizes, options.concurrency, async ([packId, size]) => {
        options.signal?.throwIfAborted();
        try {
          found.push(...(await readPackTrailer(repo, packId, size)));
        } catch (error) {
          if (error instanceof NotFoundError) return; // deleted while we listed: nothing to index
          if (!(error instanceof CairnError && error.code === 'Cairn.Damaged')) throw error; // a storage failure is not damage
          const kept = oldByPack.get(packId) ?? [];
          found.push(...kept);
          unreadablePacks.push({ pack: packKey(packId), problem: errorMessage(error), keptFromIndex: kept.length });
        }
      });
      const fresh = uniqueEntries(found);
      const freshKeys = new Set(fresh.map(locationKey));
      const oldKeys = new Set([...oldByPack.values()].flat().map(locationKey));
      const report: RepairIndexReport = {
        dryRun: options.dryRun,
        packs: packSizes.size,
        pieces: fresh.length,
        indexFilesBefore: old.files.length + old.unreadable.length,
        unreadableIndexFiles: old.unreadable,
        piecesAdded: [...freshKeys].filter((k) => !oldKeys.has(k)).length,
        piecesDropped: [...oldKeys].filter((k) => !freshKeys.has(k)).length,
        unreadablePacks: unreadablePacks.sort((a, b) => a.pack.localeCompare(b.pack)),
        indexFilesWritten: 0,
        indexFilesRemoved: 0,
      };
      if (options.dryRun) return report;
      report.indexFilesWritten = await writeIndexFiles(repo, fresh);
      lease.assertHeld();
      for (const key of [...old.files.map((f) => f.key), ...old.unreadable.map((u) => u.object)]) {
        await storage.delete(key);
        report.indexFilesRemoved++;
      }
      await record(ctx, 'repair.index', { ...report, unreadablePacks: report.unreadablePacks.slice(0, 100) });
      return report;
    } catch (error) {
      if (!options.dryRun) await record(ctx, 'repair.index.failed', failureDetails(error));
      throw error;
    }
  });
}

export interface IndexFile {
  key: string;
  entries: IndexEntry[];
}

/** Every index file, read one by one so that one damaged file is reported instead of failing the whole read. */
export async function readIndexFiles(
  repo: Repository,
  concurrency: number,
): Promise<{ files: IndexFile[]; unreadable: Array<{ object: string; problem: string }> }> {
  const keys: string[] = [];
  for await (const object of repo.storage.list(INDEX_PREFIX)) if (idFromKey(object.key, INDEX_PREFIX)) keys.push(object.key);
  const files: IndexFile[] = [];
  const unreadable: Array<{ object: string; problem: string }> = [];
  await mapLimit(keys, concurrency, async (key) => {
    try {
      files.push({ key, entries: decodeIndexEntries(repo.unseal('index', key, await repo.storage.get(key)), key) });
    } catch (error) {
      if (error instanceof NotFoundError) return;
      if (!(error instanceof CairnError && error.code === 'Cairn.Damaged')) throw error;
      unreadable.push({ object: key, problem: errorMessage(error) });
    }
  });
  files.sort((a, b) => a.key.localeCompare(b.key));
  unreadable.sort((a, b) => a.object.localeCompare(b.object));
  return { files, unreadable };
}

/** Every pack on storage with its listed size. */
export async function listPacks(storage: DeletableStorage): Promise<Map<string, number>> {
  const sizes = new Map<string, number>();
  for await (const object of storage.list(PACKS_PREFIX)) {
    const id = idFromKey(object.key, PACKS_PREFIX);
    if (id) sizes.set(id, object.size);
  }
  return sizes;
}

/**
 * The entries a pack's trailer lists, read with three ranged reads (header,
 * end mark, trailer) rather than the whole pack; behind a storage hook listed
 * sizes are of the stored bytes, so the pack is read whole. Entries that name
 * another pack or frames outside this one are damage: a trailer only ever
 * describes its own pack.
 */
export async function readPackTrailer(repo: Repository, packId: string, size: number): Promise<IndexEntry[]> {
  const name = packKey(packId);
  let entries: IndexEntry[];
  let framesEnd: number;
  if (repo.storage.transform) {
    const pack = await repo.storage.get(name);
    entries = decodeTrailer(packDataKey(repo.masterKey(), packSaltFromHeader(pack, packId)), pack, packId);
    framesEnd = pack.length - 8 - pack.readUInt32LE(pack.length - 8);
  } else {
    if (size < PACK_HEADER_BYTES + 8) throw new DamagedError(`pack ${packId} is too short (${size} bytes) to hold a trailer`);
    const [header, tail] = await Promise.all([repo.storage.getRange(name, 0, PACK_HEADER_BYTES), repo.storage.getRange(name, size - 8, 8)]);
    const key = packDataKey(repo.masterKey(), packSaltFromHeader(header, packId));
    if (!tail.subarray(4).equals(PACK_END)) throw new DamagedError(`pack ${packId}: missing trailer`);
    const length = tail.readUInt32LE(0);
    framesEnd = size - 8 - length;
    if (framesEnd < PACK_HEADER_BYTES) throw new DamagedError(`pack ${packId}: bad trailer length`);
    const plain = open(key, await repo.storage.getRange(name, framesEnd, length), TRAILER_AAD);
    if (!plain) throw new DamagedError(`pack ${packId}: trailer failed authentication`);
    entries = decodeIndexEntries(plain, `pack ${packId} trailer`);
  }
  for (const e of entries) {
    if (e.packId !== packId || e.frameOffset < PACK_HEADER_BYTES || e.frameOffset + e.frameLength > framesEnd)
      throw new DamagedError(`pack ${packId}: its trailer lists a piece outside the pack`);
  }
  return entries;
}

/** Writes entries as index files of ENTRIES_PER_FILE each; returns how many. */
export async function writeIndexFiles(repo: Repository, entries: IndexEntry[]): Promise<number> {
  let written = 0;
  for (let at = 0; at < entries.length; at += ENTRIES_PER_FILE) {
    await repo.writeIndex(entries.slice(at, at + ENTRIES_PER_FILE));
    written++;
  }
  return written;
}

export function groupByPack(entries: Iterable<IndexEntry>): Map<string, IndexEntry[]> {
  const byPack = new Map<string, IndexEntry[]>();
  for (const entry of entries) {
    const list = byPack.get(entry.packId);
    if (list) list.push(entry);
    else byPack.set(entry.packId, [entry]);
  }
  return byPack;
}

/** One piece at one place: a piece may live in several packs (every location is kept), but once per place. */
export function locationKey(e: IndexEntry): string {
  return `${e.id.toString('hex')}@${e.packId}:${e.frameOffset}:${e.offsetInFrame}`;
}

export function uniqueEntries(entries: Iterable<IndexEntry>): IndexEntry[] {
  const seen = new Map<string, IndexEntry>();
  for (const e of entries) if (!seen.has(locationKey(e))) seen.set(locationKey(e), e);
  return [...seen.values()];
}
