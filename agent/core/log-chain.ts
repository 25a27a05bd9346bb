import { engineCatalog } from './engine-options/catalog.ts';
import type { PitrLogKind } from './engine-options/spec.ts';
import { CairnError } from './errors.ts';
import type { ArchivedLog, LogFileRecord } from './log-archive.ts';
import { binlogLines, binlogStart, parseGtidState } from './log-chain-binlog.ts';
import { DEFAULT_WAL_SEGMENT_SIZE, parseLsn, walLines, walStart } from './log-chain-wal.ts';
import { lastEventUpTo, type BaseSnapshot, type LineAnalysis, type LogGap, type LogLine } from './log-lines.ts';
import { shortId } from './snapshot.ts';

/**
 * Chain checks over an archived log (docs/pitr.md). Pure: the caller read the
 * archive and the snapshots. A log is followed by the database's own
 * positions, never by file name alone: WAL by timeline and segment number,
 * binlogs by GTID state (each file's state at start must equal its
 * predecessor's state at end, and the predecessor's ROTATE names it), so a
 * server that restarts its numbering starts a new line instead of
 * continuing, or overwriting, an old one.
 *
 * A base snapshot's window runs from the end of the snapshot to the last
 * event of its line, or to the last event before the first gap: a gap is
 * never papered over.
 */

export type { BaseSnapshot, LogGap, LogLine } from './log-lines.ts';
export { DEFAULT_WAL_SEGMENT_SIZE, parseLsn, parseWalName, walName } from './log-chain-wal.ts';
export { parseGtidState } from './log-chain-binlog.ts';

export interface RecoveryWindow {
  snapshot: BaseSnapshot;
  line: string;
  /** Recoverable from (the end of the snapshot) to (the last archived event of the run). */
  from: string;
  to: string;
  /** The files a replay from this base may need, in order: from the base's position to the end of the run. */
  files: LogFileRecord[];
  /** Where the run ends: the end of what is archived, or a gap. */
  endedBy: LogGap | 'end';
  /** For a replay: the position in the first file where the base leaves off (binlogs). */
  startPosition?: number;
}

export interface ChainReport {
  stream: string;
  /** The engine whose log the stream holds, and the log's kind (from the engines' capabilities). */
  engine: string;
  log: PitrLogKind;
  lines: LogLine[];
  gaps: LogGap[];
  windows: RecoveryWindow[];
  /** Snapshots of this database with no window, and why. */
  withoutWindow: Array<{ snapshot: BaseSnapshot; reason: string }>;
  /** Where each base snapshot's replay would start (line, index of its first file), whether or not it has a window yet. */
  starts: Array<{ snapshot: BaseSnapshot; line: string; index: number }>;
  lastEventTime: string | null;
  undescribed: Array<{ key: string; size: number }>;
}

/** The engine whose log a stream holds, by the stream prefix its capabilities name (pg- → postgres). */
export function engineOfStream(stream: string): string {
  return pitrOfStream(stream).engine;
}

function pitrOfStream(stream: string): { engine: string; log: PitrLogKind } {
  const spec = engineCatalog.engineOfStream(stream);
  if (!spec?.capabilities.pitr) {
    throw new CairnError('Cairn.Usage', `no engine archives a log stream named ${JSON.stringify(stream)}`, {
      hint: `a stream name starts with ${engineCatalog
        .pitrEngines()
        .map((s) => s.capabilities.pitr?.streamPrefix)
        .join(' or ')}`,
    });
  }
  return { engine: spec.name, log: spec.capabilities.pitr.log };
}

/** Snapshot engines whose snapshots can be the base of a replay of this engine's log (every engine with the same log kind). */
export function baseEngines(engine: string): string[] {
  const log = engineCatalog.get(engine)?.capabilities.pitr?.log;
  return log === undefined ? [] : engineCatalog.enginesOfLog(log).map((s) => s.name);
}

export function analyzeChain(stream: string, archive: ArchivedLog, snapshots: readonly BaseSnapshot[]): ChainReport {
  const { engine, log } = pitrOfStream(stream);
  const bases = snapshots.filter((s) => baseEngines(engine).includes(s.engine) && belongsToStream(s, stream));
  const analysis = log === 'wal' ? walLines(archive) : binlogLines(archive);
  const windows: RecoveryWindow[] = [];
  const withoutWindow: ChainReport['withoutWindow'] = [];
  const starts: ChainReport['starts'] = [];
  for (const snapshot of bases) {
    const start = baseStart(log, snapshot, analysis);
    if (typeof start !== 'string') starts.push({ snapshot, line: start.line.id, index: start.index });
    const found =
      typeof start === 'string' ? start : windowFrom(snapshot, analysis, start, 'position' in start ? start.position : undefined);
    if (typeof found === 'string') withoutWindow.push({ snapshot, reason: found });
    else windows.push(found);
  }
  windows.sort((a, b) => a.from.localeCompare(b.from));
  const last =
    analysis.lines
      .map((l) => l.lastEventTime)
      .filter((t): t is string => t !== null)
      .sort()
      .at(-1) ?? null;
  return {
    stream,
    engine,
    log,
    lines: analysis.lines,
    gaps: analysis.gaps,
    windows,
    withoutWindow,
    starts,
    lastEventTime: last,
    undescribed: archive.undescribed,
  };
}

