import { CairnError } from './errors.ts';
import type { ArchivedLog, LogFileRecord } from './log-archive.ts';
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

export interface LogLine {
  id: string;
  files: LogFileRecord[];
  firstEventTime: string | null;
  lastEventTime: string | null;
}

export interface ChainReport {
  stream: string;
  engine: 'postgres' | 'mariadb';
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

export function engineOfStream(stream: string): 'postgres' | 'mariadb' {
  return stream.startsWith('pg-') ? 'postgres' : 'mariadb';
}

/** Snapshot engines whose snapshots can be the base of a replay from this stream. */
export function baseEngines(engine: 'postgres' | 'mariadb'): string[] {
  return engine === 'postgres' ? ['postgres'] : ['mariadb'];
}

export function analyzeChain(stream: string, archive: ArchivedLog, snapshots: readonly BaseSnapshot[]): ChainReport {
  const engine = engineOfStream(stream);
  const bases = snapshots.filter((s) => baseEngines(engine).includes(s.engine) && belongsToStream(s, stream));
  const analysis = engine === 'postgres' ? walLines(archive) : binlogLines(archive);
  const windows: RecoveryWindow[] = [];
  const withoutWindow: ChainReport['withoutWindow'] = [];
  const starts: ChainReport['starts'] = [];
  for (const snapshot of bases) {
    const start = baseStart(engine, snapshot, analysis);
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
  engine: 'postgres' | 'mariadb',
  snapshot: BaseSnapshot,
  analysis: LineAnalysis,
): { line: LogLine; index: number; position?: number } | string {
  return engine === 'postgres' ? walStart(snapshot, analysis) : binlogStart(snapshot, analysis);
}

function belongsToStream(snapshot: BaseSnapshot, stream: string): boolean {
  const sysid = snapshot.engineMetadata.systemIdentifier;
  if (stream.startsWith('pg-') && typeof sysid === 'string') return stream === `pg-${sysid}`;
  const archive = snapshot.engineMetadata.archiveStream;
  if (typeof archive === 'string') return archive === stream;
  return true;
}

interface LineAnalysis {
  lines: LogLine[];
  gaps: LogGap[];
  /** For each line, the index in files where each run (up to a gap) ends, and the gap. */
  runs: Map<string, Array<{ start: number; end: number; endedBy: LogGap | 'end' }>>;
}

function lineOf(id: string, files: LogFileRecord[]): LogLine {
  const times = files
    .flatMap((f) => [f.firstEventTime, f.lastEventTime])
    .filter((t): t is string => t !== null)
    .sort();
  return { id, files, firstEventTime: times[0] ?? null, lastEventTime: times.at(-1) ?? null };
}

function lastEventUpTo(files: readonly LogFileRecord[], end: number): string | null {
  for (let i = end; i >= 0; i--) {
    const t = files[i]?.lastEventTime;
    if (t) return t;
  }
  return null;
}

function firstEventFrom(files: readonly LogFileRecord[], start: number): string | null {
  for (let i = start; i < files.length; i++) {
    const t = files[i]?.firstEventTime;
    if (t) return t;
  }
  return null;
}

// ---------------------------------------------------------------- WAL

export const DEFAULT_WAL_SEGMENT_SIZE = 16 * 1024 * 1024;

/** 000000010000000A000000FF → timeline 1, segment number for the segment size. */
export function parseWalName(name: string, segmentSize = DEFAULT_WAL_SEGMENT_SIZE): { timeline: number; segment: number } | undefined {
  const m = /^([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})$/.exec(name);
  if (!m) return undefined;
  const perId = 0x100000000 / segmentSize;
  return { timeline: parseInt(m[1] as string, 16), segment: parseInt(m[2] as string, 16) * perId + parseInt(m[3] as string, 16) };
}

export function walName(timeline: number, segment: number, segmentSize = DEFAULT_WAL_SEGMENT_SIZE): string {
  const perId = 0x100000000 / segmentSize;
  const hex = (n: number): string => n.toString(16).toUpperCase().padStart(8, '0');
  return `${hex(timeline)}${hex(Math.floor(segment / perId))}${hex(segment % perId)}`;
}

/** "16/B374D848" → byte position. */
export function parseLsn(lsn: string): number {
  const m = /^([0-9A-Fa-f]{1,8})\/([0-9A-Fa-f]{1,8})$/.exec(lsn);
  if (!m)
    throw new CairnError('Cairn.Usage', `invalid LSN ${JSON.stringify(lsn)}`, {
      hint: 'an LSN looks like 0/3000148 (see pg_current_wal_lsn())',
    });
  return parseInt(m[1] as string, 16) * 0x100000000 + parseInt(m[2] as string, 16);
}

function walLines(archive: ArchivedLog): LineAnalysis {
  const byTimeline = new Map<number, LogFileRecord[]>();
  for (const record of archive.records) {
    if (record.kind !== 'wal' || !record.wal || record.wal.segment === undefined) continue;
    const list = byTimeline.get(record.wal.timeline) ?? [];
    list.push(record);
    byTimeline.set(record.wal.timeline, list);
  }
  const missingByName = new Map(archive.missing.map((r) => [r.name, r]));
  const lines: LogLine[] = [];
  const gaps: LogGap[] = [];
  const runs: LineAnalysis['runs'] = new Map();
  for (const [timeline, files] of [...byTimeline].sort((a, b) => a[0] - b[0])) {
    files.sort((a, b) => (a.wal?.segment ?? 0) - (b.wal?.segment ?? 0));
    const id = `timeline ${timeline}`;
    const lineRuns: Array<{ start: number; end: number; endedBy: LogGap | 'end' }> = [];
    let start = 0;
    for (let i = 0; i < files.length; i++) {
      const here = files[i] as LogFileRecord;
      const next = files[i + 1];
      if (!next) {
        lineRuns.push({ start, end: i, endedBy: 'end' });
        break;
      }
      const a = here.wal?.segment ?? 0;
      const b = next.wal?.segment ?? 0;
      if (b === a + 1) continue;
      const size = here.wal?.segmentSize ?? DEFAULT_WAL_SEGMENT_SIZE;
      const first = walName(timeline, a + 1, size);
      const last = walName(timeline, b - 1, size);
      const lost = missingByName.get(first);
      const gap: LogGap = {
        line: id,
        after: here.name,
        before: next.name,
        from: lastEventUpTo(files, i),
        to: firstEventFrom(files, i + 1),
        missing: a + 1 === b - 1 ? `WAL segment ${first}` : `WAL segments ${first} to ${last} (${b - a - 1})`,
        cause: lost
          ? `archived on ${lost.archivedAt} by ${lost.host}, but the object is no longer in the repository (removed or lost)`
          : 'never archived: archive_command failed or archiving was off while PostgreSQL recycled them',
      };
      gaps.push(gap);
      lineRuns.push({ start, end: i, endedBy: gap });
      start = i + 1;
    }
    runs.set(id, lineRuns);
    lines.push(lineOf(id, files));
  }
  return { lines, gaps, runs };
}

function walStart(snapshot: BaseSnapshot, analysis: LineAnalysis): { line: LogLine; index: number } | string {
  const startLsn = snapshot.engineMetadata.startLsn;
  const timeline = Number(snapshot.engineMetadata.timeline ?? 1);
  if (typeof startLsn !== 'string') return 'the snapshot did not record its WAL start point';
  const id = `timeline ${timeline}`;
  const line = analysis.lines.find((l) => l.id === id);
  if (!line || line.files.length === 0) return `no WAL of timeline ${timeline} is archived`;
  const size = line.files[0]?.wal?.segmentSize ?? DEFAULT_WAL_SEGMENT_SIZE;
  const startSegment = Math.floor(parseLsn(startLsn) / size);
  const index = line.files.findIndex((f) => f.wal?.segment === startSegment);
  if (index < 0) return `its first WAL segment ${walName(timeline, startSegment, size)} is not archived`;
  return { line, index };
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

// ---------------------------------------------------------------- binlogs

type GtidState = Map<string, number>;

/** "0-1-100,1-2-5" → domain-server → seq. */
export function parseGtidState(text: string): GtidState {
  const state: GtidState = new Map();
  for (const part of text
    .split(',')
    .map((p) => p.trim())
    .filter(Boolean)) {
    const m = /^(\d+)-(\d+)-(\d+)$/.exec(part);
    if (!m)
      throw new CairnError('Cairn.Usage', `invalid GTID ${JSON.stringify(part)}`, {
        hint: 'a MariaDB GTID is domain-server-sequence, e.g. 0-1-1234',
      });
    state.set(`${m[1]}-${m[2]}`, Number(m[3]));
  }
  return state;
}

function sameState(a: GtidState, b: GtidState): boolean {
  if (a.size !== b.size) return false;
  for (const [k, v] of a) if (b.get(k) !== v) return false;
  return true;
}

/** a is behind b: no entry of a is ahead of b's, and b has something a lacks. */
function behind(a: GtidState, b: GtidState): boolean {
  let less = false;
  for (const [k, v] of a) {
    const w = b.get(k);
    if (w === undefined || w < v) return false;
    if (w > v) less = true;
  }
  for (const k of b.keys()) if (!a.has(k)) less = true;
  return less;
}

function createdAt(record: LogFileRecord): string {
  return record.firstEventTime ?? record.archivedAt;
}

function binlogLines(archive: ArchivedLog): LineAnalysis {
  const files = archive.records
    .filter((r) => r.kind === 'binlog' && r.binlog)
    .sort((a, b) => createdAt(a).localeCompare(createdAt(b)) || a.key.localeCompare(b.key));
  const successor = new Map<LogFileRecord, LogFileRecord>();
  const hasPredecessor = new Set<LogFileRecord>();
  // Each file's predecessor is the newest closed file that rotated to its name and ended in its
  // starting GTID state, at the moment it was created (within the clock's second): a server that
  // numbers again and repeats GTIDs (a plain restore) must not continue an older incarnation's
  // line, nor have a successor taken by it.
  for (const b of files) {
    const start = parseGtidState(b.binlog?.startGtid ?? '');
    const a = files
      .filter(
        (f) =>
          f !== b &&
          !successor.has(f) &&
          f.binlog?.closed === true &&
          createdAt(f) <= createdAt(b) &&
          (f.binlog.nextFile === undefined || f.binlog.nextFile === b.name) &&
          (f.binlog.closedAt === undefined || Math.abs(Date.parse(f.binlog.closedAt) - Date.parse(createdAt(b))) <= 2000) &&
          sameState(parseGtidState(f.binlog.endGtid), start),
      )
      .sort((x, y) => createdAt(y).localeCompare(createdAt(x)))[0];
    if (a) {
      successor.set(a, b);
      hasPredecessor.add(b);
    }
  }
  const lines: LogLine[] = [];
  const runs: LineAnalysis['runs'] = new Map();
  for (const head of files.filter((f) => !hasPredecessor.has(f))) {
    const chain: LogFileRecord[] = [head];
    for (let f = successor.get(head); f; f = successor.get(f)) chain.push(f);
    const id = `binlog line from ${head.name} (${createdAt(head)})`;
    lines.push(lineOf(id, chain));
  }
  // A line that starts ahead of where an earlier line ended is the same history with files missing between them.
  const gaps: LogGap[] = [];
  const gapAfter = new Map<string, LogGap>();
  for (const line of lines) {
    const head = line.files[0] as LogFileRecord;
    const start = parseGtidState(head.binlog?.startGtid ?? '');
    if (start.size === 0) continue;
    const before = lines
      .filter((l) => l !== line && !gapAfter.has(l.id))
      .map((l) => l.files.at(-1) as LogFileRecord)
      .filter((tail) => createdAt(tail) <= createdAt(head) && behind(parseGtidState(tail.binlog?.endGtid ?? ''), start))
      .sort((a, b) => createdAt(b).localeCompare(createdAt(a)))[0];
    if (!before) continue;
    const previousLine = lines.find((l) => l.files.at(-1) === before) as LogLine;
    const lost = archive.missing.filter((m) => m.kind === 'binlog' && createdAt(m) >= createdAt(before) && createdAt(m) <= createdAt(head));
    const gap: LogGap = {
      line: previousLine.id,
      after: before.name,
      before: head.name,
      from: before.lastEventTime,
      to: head.firstEventTime,
      missing: `binlog events after GTID ${before.binlog?.endGtid || '(none)'} up to ${head.binlog?.startGtid ?? ''}${lost.length ? ` (${lost.map((m) => m.name).join(', ')})` : before.binlog?.nextFile ? ` (${before.binlog.nextFile} onwards)` : ''}`,
      cause: lost.length
        ? `archived on ${lost[0]?.archivedAt ?? '?'} by ${lost[0]?.host ?? '?'}, but the object is no longer in the repository (removed or lost)`
        : 'never archived: binlog-push was not running, or the server purged the files before they were pushed',
    };
    gaps.push(gap);
    gapAfter.set(previousLine.id, gap);
  }
  for (const line of lines) runs.set(line.id, [{ start: 0, end: line.files.length - 1, endedBy: gapAfter.get(line.id) ?? 'end' }]);
  return { lines, gaps, runs };
}

function binlogStart(snapshot: BaseSnapshot, analysis: LineAnalysis): { line: LogLine; index: number; position: number } | string {
  const file = snapshot.engineMetadata.binlogFile;
  const position = snapshot.engineMetadata.binlogPosition;
  if (typeof file !== 'string' || typeof position !== 'number') return 'the snapshot did not record a binlog position (is log_bin on?)';
  // The file the snapshot's position is in: that name, created before the snapshot, the newest such.
  let best: { line: LogLine; index: number } | undefined;
  for (const line of analysis.lines) {
    line.files.forEach((f, index) => {
      if (f.name !== file || createdAt(f) > snapshot.endTime || (f.binlog?.endPosition ?? 0) < position) return;
      if (!best || createdAt(best.line.files[best.index] as LogFileRecord) < createdAt(f)) best = { line, index };
    });
  }
  if (!best) return `its binlog ${file} is not archived yet (binlog-push archives a file once the server closes it)`;
  return { ...best, position };
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
  const fits = report.windows.filter((w) => windowReaches(w, target, report.engine)).sort((a, b) => b.from.localeCompare(a.from));
  const window = fits[0];
  if (!window) throw refusal(report, target, what);
  const files = filesUpTo(window, target);
  return { stream: report.stream, window, target, files, bytes: files.reduce((n, f) => n + f.size, 0), describe: what };
}

function windowReaches(w: RecoveryWindow, target: RecoveryTarget, engine: 'postgres' | 'mariadb'): boolean {
  if (target.time) {
    const t = new Date(target.time).toISOString();
    return w.from <= t && t <= w.to;
  }
  if (engine === 'postgres' && target.lsn) {
    const lsn = parseLsn(target.lsn);
    const size = w.files[0]?.wal?.segmentSize ?? DEFAULT_WAL_SEGMENT_SIZE;
    const stop = w.snapshot.engineMetadata.stopLsn;
    const lastSegment = w.files.at(-1)?.wal?.segment ?? -1;
    return (typeof stop === 'string' ? parseLsn(stop) : 0) <= lsn && lsn < (lastSegment + 1) * size;
  }
  if (engine === 'postgres' && target.xid) {
    const xid = Number(target.xid);
    return w.files.some((f) => f.wal?.segment !== undefined && xidRange(f).some(([lo, hi]) => lo <= xid && xid <= hi));
  }
  if (engine === 'mariadb' && target.gtid) {
    const want = parseGtidState(target.gtid);
    const gtid = w.snapshot.engineMetadata.gtid;
    const base = parseGtidState(typeof gtid === 'string' ? gtid : '');
    const end = parseGtidState(w.files.at(-1)?.binlog?.endGtid ?? '');
    for (const [k, seq] of want) {
      if ((base.get(k) ?? 0) >= seq || (end.get(k) ?? -1) < seq) return false;
    }
    return want.size > 0;
  }
  if (engine === 'mariadb' && target.position) {
    const [name, pos] = splitPosition(target.position);
    return w.files.some((f, i) => f.name === name && pos <= (f.binlog?.endPosition ?? 0) && (i > 0 || pos >= (w.startPosition ?? 0)));
  }
  throw new CairnError('Cairn.Usage', `${describeTarget(target)} is not a recovery target for ${engine}`, {
    hint: engine === 'postgres' ? 'use --to-time, --to-lsn or --to-xid' : 'use --to-time, --to-gtid or --to-position',
  });
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
      : `it is before the oldest recoverable window`;
  return new CairnError('Cairn.NotFound', `cannot recover ${report.stream} to ${what}: ${reason}`, {
    hint: nearest ? `the nearest recoverable times are ${nearest}` : `recoverable windows: ${windowList(report)}`,
  });
}

function windowList(report: ChainReport): string {
  return report.windows.map((w) => `${w.from} to ${w.to} from snapshot ${shortId(w.snapshot.id)}`).join('; ') || 'none';
}
