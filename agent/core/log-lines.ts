import type { LogFileRecord } from './log-archive.ts';

/**
 * What the chain checks of every log kind share (core/log-chain.ts): a log's
 * lines (a WAL timeline, a binlog GTID history), the gaps between their files,
 * and the runs a replay can follow. Pure.
 */

/** What chain checks need of a snapshot. */
export interface BaseSnapshot {
  id: string;
  time: string;
  endTime: string;
  host: string;
  engine: string;
  engineMetadata: Record<string, unknown>;
  totalBytes: number;
}

export interface LogGap {
  line: string;
  /** The last file before the gap and the first after it (database names). */
  after: string | null;
  before: string | null;
  /** Last event before the gap, first event after it. */
  from: string | null;
  to: string | null;
  /** What is missing, as the database would name it. */
  missing: string;
  cause: string;
}

export interface LogLine {
  id: string;
  files: LogFileRecord[];
  firstEventTime: string | null;
  lastEventTime: string | null;
}

export interface LineAnalysis {
  lines: LogLine[];
  gaps: LogGap[];
  /** For each line, the index in files where each run (up to a gap) ends, and the gap. */
  runs: Map<string, Array<{ start: number; end: number; endedBy: LogGap | 'end' }>>;
}

export function lineOf(id: string, files: LogFileRecord[]): LogLine {
  const times = files
    .flatMap((f) => [f.firstEventTime, f.lastEventTime])
    .filter((t): t is string => t !== null)
    .sort();
  return { id, files, firstEventTime: times[0] ?? null, lastEventTime: times.at(-1) ?? null };
}

export function lastEventUpTo(files: readonly LogFileRecord[], end: number): string | null {
  for (let i = end; i >= 0; i--) {
    const t = files[i]?.lastEventTime;
    if (t) return t;
  }
  return null;
}

export function firstEventFrom(files: readonly LogFileRecord[], start: number): string | null {
  for (let i = start; i < files.length; i++) {
    const t = files[i]?.firstEventTime;
    if (t) return t;
  }
  return null;
}
