import type { Command } from 'commander';
import type { ChainReport, LogGap } from '../../../core/log-chain.ts';
import { shortId } from '../../../core/snapshot.ts';
import { readChains } from '../../../core/pitr-planning.ts';
import type { Cli } from '../../context.ts';
import { formatDuration } from '../../output.ts';

/** `cairn pitr status`: the recoverable windows and every gap of each log stream (docs/pitr.md). */
export function registerPitrStatus(pitr: Command, cli: Cli): void {
  pitr
    .command('status')
    .description('per log stream: the recoverable window, every gap with its cause, and the last archived event (archive lag)')
    .option('--archive-stream <stream>', 'only this stream')
    .action(async (opts: { archiveStream?: string }, cmd: Command) => {
      const { repo } = await cli.openRepo(cmd);
      const reports = await readChains(repo, { stream: opts.archiveStream });
      const now = new Date();
      const streams = reports.map((r) => statusOf(r, now));
      cli.output.result(
        { type: 'pitr-status', now: now.toISOString(), streams },
        streams.length
          ? streams.map(statusText).join('\n\n')
          : 'no log archive in this repository (see docs/pitr.md to set up wal-push or binlog-push)',
      );
    });
}

export interface StreamStatus {
  stream: string;
  engine: string;
  /** From the oldest base whose log is complete up to now, to the last archived event; null when no base has a window that reaches it. */
  window: { from: string; to: string; snapshot: string } | null;
  lastEventTime: string | null;
  /** Seconds between the last archived event and now: the archive's lag (RPO). */
  lagSeconds: number | null;
  windows: Array<{ snapshot: string; snapshotTime: string; from: string; to: string; files: number; endedBy: string }>;
  gaps: LogGap[];
  withoutWindow: Array<{ snapshot: string; snapshotTime: string; reason: string }>;
  lines: Array<{
    id: string;
    files: number;
    firstFile: string;
    lastFile: string;
    firstEventTime: string | null;
    lastEventTime: string | null;
  }>;
  undescribed: number;
}

export function statusOf(report: ChainReport, now: Date): StreamStatus {
  const complete = report.windows
    .filter((w) => w.endedBy === 'end' && w.to === report.lastEventTime)
    .sort((a, b) => a.from.localeCompare(b.from))[0];
  return {
    stream: report.stream,
    engine: report.engine,
    window: complete ? { from: complete.from, to: complete.to, snapshot: complete.snapshot.id } : null,
    lastEventTime: report.lastEventTime,
    lagSeconds: report.lastEventTime ? Math.max(0, Math.round((now.getTime() - Date.parse(report.lastEventTime)) / 1000)) : null,
    windows: report.windows.map((w) => ({
      snapshot: w.snapshot.id,
      snapshotTime: w.snapshot.time,
      from: w.from,
      to: w.to,
      files: w.files.length,
      endedBy: w.endedBy === 'end' ? 'end of the archive' : `gap: ${w.endedBy.missing}`,
    })),
    gaps: report.gaps,
    withoutWindow: report.withoutWindow.map((w) => ({ snapshot: w.snapshot.id, snapshotTime: w.snapshot.time, reason: w.reason })),
    lines: report.lines.map((l) => ({
      id: l.id,
      files: l.files.length,
      firstFile: l.files[0]?.name ?? '',
      lastFile: l.files.at(-1)?.name ?? '',
      firstEventTime: l.firstEventTime,
      lastEventTime: l.lastEventTime,
    })),
    undescribed: report.undescribed.length,
  };
}

function statusText(s: StreamStatus): string {
  const out = [`${s.stream} (${s.engine})`];
  out.push(
    s.window
      ? `  recoverable: ${s.window.from} to ${s.window.to} (from snapshot ${shortId(s.window.snapshot)})`
      : '  recoverable: no base snapshot has a window up to the last archived event',
  );
  out.push(
    `  last archived event: ${s.lastEventTime ?? 'none'}${s.lagSeconds !== null ? ` (${formatDuration(s.lagSeconds * 1000)} ago)` : ''}`,
  );
  for (const w of s.windows) out.push(`  snapshot ${shortId(w.snapshot)}: ${w.from} to ${w.to}, ${w.files} file(s), ends at ${w.endedBy}`);
  for (const w of s.withoutWindow) out.push(`  snapshot ${shortId(w.snapshot)} (${w.snapshotTime}): no window: ${w.reason}`);
  for (const g of s.gaps)
    out.push(
      `  GAP in ${g.line} after ${g.after ?? '?'} (${g.from ?? '?'}) before ${g.before ?? '?'} (${g.to ?? '?'}): ${g.missing} — ${g.cause}`,
    );
  for (const l of s.lines)
    out.push(
      `  ${l.id}: ${l.files} file(s) ${l.firstFile} … ${l.lastFile}, events ${l.firstEventTime ?? '?'} to ${l.lastEventTime ?? '?'}`,
    );
  if (s.undescribed)
    out.push(`  ${s.undescribed} archived file(s) have no record yet (a push was interrupted; the next push describes them)`);
  return out.join('\n');
}
