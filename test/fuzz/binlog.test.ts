import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { crc32 } from 'node:zlib';
import fc from 'fast-check';
import { parseBinlog } from '../../agent/pitr/binlog-parser.ts';
import { anyBytes, assertClean, decodes, fuzz, mutatedBytes } from './fuzz.ts';

/**
 * MariaDB binlogs (agent/pitr/binlog-parser.ts parseBinlog, run on every file
 * binlog-push archives and on every file a replay reads): it returns positions
 * inside the file or throws Cairn.InvalidInput (not a MariaDB v4 binlog) or
 * Cairn.Damaged. Valid binlogs are written here event by event (the v4 format:
 * 19-byte header, Format_description, Gtid_list, GTID, Query, Xid, Rotate), with
 * and without CRC32 checksums, then mutated.
 */
const MAGIC = Buffer.from([0xfe, 0x62, 0x69, 0x6e]);

interface EventSpec {
  type: number;
  body: Buffer;
}

function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n >>> 0, 0);
  return b;
}
function u64(n: number): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(BigInt(n), 0);
  return b;
}

function binlog(events: EventSpec[], checksum: boolean, serverId = 7): Buffer {
  const parts: Buffer[] = [MAGIC];
  let offset = MAGIC.length;
  const time = 1_700_000_000;
  for (const [i, { type, body }] of events.entries()) {
    const fde = type === 15;
    const withCrc = checksum || fde; // an FDE always ends with the algorithm byte and 4 checksum bytes
    const fdeTail = fde ? Buffer.from([checksum ? 1 : 0]) : Buffer.alloc(0);
    const length = 19 + body.length + fdeTail.length + (withCrc ? 4 : 0);
    const header = Buffer.alloc(19);
    header.writeUInt32LE(time + i, 0);
    header.writeUInt8(type, 4);
    header.writeUInt32LE(serverId, 5);
    header.writeUInt32LE(length, 9);
    header.writeUInt32LE(offset + length, 13);
    const event = Buffer.concat([header, body, fdeTail]);
    parts.push(event, withCrc ? u32(crc32(event)) : Buffer.alloc(0));
    offset += length;
  }
  return Buffer.concat(parts);
}

const fdeBody = Buffer.concat([
  Buffer.from([4, 0]),
  Buffer.from('10.11.6-MariaDB-log'.padEnd(50, '\0'), 'latin1'),
  u32(0),
  Buffer.from([19]),
  Buffer.alloc(40, 8),
]);
const gtidList = (gtids: Array<[number, number, number]>): EventSpec => ({
  type: 163,
  body: Buffer.concat([u32(gtids.length), ...gtids.map(([d, s, q]) => Buffer.concat([u32(d), u32(s), u64(q)]))]),
});
const gtid = (seq: number, domain: number, standalone: boolean): EventSpec => ({
  type: 162,
  body: Buffer.concat([u64(seq), u32(domain), Buffer.from([standalone ? 1 : 0]), Buffer.alloc(6)]),
});
const query = (text: string, db = 'shop'): EventSpec => ({
  type: 2,
  body: Buffer.concat([
    u32(1),
    u32(0),
    Buffer.from([db.length]),
    Buffer.alloc(2),
    Buffer.from([0, 0]),
    Buffer.from(db, 'latin1'),
    Buffer.from([0]),
    Buffer.from(text, 'latin1'),
  ]),
});
const xid = (n: number): EventSpec => ({ type: 16, body: u64(n) });
const rotate = (next: string): EventSpec => ({ type: 4, body: Buffer.concat([u64(4), Buffer.from(next, 'latin1')]) });
const tableMapOrRows = (n: number): EventSpec => ({
  type: fc.sample(fc.constantFrom(19, 23, 24, 25), { numRuns: 1, seed: n })[0] as number,
  body: Buffer.alloc(n % 40, n),
});

