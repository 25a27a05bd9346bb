import { INDEX_PREFIX, PACKS_PREFIX } from '../core/layout.ts';
import type { Repository } from '../core/repository.ts';

export interface RepositoryStats {
  snapshots: number;
  /** Sum of the snapshots' file sizes (what restoring all of them would write). */
  logicalBytes: number;
  /** Distinct piece bytes before compression. */
  uniqueBytes: number;
  /** Bytes of packs and index files in storage. */
  storedBytes: number;
  pieces: number;
  packs: number;
  dedupeRatio: number;
  compressionRatio: number;
  perSnapshot: Array<{ id: string; time: string; host: string; logicalBytes: number; addedBytes: number }>;
}

export async function stats(repo: Repository): Promise<RepositoryStats> {
  const index = await repo.loadIndex();
  const { snapshots } = await repo.listSnapshots();
  let uniqueBytes = 0;
  for (const entry of index.entries()) uniqueBytes += entry.length;
  let storedBytes = 0;
  let packs = 0;
  for await (const o of repo.storage.list(PACKS_PREFIX)) {
    storedBytes += o.size;
    packs++;
  }
  for await (const o of repo.storage.list(INDEX_PREFIX)) storedBytes += o.size;
  const logicalBytes = snapshots.reduce((sum, s) => sum + s.summary.totalBytes, 0);
  return {
    snapshots: snapshots.length,
    logicalBytes,
    uniqueBytes,
    storedBytes,
    pieces: index.size,
    packs,
    dedupeRatio: uniqueBytes > 0 ? logicalBytes / uniqueBytes : 1,
    compressionRatio: storedBytes > 0 ? uniqueBytes / storedBytes : 1,
    perSnapshot: snapshots.map((s) => ({
      id: s.id,
      time: s.time,
      host: s.host,
      logicalBytes: s.summary.totalBytes,
      addedBytes: s.summary.bytesAdded,
    })),
  };
}