function baseStart(
  log: PitrLogKind,
  snapshot: BaseSnapshot,
  analysis: LineAnalysis,
): { line: LogLine; index: number; position?: number } | string {
  return log === 'wal' ? walStart(snapshot, analysis) : binlogStart(snapshot, analysis);
}

function belongsToStream(snapshot: BaseSnapshot, stream: string): boolean {
  const sysid = snapshot.engineMetadata.systemIdentifier;
  if (stream.startsWith('pg-') && typeof sysid === 'string') return stream === `pg-${sysid}`;
  const archive = snapshot.engineMetadata.archiveStream;
  if (typeof archive === 'string') return archive === stream;
  return true;
}

function windowFrom(
  snapshot: BaseSnapshot,
  analysis: LineAnalysis,
  start: { line: LogLine; index: number },
  startPosition?: number,
): RecoveryWindow | string {
  const { line, index } = start;
  const run = (analysis.runs.get(line.id) ?? []).find((r) => r.start <= index && index <= r.end);
  if (!run) return 'internal: no run holds its first file';
  const files = line.files.slice(index, run.end + 1);
  const to = lastEventUpTo(line.files, run.end);
  if (!to || to < snapshot.endTime)
    return `no transaction was archived after the snapshot ended (${snapshot.endTime})${run.endedBy === 'end' ? '' : `; then ${run.endedBy.missing} is missing`}`;
  return {
    snapshot,
    line: line.id,
    from: snapshot.endTime,
    to,
    files,
    endedBy: run.endedBy,
    ...(startPosition !== undefined ? { startPosition } : {}),
  };
}

// ---------------------------------------------------------------- planning

export interface RecoveryTarget {
  time?: string;
  /** PostgreSQL */
  lsn?: string;
  xid?: string;
  /** MariaDB */
  gtid?: string;
  position?: string;
}

export interface ReplayPlan {
  stream: string;
  window: RecoveryWindow;
  target: RecoveryTarget;
  /** Files to fetch (those that may hold events up to the target), and their size. */
  files: LogFileRecord[];
  bytes: number;
  describe: string;
}

export function describeTarget(target: RecoveryTarget): string {
  if (target.time) return `time ${target.time}`;
  if (target.lsn) return `LSN ${target.lsn}`;
  if (target.xid) return `transaction ${target.xid}`;
  if (target.gtid) return `GTID ${target.gtid}`;
  return `position ${target.position ?? '?'}`;
}

/**
 * Picks the newest base whose window reaches the target, and the files to
 * replay. Refuses, naming the gap and the nearest recoverable times, when the
 * target is outside every window.
 */
export function planReplay(report: ChainReport, target: RecoveryTarget): ReplayPlan {
  const what = describeTarget(target);
  const fits = report.windows.filter((w) => windowReaches(w, target, report.log)).sort((a, b) => b.from.localeCompare(a.from));
  const window = fits[0];
  if (!window) throw refusal(report, target, what);
  const files = filesUpTo(window, target);
  return { stream: report.stream, window, target, files, bytes: files.reduce((n, f) => n + f.size, 0), describe: what };
}

