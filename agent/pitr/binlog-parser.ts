import { crc32 } from 'node:zlib';
import { CairnError, DamagedError } from '../core/errors.ts';
import { parseGtidState } from '../core/log-chain.ts';

/**
 * Reads a MariaDB binary log file (format v4) far enough to archive it and to
 * replay it to a point: who wrote it, the GTID state at its start and end, where
 * each transaction starts and when it committed, and whether the server has
 * closed it. Event bodies are not decoded beyond that; `mariadb-binlog` does
 * the replay.
 *
 * MariaDB GTIDs only: a MySQL binlog (GTID events 33/34/35) is refused, as
 * are encrypted binlogs (their events cannot be read without the server's key)
 * and the pre-v4 formats of MySQL 3.23–4.x.
 */

const MAGIC = Buffer.from([0xfe, 0x62, 0x69, 0x6e]);
const HEADER = 19;

/** Event types this reader looks at (MariaDB's log_event.h numbering). */
const EVENT = {
  start_v3: 1,
  query: 2,
  stop: 3,
  rotate: 4,
  xid: 16,
  formatDescription: 15,
  mysqlGtid: 33,
  mysqlAnonymousGtid: 34,
  mysqlPreviousGtids: 35,
  xaPrepare: 38,
  binlogCheckpoint: 161,
  gtid: 162,
  gtidList: 163,
  startEncryption: 164,
} as const;

/**
 * The fixed part of each event body this reader decodes (after the header, before any checksum).
 * Format_description: binlog version u16, server version 50 bytes, create time u32, header length u8,
 * then (after the post-header lengths) the checksum algorithm u8 and a 4-byte checksum.
 * Gtid_list: count u32. GTID: seq u64, domain u32, flags u8. Query: thread id u32, exec time u32,
 * db length u8, error code u16, status variables length u16. Rotate: position u64.
 */
const MIN_BODY = new Map<number, number>([
  [EVENT.formatDescription, 2 + 50 + 4 + 1 + 1 + 4],
  [EVENT.gtidList, 4],
  [EVENT.gtid, 8 + 4 + 1],
  [EVENT.query, 4 + 4 + 1 + 2 + 2],
  [EVENT.rotate, 8],
]);

/** Events a server writes at the top of every file, before any transaction. */
const HEADER_EVENTS = new Set<number>([EVENT.formatDescription, EVENT.gtidList, EVENT.binlogCheckpoint]);
/** Events that are never part of a transaction group: they end the one before them. */
const CONTROL_EVENTS = new Set<number>([EVENT.formatDescription, EVENT.gtidList, EVENT.binlogCheckpoint, EVENT.rotate, EVENT.stop]);

/** GTID event flags2 bits. */
const FL_STANDALONE = 1;

export interface BinlogTransaction {
  /** domain-server-sequence */
  gtid: string;
  domain: number;
  serverId: number;
  seq: number;
  /** Offset of its GTID event: where a replay that excludes it stops. */
  position: number;
  /** Offset just after its last event. */
  end: number;
  /** Commit time: the newest event time in the group (the binlog keeps whole seconds). */
  time: string;
  /** Its commit (XID, COMMIT/ROLLBACK query, XA PREPARE) is in the file; false only for a group cut off at the end. */
  complete: boolean;
}

export interface BinlogInfo {
  serverId: number;
  serverVersion: string;
  /** The Format_description event's time: when the server created the file. */
  createdAt: string;
  checksum: boolean;
  /** GTID state ("domain-server-seq,…", one entry per domain and server, as in the server's Gtid_list) at the start and after the last transaction. */
  startGtid: string;
  endGtid: string;
  /** Offset after the header events (Format_description, Gtid_list, Binlog_checkpoint): where the first transaction may start. */
  startPosition: number;
  /** Offset after the last complete event. */
  endPosition: number;
  /** The file the server rotated to, when a ROTATE ends the file. */
  nextFile?: string;
  /** Ends with a ROTATE or STOP event: the server will not write to it again. */
  closed: boolean;
  /** The time of that ROTATE or STOP event: the next file of the same server is created then. */
  closedAt?: string;
  /** A partial event at the end was left out (a file the server is still writing, or cut short). */
  truncated: boolean;
  transactions: BinlogTransaction[];
  firstEventTime: string | null;
  lastEventTime: string | null;
}

