import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { CairnError } from '../../../agent/core/errors.ts';
import { findStop, gtidStateAt, parseBinlog, type BinlogInfo, type ReplayFile } from '../../../agent/pitr/binlog-parser.ts';
import { missingMariadb, startMariadb, type MariadbServer } from '../../helpers/mariadb.ts';

const skip =
  missingMariadb() ??
  (spawnSync('sh', ['-c', 'command -v mariadb-binlog']).status === 0 ? undefined : 'needs mariadb-binlog: apt-get install mariadb-client');

function binlogs(server: MariadbServer): Array<{ name: string; size: number }> {
  return server
    .sql('SHOW BINARY LOGS')
    .trim()
    .split('\n')
    .map((l) => l.split('\t'))
    .map(([name, size]) => ({ name: name as string, size: Number(size) }));
}

async function read(server: MariadbServer, name: string): Promise<Buffer> {
  return readFile(join(server.datadir, name));
}

/** GTIDs mariadb-binlog itself prints for a file read up to a stop position: the reference the parser is checked against. */
function gtidsByMariadbBinlog(path: string, args: string[] = []): string[] {
  const out = spawnSync('mariadb-binlog', ['--no-defaults', ...args, path], { encoding: 'utf8', maxBuffer: 1 << 26 });
  assert.equal(out.status, 0, out.stderr);
  return [...out.stdout.matchAll(/\tGTID (\d+-\d+-\d+)/g)].map((m) => m[1] as string);
}

function expectError(fn: () => unknown, code: string, pattern: RegExp): void {
  assert.throws(fn, (error: unknown) => {
    assert.ok(error instanceof CairnError, String(error));
    assert.equal(error.code, code);
    assert.match(error.message, pattern);
    return true;
  });
}

