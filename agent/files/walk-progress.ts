import type { SnapshotSummary } from '../core/snapshot.ts';
import type { PackWriter } from '../pipeline/pack-writer.ts';
import type { ProgressListener } from '../progress/progress.ts';
import type { ScanTotals } from './scanner.ts';

/** What the walk has counted so far (the archiver's counts). */
type WalkCounts = Pick<SnapshotSummary, 'filesNew' | 'filesChanged' | 'filesUnchanged' | 'bytesRead' | 'bytesUnchanged'>;

/**
 * A backup's progress events: files and bytes done (against the scan's totals once it has
 * counted), and `bytesAdded`, what the repository holds so far. Reported as the walk reads and
 * as each pack is stored, since the last packs are stored after the walk has ended.
 */
export class WalkProgress {
  private readonly counts: WalkCounts;
  private readonly writer: PackWriter;
  private readonly listener: ProgressListener;
  private totals: ScanTotals | undefined;
  private last = 0;
  private current = '';

  constructor(counts: WalkCounts, writer: PackWriter, listener: ProgressListener, totals: ScanTotals | undefined) {
    this.counts = counts;
    this.writer = writer;
    this.listener = listener;
    this.totals = totals;
    writer.whenStored(() => this.report(this.current));
  }

  /**
   * At most every 200 ms (or the listener's reportEveryMs); `final` reports regardless (once the
   * backup's last pack is stored, so the last figures shown are the summary's).
   */
  report(current: string, final = false): void {
    this.current = current;
    const now = Date.now();
    if (!final && now - this.last < (this.listener.reportEveryMs ?? 200)) return;
    this.last = now;
    const c = this.counts;
    const files = c.filesNew + c.filesChanged + c.filesUnchanged;
    const t = this.totals;
    // An estimate the walk has counted past says nothing any more (no ETA beats a wrong one).
    if (t?.estimated && (files > t.files || c.bytesRead + c.bytesUnchanged > t.bytes)) this.totals = undefined;
    this.listener.progress({
      phase: 'backup',
      files,
      // Read and stored (or found in the repository): bytes still on their way to it are not done yet.
      bytes: c.bytesRead + c.bytesUnchanged - this.writer.unstoredDataBytes,
      bytesAdded: this.writer.stats.bytesAdded,
      current,
      ...(this.totals?.done ? { totalFiles: this.totals.files, totalBytes: this.totals.bytes } : {}),
    });
  }
}
