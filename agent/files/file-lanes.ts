import type { PieceReader } from '../core/piece-reader.ts';
import type { TreeEntry } from '../core/tree.ts';
import type { FileJob } from './file-job.ts';
import { sliceReads } from './slice-reads.ts';

/**
 * Large files restored side by side: a file of at least LANE_FILE_BYTES is fed its pieces by a
 * lane of its own while the tree walk goes on to the next files, so up to LANES large files are
 * written at once.
 *
 * Why: the walk yields a file's pieces in order and the read-ahead bounds how far it runs ahead,
 * so a large file used to be the only one written until its last piece was fetched. Writing into
 * the page cache is a copy the kernel makes under the file's lock, and on the machine measured it
 * was the slowest step of restoring large files (one pool thread busy, the main thread idle two
 * thirds of the time); two files are two locks, copied on two cores (docs/performance-notes.md).
 * Lanes share the restore's one read-ahead budget, so memory stays bounded as before.
 */
export const LANE_FILE_BYTES = 16 << 20;
export const LANES = 2;

/** The restore's read-ahead: bytes fetched but not yet written, shared by the walk and the lanes. */
export interface ReadAheadBudget {
  /** Waits until there is room, then counts `bytes` as fetched ahead; throws once the restore has stopped. */
  reserve(bytes: number): Promise<void>;
  release(bytes: number): void;
}

/** Whether the walk hands this file to a lane: large, and not a hard link (whose group's first file carries the data). */
export function laneFile(entry: TreeEntry): boolean {
  return !entry.hardlink && (entry.size ?? 0) >= LANE_FILE_BYTES;
}

/**
 * Fetches a large file's pieces into its job in file order, within the budget, then closes the
 * job; a damaged slice or a stopped restore fails it (its writer then removes the file). Never
 * rejects: what went wrong reaches the restore through the job.
 */
export async function feedLane(job: FileJob, reader: PieceReader, budget: ReadAheadBudget): Promise<void> {
  try {
    for await (const read of sliceReads(job.entry, reader)) {
      const length = read.started || read.length;
      await budget.reserve(length);
      if (!job.push({ kind: 'piece', rel: job.rel, id: read.id, length, data: read.data })) {
        // The writer gave up on the file (and let go of what it held): nothing more to fetch for it.
        budget.release(length);
        return;
      }
    }
    job.close();
  } catch (error) {
    job.fail(error as Error);
  }
}