describe('binlog parser on binlogs written by a real MariaDB server (CRC32 checksums)', { skip }, () => {
  let server: MariadbServer;
  /** Times between the rounds of writes: [before round 2, before round 3]. */
  const between: string[] = [];
  let closed: ReplayFile[] = [];
  before(async () => {
    server = await startMariadb({ serverId: 42, logBin: 'pbin' });
    server.sql(
      'CREATE DATABASE p; CREATE TABLE p.t (id INT PRIMARY KEY, v VARCHAR(200)) ENGINE=InnoDB; CREATE TABLE p.m (id INT PRIMARY KEY) ENGINE=MyISAM',
    );
    server.sql('FLUSH BINARY LOGS');
    for (let round = 1; round <= 3; round++) {
      server.sql(
        `INSERT INTO p.t VALUES (${round * 10 + 1}, 'a'); BEGIN; INSERT INTO p.t VALUES (${round * 10 + 2}, 'b'); INSERT INTO p.t VALUES (${round * 10 + 3}, 'c'); COMMIT; INSERT INTO p.m VALUES (${round})`,
      );
      if (round === 2) server.sql('FLUSH BINARY LOGS');
      if (round < 3) {
        await sleep(1100);
        between.push(new Date().toISOString());
        await sleep(1100);
      }
    }
    server.sql('FLUSH BINARY LOGS');
    const files = binlogs(server);
    closed = await Promise.all(
      files.slice(1, -1).map(async (f) => ({ name: f.name, info: parseBinlog(await read(server, f.name), f.name) })),
    );
  });
  after(async () => {
    await server?.stop();
  });

  it('reads who wrote each file, its GTID state at start and end, its transactions and how it was closed', async () => {
    const files = binlogs(server);
    const state = server.sql('SELECT @@gtid_binlog_state').trim();
    assert.equal(closed.length, 2, `the workload spans two closed files (${files.map((f) => f.name).join(', ')})`);
    for (const [i, { name, info }] of closed.entries()) {
      const size = files.find((f) => f.name === name)?.size;
      assert.equal(info.serverId, 42);
      assert.equal(info.checksum, true);
      assert.match(info.serverVersion, /MariaDB/);
      assert.equal(info.closed, true);
      assert.equal(info.truncated, false);
      assert.equal(info.endPosition, size, 'a closed file is read to its end');
      assert.equal(info.nextFile, files[files.findIndex((f) => f.name === name) + 1]?.name, 'ROTATE names the next file');
      assert.ok(Math.abs(Date.parse(info.createdAt) - Date.now()) < 60_000, info.createdAt);
      assert.ok(info.startPosition > 4 && info.startPosition <= (info.transactions[0]?.position ?? Infinity));
      assert.deepEqual(
        info.transactions.map((t) => t.gtid),
        gtidsByMariadbBinlog(join(server.datadir, name)),
        'the same transactions mariadb-binlog lists',
      );
      assert.ok(info.transactions.every((t) => t.complete && t.end > t.position && t.serverId === 42));
      if (i > 0) assert.equal(info.startGtid, closed[i - 1]?.info.endGtid, 'a file starts where its predecessor ended');
    }
    // Round 1 and 2 in the first file, round 3 in the second: three transactions each.
    assert.deepEqual(
      closed.map((f) => f.info.transactions.length),
      [6, 3],
    );
    assert.equal(closed[1]?.info.endGtid, state, "the end state is the server's binlog state");
    assert.equal(closed[0]?.info.firstEventTime, closed[0]?.info.transactions[0]?.time);
    assert.ok((closed[0]?.info.lastEventTime ?? '') > (closed[0]?.info.firstEventTime ?? ''), 'two rounds, seconds apart');
  });

  it('finds where a replay stops: after a time, at a GTID, at FILE:POS, and the GTID state there', () => {
    const [first, second] = closed as [ReplayFile, ReplayFile];
    const start = first.info.transactions[0]?.position as number;
    const atTime = findStop(closed, start, { time: between[0] as string });
    assert.deepEqual(
      [atTime.fileIndex, atTime.position, atTime.transactions],
      [0, first.info.transactions[3]?.position, 3],
      'round 2 starts after the first time',
    );
    assert.equal(atTime.endGtid, `0-42-${first.info.transactions[2]?.seq}`, 'the state after round 1');
    assert.equal(gtidStateAt(first.info, 0), first.info.startGtid);
    // mariadb-binlog stopping there prints exactly round 1.
    assert.deepEqual(
      gtidsByMariadbBinlog(join(server.datadir, first.name), [`--stop-position=${atTime.position}`]),
      first.info.transactions.slice(0, 3).map((t) => t.gtid),
    );

    const atSecondTime = findStop(closed, start, { time: between[1] as string });
    assert.deepEqual(
      [atSecondTime.fileIndex, atSecondTime.position, atSecondTime.transactions],
      [1, second.info.transactions[0]?.position, 6],
    );
    const past = findStop(closed, start, { time: new Date(Date.now() + 3600_000).toISOString() });
    assert.deepEqual(
      [past.fileIndex, past.position, past.transactions, past.endGtid],
      [1, second.info.endPosition, 9, second.info.endGtid],
    );

    const target = first.info.transactions[4] as BinlogInfo['transactions'][number];
    const atGtid = findStop(closed, start, { gtid: target.gtid });
    assert.deepEqual(
      [atGtid.fileIndex, atGtid.position, atGtid.transactions, atGtid.last?.gtid],
      [0, target.end, 5, target.gtid],
      'the target GTID is replayed, nothing after it',
    );
    // A position inside a transaction replays that transaction whole.
    const inside = findStop(closed, start, { file: first.name, position: target.position + 1 });
    assert.equal(inside.position, first.info.transactions[5]?.position);
    const exact = findStop(closed, start, { file: first.name, position: target.position });
    assert.equal(exact.position, target.position);
    // From the middle of the first file (the base snapshot's position), earlier transactions do not count.
    const fromMiddle = findStop(closed, target.position, { time: between[1] as string });
    assert.equal(fromMiddle.transactions, 2);

    expectError(
      () => findStop(closed, start, { gtid: `0-42-${(second.info.transactions.at(-1)?.seq ?? 0) + 5}` }),
      'Cairn.NotFound',
      /not in the archived binlogs/,
    );
    expectError(() => findStop(closed, start, { gtid: '0-42-3,1-42-4' }), 'Cairn.Usage', /one GTID/);
    expectError(() => findStop(closed, start, { file: 'pbin.999999', position: 4 }), 'Cairn.NotFound', /not among the files/);
  });

  it('reads the file the server is still writing, up to its last complete event, and survives a cut in the middle of an event', async () => {
    server.sql("INSERT INTO p.t VALUES (100, REPEAT('x', 150))");
    const active = binlogs(server).at(-1) as { name: string; size: number };
    const data = await read(server, active.name);
    const info = parseBinlog(data, active.name);
    assert.equal(info.closed, false);
    assert.equal(info.nextFile, undefined);
    assert.equal(info.transactions.length, 1);
    const tx = info.transactions[0] as BinlogInfo['transactions'][number];
    const cut = parseBinlog(data.subarray(0, tx.end - 10), active.name);
    assert.equal(cut.truncated, true);
    assert.equal(cut.closed, false);
    assert.ok(cut.endPosition < tx.end && cut.endPosition >= tx.position, `ends before the cut event (${cut.endPosition})`);
    assert.equal(cut.transactions[0]?.complete, false, 'the cut transaction is not complete');
    const inHeader = parseBinlog(data.subarray(0, tx.position + 5), active.name);
    assert.equal(inHeader.truncated, true);
    assert.equal(inHeader.endPosition, tx.position);
  });

  it('refuses what is not a MariaDB binlog, and damaged events', async () => {
    expectError(
      () => parseBinlog(Buffer.from('-- MariaDB dump 10.19\nCREATE TABLE t (id INT);\n'), 'dump.sql'),
      'Cairn.InvalidInput',
      /dump\.sql is not a MariaDB binary log/,
    );
    expectError(() => parseBinlog(Buffer.alloc(0), 'empty'), 'Cairn.InvalidInput', /not a MariaDB binary log/);
    const data = Buffer.from(await read(server, closed[0]?.name as string));
    const tx = closed[0]?.info.transactions[1] as BinlogInfo['transactions'][number];
    const flipped = Buffer.from(data);
    flipped[tx.position + 25] = (flipped[tx.position + 25] as number) ^ 0xff;
    expectError(
      () => parseBinlog(flipped, 'flipped'),
      'Cairn.Damaged',
      new RegExp(`flipped is damaged at offset ${tx.position}: event checksum mismatch`),
    );
    const lying = Buffer.from(data);
    lying.writeUInt32LE(7, tx.position + 9);
    expectError(() => parseBinlog(lying, 'lying'), 'Cairn.Damaged', /less than its header/);
  });
});