/** The same form as every other time in the repository (Date.toISOString), which the log chain compares as strings. */
function iso(seconds: number): string {
  return new Date(seconds * 1000).toISOString();
}

function u64(data: Buffer, offset: number): number {
  const value = data.readBigUInt64LE(offset);
  if (value > BigInt(Number.MAX_SAFE_INTEGER)) throw new DamagedError(`a 64-bit value at offset ${offset} is out of range (${value})`);
  return Number(value);
}

type GtidState = Map<string, { domain: number; server: number; seq: number }>;

/**
 * Domains in order; within a domain the server that wrote last comes last,
 * as in the server's own Gtid_list: that order is what tells a server given
 * this state (SET GLOBAL gtid_binlog_state) which GTID of a domain is newest.
 */
export function formatGtidState(state: GtidState): string {
  return [...state.values()]
    .sort((a, b) => a.domain - b.domain)
    .map((g) => `${g.domain}-${g.server}-${g.seq}`)
    .join(',');
}

export function stateOf(text: string): GtidState {
  const state: GtidState = new Map();
  for (const [key, seq] of parseGtidState(text)) {
    const [domain, server] = key.split('-').map(Number) as [number, number];
    state.set(key, { domain, server, seq });
  }
  return state;
}

export function advance(state: GtidState, tx: { domain: number; serverId: number; seq: number }): void {
  state.delete(`${tx.domain}-${tx.serverId}`);
  state.set(`${tx.domain}-${tx.serverId}`, { domain: tx.domain, server: tx.serverId, seq: tx.seq });
}

/**
 * Parses a whole binlog file. `name` is only for messages. A partial last event
 * (the server is still writing the file) is left out and reported as
 * `truncated`; anything that is not a v4 MariaDB binlog is refused.
 */
