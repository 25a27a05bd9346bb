import { CairnError } from './errors.ts';
import { INDEX_PREFIX, PACKS_PREFIX, idFromKey } from './layout.ts';
import type { IndexEntry } from './pack.ts';
import type { PieceIndex } from './piece-index.ts';
import { PieceReader } from './piece-reader.ts';
import { collectReferences, type PieceSet } from './references.ts';
import type { Repository } from './repository.ts';
import type { Snapshot } from './snapshot.ts';
import type { DeletableStorage, Storage } from './storage.ts';

/**
 * What garbage collection decides, shared by `cairn prune` (which also
 * repacks) and the control plane's retention function (which only deletes
 * whole unused packs). The decision is only the mark of a two-phase
 * collection (core/gc-collect.ts): what backups commit meanwhile is re-read
 * before anything is deleted, so it needs no lock to be safe (the callers
 * take one to avoid wasted work).
 *
 * A piece may have several index entries (PieceIndex keeps them all, forged
 * ones included): a pack counts as used when any entry of a used piece names
 * it, so an index file claiming used pieces live in another pack can never
 * make their real pack look unused.
 */
export interface GarbageAnalysis {
  index: PieceIndex;
  reader: PieceReader;
  used: PieceSet;
  snapshots: number;
  /** The manifests the decision was made from (every one read: analysis refuses otherwise). */
  manifests: Snapshot[];
  indexFiles: string[];
  /** Every pack on storage with its size. */
  packSizes: Map<string, number>;
  /** Packs with no used piece, including packs no index names (an interrupted backup's uploads). */
  remove: Set<string>;
  /** Packs with more than `maxUnused` of their bytes unused. */
  repack: Set<string>;
  /** Pieces of the index no snapshot uses: the collection removes every location of them. */
  unused: Buffer[];
  /** Bytes of index files and packs before collection. */
  bytesBefore: number;
}

export async function analyzeGarbage(
  repo: Repository,
  storage: Storage,
  options: { maxUnused: number; concurrency: number },
): Promise<GarbageAnalysis> {
  // Manifests first, then the index: every index file a listed manifest's backup wrote was
  // written before that manifest, so it is loaded; an index listed first could miss the last
  // index file of a backup whose manifest the listing then sees, and call its packs unused.
  const { snapshots, unreadable } = await repo.listSnapshots();
  const { index, indexFiles, bytes: indexBytes } = await loadIndexFiles(repo, storage, options.concurrency);
  let bytesBefore = indexBytes;
  if (unreadable.length > 0) {
    throw new CairnError(
      'Cairn.Damaged',
      `${unreadable.length} snapshot manifest(s) cannot be read (${unreadable.map((u) => u.id.slice(0, 8)).join(', ')}); garbage collection deletes nothing while it cannot see every snapshot`,
      {
        hint: 'run `cairn verify`; forget the damaged snapshots explicitly if they are beyond repair',
      },
    );
  }
  const reader = new PieceReader(repo, index);
  const used = await collectReferences(snapshots, reader);

  const packSizes = new Map<string, number>();
  for await (const object of storage.list(PACKS_PREFIX)) {
    const id = idFromKey(object.key, PACKS_PREFIX);
    if (id) packSizes.set(id, object.size);
    bytesBefore += object.size;
  }
  const usage = new Map<string, { live: number; dead: number }>();
  for (const entry of index.entries()) {
    const u = usage.get(entry.packId) ?? { live: 0, dead: 0 };
    if (used.has(entry.id)) u.live += entry.length;
    else u.dead += entry.length;
    usage.set(entry.packId, u);
  }
  const unused: Buffer[] = [];
  const unusedSeen = new Set<string>();
  for (const entry of index.entries()) {
    if (used.has(entry.id) || unusedSeen.has(entry.id.toString('hex'))) continue;
    unusedSeen.add(entry.id.toString('hex'));
    unused.push(entry.id);
  }
  const remove = new Set<string>();
  const repack = new Set<string>();
  for (const packId of packSizes.keys()) {
    const u = usage.get(packId);
    if (!u || u.live === 0) remove.add(packId);
    else if (u.dead > (u.live + u.dead) * options.maxUnused) repack.add(packId);
  }
  // A used piece none of whose packs exists cannot be saved by GC; refuse rather than drop it from the index
  // silently. (An entry naming a pack that does not exist, beside one that does, is only a stale or forged
  // location: readers skip it, and it must not stop every collection.)
  const missing = new Set<string>();
  for (const entry of index.entries()) {
    if (packSizes.has(entry.packId) || !used.has(entry.id)) continue;
    if (!index.locations(entry.id).some((l) => packSizes.has(l.packId))) missing.add(entry.packId);
  }
  if (missing.size > 0) {
    throw new CairnError(
      'Cairn.Damaged',
      `${missing.size} pack(s) that snapshots use are missing (${[...missing].slice(0, 3).join(', ')}…); garbage collection stops`,
      {
        hint: 'run `cairn verify` to see the snapshots affected',
      },
    );
  }
  return {
    index,
    reader,
    used,
    snapshots: snapshots.length,
    manifests: snapshots,
    indexFiles,
    packSizes,
    remove,
    repack,
    unused,
    bytesBefore,
  };
}

/** Lists the index files, then loads them (the names are what a later index replacement deletes). */
export async function loadIndexFiles(
  repo: Repository,
  storage: Storage,
  concurrency: number,
): Promise<{ index: PieceIndex; indexFiles: string[]; bytes: number }> {
  const indexFiles: string[] = [];
  let bytes = 0;
  for await (const object of storage.list(INDEX_PREFIX)) {
    if (idFromKey(object.key, INDEX_PREFIX)) indexFiles.push(object.key);
    bytes += object.size;
  }
  const index = await repo.loadIndex(concurrency * 2);
  // An index file that cannot be read may be the only record of packs a snapshot uses: collect nothing.
  if (index.unreadable.length > 0)
    throw new CairnError(
      'Cairn.Damaged',
      `garbage collection deletes nothing while index file(s) ${index.unreadable.map((u) => u.name).join(', ')} cannot be read (${index.unreadable[0]?.error ?? ''})`,
      { hint: '`cairn repair index` rebuilds the index from the packs and replaces every old index file, this one included' },
    );
  return { index, indexFiles, bytes };
}

/**
 * Writes one consolidated index of the entries that stay (50k entries a file),
 * then deletes the old index files: from then on nothing believes in the
 * packs left out, and they can be deleted at leisure.
 */
export async function replaceIndex(
  repo: Repository,
  storage: DeletableStorage,
  analysis: Pick<GarbageAnalysis, 'index' | 'indexFiles'>,
  stays: (entry: IndexEntry) => boolean,
  assertHeld: () => void,
): Promise<void> {
  let batch: IndexEntry[] = [];
  for (const entry of analysis.index.entries()) {
    if (!stays(entry)) continue;
    batch.push(entry);
    if (batch.length === 50_000) {
      await repo.writeIndex(batch);
      batch = [];
    }
  }
  if (batch.length > 0) await repo.writeIndex(batch);
  assertHeld();
  for (const key of analysis.indexFiles) await storage.delete(key);
}