describe('binlog parser without event checksums (binlog_checksum=NONE)', { skip }, () => {
  let server: MariadbServer;
  before(async () => {
    server = await startMariadb({ extraArgs: ['--binlog-checksum=NONE'] });
    server.sql(
      'CREATE DATABASE q; CREATE TABLE q.t (id INT PRIMARY KEY) ENGINE=InnoDB; INSERT INTO q.t VALUES (1), (2); FLUSH BINARY LOGS',
    );
  });
  after(async () => {
    await server?.stop();
  });

  it('reads the file the same way, and refuses a MySQL GTID event naming MariaDB-only support', async () => {
    const name = binlogs(server).at(-2)?.name as string;
    const data = await read(server, name);
    const info = parseBinlog(data, name);
    assert.equal(info.checksum, false);
    assert.equal(info.closed, true);
    assert.equal(info.endPosition, data.length);
    assert.deepEqual(
      info.transactions.map((t) => t.gtid),
      gtidsByMariadbBinlog(join(server.datadir, name)),
    );
    assert.equal(info.endGtid, server.sql('SELECT @@gtid_binlog_state').trim());
    const mysql = Buffer.from(data);
    mysql[(info.transactions[0]?.position as number) + 4] = 33;
    expectError(() => parseBinlog(mysql, 'mysql-bin.000001'), 'Cairn.InvalidInput', /MySQL binlog .*MariaDB binlogs only/);
  });
});