export function parseBinlog(data: Buffer, name = 'the file'): BinlogInfo {
  if (data.length < MAGIC.length || !data.subarray(0, 4).equals(MAGIC)) {
    throw new CairnError('Cairn.InvalidInput', `${name} is not a MariaDB binary log (it does not start with the binlog magic bytes)`, {
      hint: "give a file from the server's log_bin directory or fetched with mariadb-binlog --raw",
    });
  }
  const damaged = (offset: number, what: string): DamagedError =>
    new DamagedError(`${name} is damaged at offset ${offset}: ${what}`, {
      hint: "fetch the file from the server again (mariadb-binlog --read-from-remote-server --raw); if the server's copy is damaged too, this part of the log cannot be replayed",
    });
  let offset = 4;
  let checksum = false;
  let fde: { serverId: number; version: string; time: number } | undefined;
  let startGtid: GtidState | undefined;
  let startPosition: number | undefined;
  let state: GtidState = new Map();
  let nextFile: string | undefined;
  let closed = false;
  let closedAt: number | undefined;
  let truncated = false;
  let open: (BinlogTransaction & { standalone: boolean; events: number; newest: number }) | undefined;
  const transactions: BinlogTransaction[] = [];
  const finish = (): void => {
    if (!open) return;
    const { gtid, domain, serverId, seq, position, end, complete, newest } = open;
    transactions.push({ gtid, domain, serverId, seq, position, end, time: iso(newest), complete });
    open = undefined;
  };

  while (offset < data.length) {
    if (data.length - offset < HEADER) {
      truncated = true;
      break;
    }
    const time = data.readUInt32LE(offset);
    const type = data.readUInt8(offset + 4);
    const serverId = data.readUInt32LE(offset + 5);
    const length = data.readUInt32LE(offset + 9);
    const next = data.readUInt32LE(offset + 13);
    if (length < HEADER) throw damaged(offset, `an event claims ${length} bytes, less than its header`);
    if (data.length - offset < length) {
      truncated = true;
      break;
    }
    // log_pos is the event's end in a binlog file (0 only in relay logs and some artificial events).
    if (next !== 0 && next !== offset + length && offset + length <= 0xffffffff)
      throw damaged(offset, `an event of ${length} bytes says it ends at ${next}`);
    if (!fde && type !== EVENT.formatDescription) {
      if (type === EVENT.start_v3)
        throw new CairnError('Cairn.InvalidInput', `${name} is a binlog of format v1/v3 (MySQL before 5.0): not supported`);
      throw damaged(offset, `the first event is of type ${type}, not a Format_description event`);
    }
    const crc = checksum && type !== EVENT.formatDescription ? 4 : 0;
    if (length < HEADER + crc) throw damaged(offset, `an event of ${length} bytes is too short for its header and checksum`);
    if (crc) verifyCrc(data, offset, length, damaged);
    const bodyEnd = offset + length - crc;
    const body = offset + HEADER;
    // Every field read below lies inside the event: a body shorter than its fixed part is damage, not a reason to read past it.
    const minimum = MIN_BODY.get(type) ?? 0;
    if (bodyEnd - body < minimum)
      throw damaged(
        offset,
        `an event of type ${type} has a body of ${bodyEnd - body} bytes, shorter than its fixed part (${minimum} bytes)`,
      );

    switch (type) {
      case EVENT.formatDescription: {
        const binlogVersion = data.readUInt16LE(body);
        if (binlogVersion !== 4)
          throw new CairnError(
            'Cairn.InvalidInput',
            `${name} has binlog format version ${binlogVersion}; only version 4 (MySQL 5.0+, every MariaDB) is supported`,
          );
        const version = data.toString('latin1', body + 2, body + 52).replace(/\0+$/, '');
        // Servers that know checksums end the event with the algorithm byte and a 4-byte checksum (present even when the algorithm is "none").
        const algorithm = data.readUInt8(offset + length - 5);
        if (algorithm > 1 && algorithm !== 255)
          throw new CairnError('Cairn.InvalidInput', `${name} uses binlog checksum algorithm ${algorithm}; only CRC32 and none are known`);
        if (algorithm === 1) verifyCrc(data, offset, length, damaged);
        if (!fde) {
          checksum = algorithm === 1;
          fde = { serverId, version, time };
        }
        break;
      }
      case EVENT.gtidList: {
        const count = data.readUInt32LE(body) & 0x0fffffff;
        if (body + 4 + count * 16 > bodyEnd) throw damaged(offset, `a Gtid_list event lists ${count} GTIDs but is too short for them`);
        if (startGtid) break;
        startGtid = new Map();
        for (let i = 0; i < count; i++) {
          const at = body + 4 + i * 16;
          const entry = { domain: data.readUInt32LE(at), server: data.readUInt32LE(at + 4), seq: u64(data, at + 8) };
          startGtid.set(`${entry.domain}-${entry.server}`, entry);
        }
        state = new Map(startGtid);
        break;
      }
      case EVENT.gtid: {
        finish();
        const seq = u64(data, body);
        const domain = data.readUInt32LE(body + 8);
        const flags = data.readUInt8(body + 12);
        open = {
          gtid: `${domain}-${serverId}-${seq}`,
          domain,
          serverId,
          seq,
          position: offset,
          end: offset + length,
          time: '',
          complete: false,
          standalone: (flags & FL_STANDALONE) !== 0,
          events: 0,
          newest: time,
        };
        advance(state, open);
        break;
      }
      case EVENT.rotate:
        // An artificial ROTATE (flag 0x20) comes from the dump protocol, not from the file: it ends nothing.
        if ((data.readUInt16LE(offset + 17) & 0x20) === 0) {
          nextFile = data.toString('latin1', body + 8, bodyEnd);
          closed = true;
          closedAt = time;
        }
        break;
      case EVENT.stop:
        closed = true;
        closedAt = time;
        break;
      case EVENT.startEncryption:
        throw new CairnError(
          'Cairn.InvalidInput',
          `${name} is an encrypted binlog (encrypt_binlog=ON): its events cannot be read without the server's key`,
          {
            hint: 'archive encrypted binlogs as plain files, or turn encrypt_binlog off; Cairn encrypts what it archives in any case',
          },
        );
      case EVENT.mysqlGtid:
      case EVENT.mysqlAnonymousGtid:
      case EVENT.mysqlPreviousGtids:
        throw new CairnError(
          'Cairn.InvalidInput',
          `${name} is a MySQL binlog (MySQL GTID events): Cairn's binlog archive reads MariaDB binlogs only`,
          {
            hint: 'for MySQL, restore a snapshot without point-in-time recovery',
          },
        );
      default:
        break;
    }
    if (startPosition === undefined && !HEADER_EVENTS.has(type)) startPosition = offset;
    if (open && type !== EVENT.gtid) {
      if (CONTROL_EVENTS.has(type)) finish();
      else {
        open.events++;
        open.end = offset + length;
        open.newest = Math.max(open.newest, time);
        const commit = type === EVENT.xid || type === EVENT.xaPrepare || (type === EVENT.query && endsGroup(data, body, bodyEnd));
        if (commit || (open.standalone && open.events === 1)) {
          open.complete = true;
          finish();
        }
      }
    }
    offset += length;
    if (closed) break;
  }
  finish();
  if (!fde) throw damaged(4, 'the file ends before its Format_description event');
  const times = transactions.map((t) => t.time).sort();
  return {
    serverId: fde.serverId,
    serverVersion: fde.version,
    createdAt: iso(fde.time),
    checksum,
    startGtid: startGtid ? formatGtidState(startGtid) : '',
    endGtid: formatGtidState(state),
    startPosition: startPosition ?? offset,
    endPosition: offset,
    ...(nextFile !== undefined ? { nextFile } : {}),
    closed,
    ...(closedAt !== undefined ? { closedAt: iso(closedAt) } : {}),
    truncated: truncated || (!closed && offset < data.length),
    transactions,
    firstEventTime: times[0] ?? null,
    lastEventTime: times.at(-1) ?? null,
  };
}

