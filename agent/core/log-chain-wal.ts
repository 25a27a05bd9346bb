import { CairnError } from './errors.ts';
import type { ArchivedLog, LogFileRecord } from './log-archive.ts';
import { firstEventFrom, lastEventUpTo, lineOf, type BaseSnapshot, type LineAnalysis, type LogGap, type LogLine } from './log-lines.ts';

/**
 * PostgreSQL WAL chains: files follow each other by timeline and segment
 * number; a base backup starts at the segment of its start LSN. Pure.
 */

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

export function walLines(archive: ArchivedLog): LineAnalysis {
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

export function walStart(snapshot: BaseSnapshot, analysis: LineAnalysis): { line: LogLine; index: number } | string {
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
