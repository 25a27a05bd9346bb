import { CairnError } from '../core/errors.ts';
import { INDEX_PREFIX, PACKS_PREFIX, idFromKey, packKey } from '../core/layout.ts';
import type { IndexEntry } from '../core/pack.ts';
import { PieceIndex } from '../core/piece-index.ts';
import { PieceReader } from '../core/piece-reader.ts';
import { collectReferences } from '../core/references.ts';
import type { Repository, Who } from '../core/repository.ts';
import type { DeletableStorage } from '../core/storage.ts';
import { PackWriter } from '../pipeline/pack-writer.ts';
import type { ProgressListener } from '../progress/progress.ts';
import { failureDetails, record, underLock, type OperationContext } from './operation.ts';

export interface PruneOptions {
  who: Who;
  progress: ProgressListener;
  concurrency: number;
  dryRun: boolean;
  /** Repack a pack when more than this fraction of its bytes is no longer used. */
  maxUnused: number;
  leaseMs?: number | undefined;
  lockWaitMs?: number | undefined;
}

export interface PruneReport {
  dryRun: boolean;
  snapshots: number;
  packsBefore: number;
  packsDeleted: number;
  packsRepacked: number;
  packsWritten: number;
  indexFilesReplaced: number;
  bytesBefore: number;
  bytesFreed: number;
  bytesAfter: number;
}

/**
 * Garbage collection under the exclusive lock (docs/locks-and-gc.md): no
 * backup can be running, and a stalled one that lost its lease cannot commit.
 * Order: repacked data and the new index are written first, then the old index
 * files are deleted (so nothing believes in doomed packs any more), then the
 * packs. Killed at any point, a rerun starts from what is in the repository
 * and finishes the job: every decision is recomputed, none is remembered.
 */
export async function prune(repo: Repository, storage: DeletableStorage, options: PruneOptions): Promise<PruneReport> {
  const ctx: OperationContext = { repo, who: options.who, progress: options.progress, leaseMs: options.leaseMs, lockWaitMs: options.lockWaitMs };
  return underLock(ctx, 'prune', !options.dryRun, async (lease) => {
    try {
      const report = await pruneLocked(repo, storage, options, () => lease.assertHeld());
      if (!options.dryRun) await record(ctx, 'prune', { ...report });
      return report;
    } catch (error) {
      await record(ctx, 'prune.failed', failureDetails(error));
      throw error;
    }
  });
}

async function pruneLocked(repo: Repository, storage: DeletableStorage, options: PruneOptions, assertHeld: () => void): Promise<PruneReport> {
  const indexFiles: string[] = [];
  let bytesBefore = 0;
  for await (const object of storage.list(INDEX_PREFIX)) {
    if (idFromKey(object.key, INDEX_PREFIX)) indexFiles.push(object.key);
    bytesBefore += object.size;
  }
  const index = await repo.loadIndex(options.concurrency * 2);
  const { snapshots, unreadable } = await repo.listSnapshots();
  if (unreadable.length > 0) {
    throw new CairnError('Cairn.Damaged', `${unreadable.length} snapshot manifest(s) cannot be read (${unreadable.map((u) => u.id.slice(0, 8)).join(', ')}); prune deletes nothing while it cannot see every snapshot`, {
      hint: 'run `cairn verify`; forget the damaged snapshots explicitly if they are beyond repair',
    });
  }
  const reader = new PieceReader(repo, index);
  const used = await collectReferences(snapshots, reader);

  const packSizes = new Map<string, number>();
  for await (const object of storage.list(PACKS_PREFIX)) {
    const id = idFromKey(object.key, PACKS_PREFIX);
    if (id) packSizes.set(id, object.size);
    bytesBefore += object.size;
  }
  // Per pack: how much of what the index places there is still used.
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
    if (!u || u.live === 0) remove.add(packId); // unused, or written by an interrupted backup and never indexed
    else if (u.dead > (u.live + u.dead) * options.maxUnused) repack.add(packId);
  }
  // A used piece whose pack is gone cannot be saved by prune; refuse rather than drop it from the index silently.
  const missing = [...usage.keys()].filter((packId) => !packSizes.has(packId) && (usage.get(packId)?.live ?? 0) > 0);
  if (missing.length > 0) {
    throw new CairnError('Cairn.Damaged', `${missing.length} pack(s) that snapshots use are missing (${missing.slice(0, 3).join(', ')}…); prune stops`, { hint: 'run `cairn verify` to see the snapshots affected' });
  }

  let packsWritten = 0;
  const nothingToDo = remove.size === 0 && repack.size === 0 && indexFiles.length <= 1;
  if (!options.dryRun && !nothingToDo) {
    const stays = (entry: IndexEntry): boolean => used.has(entry.id) && !remove.has(entry.packId) && !repack.has(entry.packId);
    // Move the live pieces of sparse packs into new packs; the writer indexes them. Its
    // index starts from the pieces that stay, so a piece kept elsewhere is not copied.
    const fresh = new PieceIndex();
    for (const entry of index.entries()) if (stays(entry)) fresh.add(entry);
    const writer = new PackWriter(repo, fresh, { compression: repo.config.compression, concurrency: options.concurrency });
    for (const entry of index.entries()) {
      if (!repack.has(entry.packId) || !used.has(entry.id) || fresh.has(entry.id)) continue;
      await writer.add(entry.id, entry.type, await reader.read(entry.id));
    }
    await writer.flush();
    packsWritten = writer.stats.packsWritten;
    // One consolidated index of what stays, written (streamed, 50k entries a file) before anything is deleted.
    let batch: IndexEntry[] = [];
    for (const entry of index.entries()) {
      if (!stays(entry)) continue;
      batch.push(entry);
      if (batch.length === 50_000) {
        await repo.writeIndex(batch);
        batch = [];
      }
    }
    if (batch.length > 0) await repo.writeIndex(batch);
    assertHeld();
    for (const key of indexFiles) await storage.delete(key);
    for (const packId of [...remove, ...repack]) {
      assertHeld();
      await storage.delete(packKey(packId));
    }
  }
  let freed = 0;
  for (const packId of [...remove, ...repack]) freed += packSizes.get(packId) ?? 0;
  const bytesAfter = options.dryRun ? bytesBefore - freed : await repositoryDataBytes(storage);
  return {
    dryRun: options.dryRun,
    snapshots: snapshots.length,
    packsBefore: packSizes.size,
    packsDeleted: remove.size,
    packsRepacked: repack.size,
    packsWritten,
    indexFilesReplaced: options.dryRun || nothingToDo ? 0 : indexFiles.length,
    bytesBefore,
    bytesFreed: options.dryRun ? freed : Math.max(0, bytesBefore - bytesAfter),
    bytesAfter,
  };
}

async function repositoryDataBytes(storage: DeletableStorage): Promise<number> {
  let total = 0;
  for (const prefix of [PACKS_PREFIX, INDEX_PREFIX]) for await (const object of storage.list(prefix)) total += object.size;
  return total;
}