function verifyCrc(data: Buffer, offset: number, length: number, damaged: (offset: number, what: string) => DamagedError): void {
  const stored = data.readUInt32LE(offset + length - 4);
  // The in-use flag (0x1) of a Format_description event is set and cleared in place, after the checksum was computed with it clear.
  const event = data.subarray(offset, offset + length - 4);
  let computed = crc32(event);
  if (computed !== stored && event.readUInt8(4) === EVENT.formatDescription && (event.readUInt16LE(17) & 1) !== 0) {
    const copy = Buffer.from(event);
    copy.writeUInt16LE(copy.readUInt16LE(17) & ~1, 17);
    computed = crc32(copy);
  }
  if (computed !== stored)
    throw damaged(offset, `event checksum mismatch (stored ${stored.toString(16)}, computed ${computed.toString(16)})`);
}

/** A Query event that ends its group: COMMIT, ROLLBACK, or the XA statements that end a prepared group. */
function endsGroup(data: Buffer, body: number, bodyEnd: number): boolean {
  // Post-header: thread id u32, exec time u32, db length u8, error code u16, status variables length u16.
  const dbLength = data.readUInt8(body + 8);
  const statusLength = data.readUInt16LE(body + 11);
  const queryStart = body + 13 + statusLength + dbLength + 1;
  if (queryStart > bodyEnd) return false;
  const text = data
    .toString('latin1', queryStart, Math.min(bodyEnd, queryStart + 32))
    .trim()
    .toUpperCase();
  return (
    text === 'COMMIT' ||
    text.startsWith('ROLLBACK') ||
    text.startsWith('XA COMMIT') ||
    text.startsWith('XA ROLLBACK') ||
    text.startsWith('XA PREPARE')
  );
}

// ---------------------------------------------------------------- replay targets

export { findStop, gtidStateAt, type ReplayFile, type ReplayStop, type StopTarget } from './binlog-stop.ts';
