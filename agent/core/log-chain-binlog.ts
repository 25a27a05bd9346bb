import { CairnError } from './errors.ts';
import type { ArchivedLog, LogFileRecord } from './log-archive.ts';
import { lineOf, type BaseSnapshot, type LineAnalysis, type LogGap, type LogLine } from './log-lines.ts';

/**
 * MariaDB binlog chains: a file follows its predecessor when its GTID state at
 * start equals the predecessor's at end and the predecessor's ROTATE names it
 * (or, closed by a clean shutdown's STOP, it is the next number);
 * a base backup starts at its recorded binlog file and position. Pure.
 */

export type GtidState = Map<string, number>;

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

export function sameState(a: GtidState, b: GtidState): boolean {
  if (a.size !== b.size) return false;
  for (const [k, v] of a) if (b.get(k) !== v) return false;
  return true;
}

/** a is behind b: no entry of a is ahead of b's, and b has something a lacks. */
export function behind(a: GtidState, b: GtidState): boolean {
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

/** `mariadb-bin.000007` → `mariadb-bin.000008` (at least six digits, as the server numbers them). */
function nextBinlogName(name: string): string | undefined {
  const m = /^(.*\.)(\d+)$/.exec(name);
  if (!m) return undefined;
  const digits = m[2] as string;
  return `${m[1]}${String(Number(digits) + 1).padStart(digits.length, '0')}`;
}

/**
 * A file closed by a STOP event (a clean shutdown: no ROTATE names a next file) continues in the
 * file the server opens when it starts again, whenever that is: the next number, from the same
 * state. The 2-second rule that ties a rotation to the file it opens cannot hold across a restart,
 * and without this every restart began a new line that no base backup covered, until the next backup.
 * The same server id, and nothing else that could be the continuation (below): a restart, not a copy.
 */
function closedByStop(f: LogFileRecord, b: LogFileRecord, files: readonly LogFileRecord[]): boolean {
  if (f.binlog?.nextFile !== undefined || nextBinlogName(f.name) !== b.name || f.binlog?.serverId !== b.binlog?.serverId) return false;
  const start = b.binlog?.startGtid ?? '';
  const stopped = f.binlog?.closedAt ?? createdAt(f);
  // Only when nothing else can be the continuation: another file of that name from the same state (a copy of the
  // stopped data directory started too), or any file written between the stop and b (another incarnation's: a
  // restored server whose own files went missing), and the join is refused, as a rotation's without its 2 seconds.
  return !files.some(
    (o) =>
      o !== f &&
      o !== b &&
      ((o.name === b.name && (o.binlog?.startGtid ?? '') === start) || (createdAt(o) >= stopped && createdAt(o) <= createdAt(b))),
  );
}

export function binlogLines(archive: ArchivedLog): LineAnalysis {
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
          (closedByStop(f, b, files) ||
            f.binlog.closedAt === undefined ||
            Math.abs(Date.parse(f.binlog.closedAt) - Date.parse(createdAt(b))) <= 2000) &&
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

export function binlogStart(snapshot: BaseSnapshot, analysis: LineAnalysis): { line: LogLine; index: number; position: number } | string {
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
