import { analyzeGarbage, replaceIndex } from '../core/garbage.ts';
import { INDEX_PREFIX, PACKS_PREFIX, packKey } from '../core/layout.ts';
import type { IndexEntry } from '../core/pack.ts';
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
  /** The log archive's files older than every base snapshot that needs them (docs/pitr.md). */
  logs: LogCollection[];
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
  const ctx = operationContext(repo, options);
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

async function pruneLocked(
  repo: Repository,
  storage: DeletableStorage,
  options: PruneOptions,
  assertHeld: () => void,
): Promise<PruneReport> {
  const analysis = await analyzeGarbage(repo, storage, { maxUnused: options.maxUnused, concurrency: options.concurrency });
  const { index, reader, used, indexFiles, packSizes, remove, repack, bytesBefore } = analysis;

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
    await replaceIndex(repo, storage, analysis, stays, assertHeld);
    for (const packId of [...remove, ...repack]) {
      assertHeld();
      await storage.delete(packKey(packId));
    }
  }
  const logs = await collectLogs(repo, storage, { dryRun: options.dryRun, assertHeld, snapshots: analysis.manifests });
  let freed = 0;
  for (const packId of [...remove, ...repack]) freed += packSizes.get(packId) ?? 0;
  const bytesAfter = options.dryRun ? bytesBefore - freed : await repositoryDataBytes(storage);
  return {
    dryRun: options.dryRun,
    snapshots: analysis.snapshots,
    packsBefore: packSizes.size,
    packsDeleted: remove.size,
    packsRepacked: repack.size,
    packsWritten,
    indexFilesReplaced: options.dryRun || nothingToDo ? 0 : indexFiles.length,
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