function windowReaches(w: RecoveryWindow, target: RecoveryTarget, log: PitrLogKind): boolean {
  if (target.time) {
    const t = new Date(target.time).toISOString();
    return w.from <= t && t <= w.to;
  }
  if (log === 'wal' && target.lsn) {
    const lsn = parseLsn(target.lsn);
    const size = w.files[0]?.wal?.segmentSize ?? DEFAULT_WAL_SEGMENT_SIZE;
    const stop = w.snapshot.engineMetadata.stopLsn;
    const lastSegment = w.files.at(-1)?.wal?.segment ?? -1;
    return (typeof stop === 'string' ? parseLsn(stop) : 0) <= lsn && lsn < (lastSegment + 1) * size;
  }
  if (log === 'wal' && target.xid) {
    const xid = Number(target.xid);
    return w.files.some((f) => f.wal?.segment !== undefined && xidRange(f).some(([lo, hi]) => lo <= xid && xid <= hi));
  }
  if (log === 'binlog' && target.gtid) {
    const want = parseGtidState(target.gtid);
    const gtid = w.snapshot.engineMetadata.gtid;
    const base = parseGtidState(typeof gtid === 'string' ? gtid : '');
    const end = parseGtidState(w.files.at(-1)?.binlog?.endGtid ?? '');
    for (const [k, seq] of want) {
      if ((base.get(k) ?? 0) >= seq || (end.get(k) ?? -1) < seq) return false;
    }
    return want.size > 0;
  }
  if (log === 'binlog' && target.position) {
    const [name, pos] = splitPosition(target.position);
    return w.files.some((f, i) => f.name === name && pos <= (f.binlog?.endPosition ?? 0) && (i > 0 || pos >= (w.startPosition ?? 0)));
  }
  throw new CairnError(
    'Cairn.Usage',
    `${describeTarget(target)} is not a recovery target for a ${log === 'wal' ? 'WAL' : 'binlog'} archive`,
    {
      hint: log === 'wal' ? 'use --to-time, --to-lsn or --to-xid' : 'use --to-time, --to-gtid or --to-position',
    },
  );
}

function xidRange(f: LogFileRecord): Array<[number, number]> {
  return f.wal?.xids ? [f.wal.xids] : [];
}

export function splitPosition(text: string): [string, number] {
  const m = /^(.+):(\d+)$/.exec(text);
  if (!m)
    throw new CairnError('Cairn.Usage', `invalid binlog position ${JSON.stringify(text)}`, {
      hint: 'give FILE:POSITION, e.g. mariadb-bin.000012:4711',
    });
  return [m[1] as string, Number(m[2])];
}

function filesUpTo(w: RecoveryWindow, target: RecoveryTarget): LogFileRecord[] {
  if (!target.time) return w.files;
  const t = new Date(target.time).toISOString();
  // Up to and including the first file whose events reach past T: replay stops inside it.
  const out: LogFileRecord[] = [];
  for (const f of w.files) {
    out.push(f);
    if (f.lastEventTime && f.lastEventTime > t) break;
  }
  return out;
}

function refusal(report: ChainReport, target: RecoveryTarget, what: string): CairnError {
  if (report.windows.length === 0) {
    const why = report.withoutWindow.map((s) => `snapshot ${shortId(s.snapshot.id)}: ${s.reason}`).join('; ');
    return new CairnError(
      'Cairn.NotFound',
      `cannot recover ${report.stream} to ${what}: no base snapshot has a recoverable window${why ? ` (${why})` : ''}`,
      {
        hint: 'take a physical backup of the database while its log is being archived, then try again',
      },
    );
  }
  if (!target.time) {
    return new CairnError('Cairn.NotFound', `cannot recover ${report.stream} to ${what}: no window reaches it (${windowList(report)})`, {
      hint: 'choose a target inside one of the windows',
    });
  }
  const t = new Date(target.time).toISOString();
  const before = report.windows.filter((w) => w.to < t).sort((a, b) => b.to.localeCompare(a.to))[0];
  const after = report.windows.filter((w) => w.from > t).sort((a, b) => a.from.localeCompare(b.from))[0];
  const gap =
    report.gaps.find((g) => (g.from ?? '') <= t && (g.to === null || t <= g.to)) ??
    (before && before.endedBy !== 'end' ? before.endedBy : undefined);
  const nearest = [
    before ? `${before.to} (the last event before it)` : undefined,
    after ? `${after.from} (the next window's start)` : undefined,
  ]
    .filter(Boolean)
    .join(' or ');
  const reason = gap
    ? `the log has a gap there: ${gap.missing} is missing after ${gap.after ?? '?'} (${gap.cause})`
    : before && before.to === report.lastEventTime
      ? `nothing has been archived after ${before.to} (is archiving running?)`
      : before
        ? `it is after the window that ends at ${before.to}, and no base snapshot's window covers the log after that (a new log line began there: the server was restored, or its log does not follow on from the one before)`
        : `it is before the oldest recoverable window`;
  return new CairnError('Cairn.NotFound', `cannot recover ${report.stream} to ${what}: ${reason}`, {
    hint: nearest ? `the nearest recoverable times are ${nearest}` : `recoverable windows: ${windowList(report)}`,
  });
}

function windowList(report: ChainReport): string {
  return report.windows.map((w) => `${w.from} to ${w.to} from snapshot ${shortId(w.snapshot.id)}`).join('; ') || 'none';
}