const transaction = fc
  .tuple(fc.nat(1000), fc.nat(3), fc.boolean(), fc.nat(3))
  .map(([seq, domain, standalone, rows]): EventSpec[] =>
    standalone
      ? [gtid(seq + 1, domain, true), query('CREATE TABLE t (id INT)')]
      : [
          gtid(seq + 1, domain, false),
          query('BEGIN'),
          ...Array.from({ length: rows }, (_, i) => tableMapOrRows(i + seq)),
          rows % 2 ? xid(seq) : query('COMMIT'),
        ],
  );

const validBinlog = fc
  .tuple(
    fc.boolean(),
    fc.array(fc.tuple(fc.nat(3), fc.nat(9), fc.nat(1000)), { maxLength: 3 }),
    fc.array(transaction, { maxLength: 4 }),
    fc.boolean(),
  )
  .map(([checksum, start, txs, closed]) =>
    binlog([{ type: 15, body: fdeBody }, gtidList(start), ...txs.flat(), ...(closed ? [rotate('mariadb-bin.000002')] : [])], checksum),
  );

/** Correctly framed events (lengths, end positions and checksums right) of any type around junk bodies: reaches every event decoder. */
const framedJunk = fc
  .tuple(
    fc.boolean(),
    fc.array(
      fc.record({
        type: fc.oneof(fc.constantFrom(2, 3, 4, 15, 16, 38, 161, 162, 163, 164), fc.integer({ min: 0, max: 255 })),
        body: fc.uint8Array({ maxLength: 40 }).map((a) => Buffer.from(a)),
      }),
      { maxLength: 6 },
    ),
  )
  .map(([checksum, events]) => binlog([{ type: 15, body: fdeBody }, ...events], checksum));

describe('fuzz: binlog events', () => {
  it('the valid binlogs written here parse', () => {
    for (const data of fc.sample(validBinlog, { numRuns: 50, seed: 2 })) {
      const info = parseBinlog(data, 'sample');
      assert.equal(info.truncated, false);
      assert.equal(info.endPosition, data.length);
    }
  });

  // Found by the fuzzer (seeds 1820106840, 663398780): events whose bodies are shorter than their fixed part.
  it('events too short for their fixed part fail as Cairn.Damaged', () => {
    const fde = { type: 15, body: fdeBody };
    for (const checksum of [false, true]) {
      const cases = [
        [fde, { type: 162, body: Buffer.alloc(0) }],
        [fde, { type: 162, body: Buffer.alloc(12) }],
        [fde, { type: 163, body: Buffer.alloc(3) }],
        [fde, gtid(1, 0, false), { type: 2, body: Buffer.alloc(12) }],
        [fde, { type: 4, body: Buffer.alloc(7) }],
        [{ type: 15, body: fdeBody.subarray(0, 40) }],
      ];
      for (const events of cases) {
        assert.throws(
          () => parseBinlog(binlog(events, checksum), 'short'),
          (error: unknown) => {
            assertClean(error, ['Cairn.Damaged']);
            return true;
          },
        );
      }
    }
  });

  it('arbitrary bytes and mutations of valid binlogs parse to positions inside the file or fail as Cairn.InvalidInput / Cairn.Damaged', () => {
    const input = fc.oneof(
      anyBytes(400),
      anyBytes(400).map((b) => Buffer.concat([MAGIC, b])),
      { weight: 5, arbitrary: mutatedBytes(validBinlog, 5) },
      { weight: 3, arbitrary: framedJunk },
    );
    fuzz(
      'binlog/parse',
      input,
      (data) => {
        decodes(
          () => parseBinlog(data, 'fuzz'),
          ['Cairn.InvalidInput', 'Cairn.Damaged'],
          (info) => {
            assert.ok(info.endPosition <= data.length && info.startPosition <= info.endPosition, JSON.stringify(info));
            for (const tx of info.transactions) assert.ok(tx.position < tx.end && tx.end <= data.length, JSON.stringify(tx));
          },
        );
      },
      2000,
    );
  });
});
