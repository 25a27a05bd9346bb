import type { LogFileRecord } from './log-archive.ts';
import type { ChainReport } from './log-chain.ts';

/**
 * Which archived log files garbage collection may remove (docs/pitr.md,
 * "Retention"). Pure: the report was built from every snapshot still in the
 * repository, so every kept snapshot is a base here.
 *
 * A base needs every file of its line from its own starting file onwards (its
 * window runs to the end of the line or the first gap, and the run after a
 * gap may gain a base later). So in each line the files before the oldest
 * base's starting file go, and nothing after it. A line no base starts in goes
 * whole only when all of it is older than the newest snapshot: a line that
 * is still being written may be the line of a backup running now.
 * Files no record describes are kept: what cannot be placed is not removed.
 */
export interface LogRelease {
  remove: Array<{ record: LogFileRecord; reason: string }>;
  keep: LogFileRecord[];
}

export function releasableLogs(report: ChainReport): LogRelease {
  const remove: LogRelease['remove'] = [];
  const keep: LogFileRecord[] = [];
  const newestSnapshot = report.starts
    .map((s) => s.snapshot.time)
    .concat(
      report.windows.map((w) => w.snapshot.time),
      report.withoutWindow.map((w) => w.snapshot.time),
    )
    .sort()
    .at(-1);
  for (const line of report.lines) {
    const starts = report.starts.filter((s) => s.line === line.id);
    if (starts.length > 0) {
      const cutoff = Math.min(...starts.map((s) => s.index));
      const oldest = starts.find((s) => s.index === cutoff);
      line.files.forEach((record, index) => {
        if (index < cutoff)
          remove.push({
            record,
            reason: `older than the oldest base snapshot of ${line.id} (${oldest?.snapshot.id.slice(0, 8) ?? '?'}, ${oldest?.snapshot.time ?? '?'})`,
          });
        else keep.push(record);
      });
      continue;
    }
    const lineTime =
      line.files
        .map((f) => f.lastEventTime ?? f.archivedAt)
        .sort()
        .at(-1) ?? '';
    if (newestSnapshot !== undefined && lineTime < newestSnapshot) {
      for (const record of line.files)
        remove.push({ record, reason: `no snapshot starts in ${line.id}, which ended before the newest snapshot (${newestSnapshot})` });
    } else {
      keep.push(...line.files);
    }
  }
  return { remove, keep };
}
