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
 * whole unused packs). Called under the exclusive lock: the decision is only
 * valid while no backup can add references (docs/locks-and-gc.md).
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
  /** Bytes of index files and packs before collection. */
  bytesBefore: number;
}

export async function analyzeGarbage(
  repo: Repository,
  storage: Storage,
  options: { maxUnused: number; concurrency: number },
): Promise<GarbageAnalysis> {
  const indexFiles: string[] = [];
  let bytesBefore = 0;
  for await (const object of storage.list(INDEX_PREFIX)) {
    if (idFromKey(object.key, INDEX_PREFIX)) indexFiles.push(object.key);
    bytesBefore += object.size;
  }
  const index = await repo.loadIndex(options.concurrency * 2);
  const { snapshots, unreadable } = await repo.listSnapshots();
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
  const remove = new Set<string>();
  const repack = new Set<string>();
  for (const packId of packSizes.keys()) {
    const u = usage.get(packId);
    if (!u || u.live === 0) remove.add(packId);
    else if (u.dead > (u.live + u.dead) * options.maxUnused) repack.add(packId);
  }
  // A used piece whose pack is gone cannot be saved by GC; refuse rather than drop it from the index silently.
  const missing = [...usage.keys()].filter((packId) => !packSizes.has(packId) && (usage.get(packId)?.live ?? 0) > 0);
  if (missing.length > 0) {
    throw new CairnError(
      'Cairn.Damaged',
      `${missing.length} pack(s) that snapshots use are missing (${missing.slice(0, 3).join(', ')}…); garbage collection stops`,
      {
        hint: 'run `cairn verify` to see the snapshots affected',
      },
    );
  }
  return { index, reader, used, snapshots: snapshots.length, manifests: snapshots, indexFiles, packSizes, remove, repack, bytesBefore };
}

/**
 * Writes one consolidated index of the entries that stay (50k entries a file),
 * then deletes the old index files: from then on nothing believes in the
 * packs left out, and they can be deleted at leisure.
 */
export async function replaceIndex(
  repo: Repository,
  storage: DeletableStorage,
  analysis: GarbageAnalysis,
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
