import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { chmod, mkdir, readFile, readdir, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { Repository } from '../../../agent/core/repository.ts';
import { readHistory } from '../../../agent/core/history.ts';
import { measuredThroughputs } from '../../../agent/core/pitr-planning.ts';
import { FileStorage } from '../../../agent/storage/file.ts';
import { runCli, lastOfType, type CliResult } from '../../helpers/cli.ts';
import { tempDir, PASSPHRASE } from '../../helpers/repo.ts';
import { missingMariadb, startMariadb, type MariadbServer } from '../../helpers/mariadb.ts';
import { missingPostgres, startPostgres, type PostgresServer } from '../../helpers/postgres.ts';

/**
 * `cairn drill` end to end: a backup of real data (a directory, a live MariaDB, a live
 * PostgreSQL started by the test), then the drill, whose every check must run and pass.
 * The database drills run while the live server holds other data than the snapshot, with
 * the clients' variables (MYSQL_HOST, PGHOST…) pointing at it: the live data must be
 * unchanged afterwards, and the live server must have seen no connection from the drill.
 */

interface Check {
  name: string;
  phase: string;
  ran: boolean;
  ok: boolean;
  found: string;
  details?: Record<string, unknown>;
  durationMs: number;
}
interface Report {
  snapshotId: string;
  engine: string;
  ok: boolean;
  checks: Check[];
  restoreMs: number;
  checkMs: number;
  scratch: string;
}

function reportOf(result: CliResult): Report {
  const report = lastOfType(result, 'drill') as Report | undefined;
  assert.ok(report, `no drill result: ${result.stdout}\n${result.stderr}`);
  return report;
}

function checkNamed(report: Report, name: string): Check {
  const check = report.checks.find((c) => c.name === name);
  assert.ok(check, `no check ${name} among ${report.checks.map((c) => c.name).join(', ')}`);
  return check;
}

function assertAllPassed(report: Report, names: string[]): void {
  assert.deepEqual(
    report.checks.map((c) => c.name),
    names,
  );
  for (const check of report.checks) {
    assert.equal(check.ran, true, `${check.name} ran`);
    assert.equal(check.ok, true, `${check.name}: ${check.found}`);
  }
  assert.equal(report.ok, true);
}

async function drillEvents(repoPath: string): Promise<Array<Record<string, unknown>>> {
  const repo = await Repository.open(new FileStorage(repoPath), PASSPHRASE);
  return (await readHistory(repo)).filter((e) => e.event === 'drill');
}

describe('cairn drill: files', () => {
  let work: Awaited<ReturnType<typeof tempDir>>;
  let env: Record<string, string>;
  before(async () => {
    work = await tempDir('drill-files');
    env = { CAIRN_REPOSITORY: `${work.path}/repo`, CAIRN_PASSWORD: PASSPHRASE, CAIRN_DRILL_DIR: join(work.path, 'scratch') };
    assert.equal((await runCli(['init'], env)).code, 0);
  });
  after(async () => work?.remove());

  it('restores every file into scratch, re-hashes every piece and matches every size, then removes the scratch directory', async () => {
    const data = join(work.path, 'data');
    await mkdir(join(data, 'sub', 'deeper'), { recursive: true });
    await writeFile(join(data, 'a.txt'), 'hello drill\n');
    await writeFile(
      join(data, 'sub', 'big.bin'),
      Buffer.alloc(3 << 20, 7).map((_, i) => (i * 31) % 251),
    );
    await writeFile(join(data, 'sub', 'deeper', 'empty'), '');
    const backup = await runCli(['backup', data], env);
    assert.equal(backup.code, 0, backup.stderr);
    const snapshotId = (lastOfType(backup, 'summary') as { snapshotId: string }).snapshotId;

    const result = await runCli(['drill', snapshotId], env);
    assert.equal(result.code, 0, result.stderr);
    const report = reportOf(result);
    assert.equal(report.snapshotId, snapshotId);
    assertAllPassed(report, ['restore', 'pieces', 'file sizes']);
    assert.equal(checkNamed(report, 'file sizes').details?.files, 3);
    assert.equal(checkNamed(report, 'file sizes').details?.bytes, 12 + (3 << 20));
    assert.ok((checkNamed(report, 'pieces').details?.pieces as number) > 1);
    assert.deepEqual(await readdir(join(work.path, 'scratch')), [], 'the scratch directory is gone');
    const events = await drillEvents(`${work.path}/repo`);
    assert.equal(events.at(-1)?.outcome, 'passed');
    assert.equal(events.at(-1)?.snapshotId, snapshotId);
    // The restore planner's estimates learn from the drill's restore.
    const repo = await Repository.open(new FileStorage(`${work.path}/repo`), PASSPHRASE);
    const samples = (await measuredThroughputs(repo)).filter((t) => t.kind === 'restore');
    assert.deepEqual(
      samples.map((t) => t.bytes),
      [12 + (3 << 20)],
    );
  });

  it('a drill that meets damaged data fails, records a damage marker naming the snapshot, and latest passes over it', async () => {
    const data = join(work.path, 'data2');
    await mkdir(data, { recursive: true });
    await writeFile(join(data, 'good.txt'), 'the older, good snapshot\n');
    const good = await runCli(['backup', data], env);
    assert.equal(good.code, 0, good.stderr);
    const goodId = (lastOfType(good, 'summary') as { snapshotId: string }).snapshotId;
    await writeFile(
      join(data, 'doomed.bin'),
      Buffer.alloc(200_000, 3).map((_, i) => (i * 17) % 253),
    );
    const doomed = await runCli(['backup', data], env);
    assert.equal(doomed.code, 0, doomed.stderr);
    const doomedId = (lastOfType(doomed, 'summary') as { snapshotId: string }).snapshotId;
    // Flip a byte in the middle of the pack that backup added (the newest pack file).
    const packs = join(work.path, 'repo', 'packs');
    const files: Array<{ path: string; mtime: number }> = [];
    for (const dir of await readdir(packs)) {
      for (const f of await readdir(join(packs, dir))) {
        const path = join(packs, dir, f);
        files.push({ path, mtime: (await stat(path)).mtimeMs });
      }
    }
    const newest = files.sort((a, b) => b.mtime - a.mtime)[0]?.path as string;
    const bytes = await readFile(newest);
    bytes[bytes.length >> 1] = (bytes[bytes.length >> 1] ?? 0) ^ 0xff;
    await writeFile(newest, bytes);

    const failed = await runCli(['drill', doomedId], env);
    assert.equal(failed.code, 14, failed.stderr);
    assert.match(failed.stdout + failed.stderr, /the drill recorded the damage in damage\/[0-9a-f]{64}/);
    const events = await drillEvents(`${work.path}/repo`);
    assert.equal((events.at(-1)?.markers as string[] | undefined)?.length, 1, 'the drill event names its marker');
    // latest now passes over the marked snapshot (naming it) and drills the good one.
    const latest = await runCli(['drill'], env);
    assert.equal(latest.code, 0, latest.stderr);
    assert.equal(reportOf(latest).snapshotId, goodId);
    assert.match(latest.stdout + latest.stderr, new RegExp(doomedId.slice(0, 8)));
  });
});

/** The connections a MariaDB server has accepted so far (this query's own included). */
function mariadbConnections(server: MariadbServer): number {
  return Number(server.sql("SHOW GLOBAL STATUS LIKE 'Connections'").split('\t')[1]);
}

describe('cairn drill: mysqldump, beside a live server it must not touch', { skip: missingMariadb() }, () => {
  let live: MariadbServer;
  let work: Awaited<ReturnType<typeof tempDir>>;
  let env: Record<string, string>;
  before(async () => {
    live = await startMariadb();
    work = await tempDir('drill-mysqldump');
    // The drill's private server runs as cairn-drill under root: it must pass through the test's directory.
    await chmod(work.path, 0o711);
    env = {
      CAIRN_REPOSITORY: `${work.path}/repo`,
      CAIRN_PASSWORD: PASSPHRASE,
      CAIRN_DB_PASSWORD: live.password,
      CAIRN_DRILL_DIR: join(work.path, 'scratch'),
    };
    assert.equal((await runCli(['init'], env)).code, 0);
  });
  after(async () => {
    await live?.stop();
    await work?.remove();
  });

  it('loads the dump into a private server, checks and counts its tables; the live server keeps its data and sees no connection', async () => {
    live.sql('CREATE DATABASE shop');
    live.sql(
      `CREATE TABLE customers (id INT PRIMARY KEY, name VARCHAR(64), KEY (name)) ENGINE=InnoDB;
       CREATE TABLE orders (id INT PRIMARY KEY, customer INT, amount DOUBLE) ENGINE=InnoDB;
       INSERT INTO customers SELECT seq, CONCAT('c', seq) FROM seq_1_to_3000;
       INSERT INTO orders SELECT seq, 1 + seq % 3000, seq * 0.5 FROM seq_1_to_5000;`,
      'shop',
    );
    const conn = ['--engine', 'mysqldump', '--db-host', '127.0.0.1', '--db-port', String(live.port), '--db-user', live.user];
    const one = await runCli(['backup', ...conn, '--db-name', 'shop'], env);
    assert.equal(one.code, 0, one.stderr);
    const all = await runCli(['backup', ...conn], env);
    assert.equal(all.code, 0, all.stderr);
    const oneId = (lastOfType(one, 'summary') as { snapshotId: string }).snapshotId;
    const allId = (lastOfType(all, 'summary') as { snapshotId: string }).snapshotId;

    // The live server moves on: the drill must show the snapshot's rows, not these, and leave these alone.
    live.sql(
      'DELETE FROM orders WHERE id > 1000; INSERT INTO customers VALUES (99999, "live only"); CREATE TABLE live_only (x INT)',
      'shop',
    );
    const liveBefore = live.sql('CHECKSUM TABLE shop.customers, shop.orders EXTENDED');
    // Every client variable aims at the live server: the drill must not follow any of them.
    const aimed = {
      ...env,
      MYSQL_HOST: '127.0.0.1',
      MYSQL_TCP_PORT: String(live.port),
      MYSQL_UNIX_PORT: live.socket,
      MYSQL_PWD: live.password,
    };

    for (const [snapshotId, tables] of [
      [oneId, 2],
      [allId, 2],
    ] as const) {
      const connectionsBefore = mariadbConnections(live);
      const result = await runCli(['drill', snapshotId, '--thorough'], aimed);
      // This query's own connection is the one more the live server may have seen.
      assert.equal(mariadbConnections(live), connectionsBefore + 1, 'the live server saw no connection from the drill');
      assert.equal(result.code, 0, `${result.stderr}\n${result.stdout}`);
      const report = reportOf(result);
      assertAllPassed(report, ['private mariadbd', 'load dump', 'mariadb-check', 'row counts']);
      const counts = checkNamed(report, 'row counts').details as { tables: number; rows: Record<string, number> };
      assert.equal(counts.tables, tables);
      assert.deepEqual(counts.rows, { 'shop.customers': 3000, 'shop.orders': 5000 }, 'the snapshot’s rows, not the live ones');
      assert.ok((checkNamed(report, 'mariadb-check').details?.tables as number) >= 2);
      assert.ok(report.restoreMs > 0);
      assert.deepEqual(await readdir(join(work.path, 'scratch')), []);
    }
    assert.equal(live.sql('CHECKSUM TABLE shop.customers, shop.orders EXTENDED'), liveBefore, 'the live data is unchanged');
    assert.equal(live.sql('SELECT COUNT(*) FROM orders', 'shop').trim(), '1000');
    assert.equal(live.sql("SHOW TABLES LIKE 'live_only'", 'shop').trim(), 'live_only');
    const events = await drillEvents(`${work.path}/repo`);
    assert.deepEqual(
      events.map((e) => [e.snapshotId, e.outcome]),
      [
        [oneId, 'passed'],
        [allId, 'passed'],
      ],
    );
  });
});

/**
 * Runs a marker query on the live PostgreSQL and waits until its log (log_statement=all, read
 * through a pipe) shows it: everything the server logged before the marker is then in hand.
 * Returns the log up to and including the marker.
 */
async function pgLogThrough(server: PostgresServer, marker: string): Promise<string> {
  server.sql(`SELECT '${marker}'`);
  const deadline = Date.now() + 30_000;
  for (;;) {
    const log = server.serverLog();
    const at = log.indexOf(`SELECT '${marker}'`);
    if (at >= 0) return log.slice(0, at);
    if (Date.now() > deadline) throw new Error(`the live server never logged ${marker}`);
    await delay(20);
  }
}

function connectionsIn(log: string): number {
  return (log.match(/connection received:/g) ?? []).length;
}

describe('cairn drill: pgdump, beside a live server it must not touch', { skip: missingPostgres() }, () => {
  let live: PostgresServer;
  let work: Awaited<ReturnType<typeof tempDir>>;
  let env: Record<string, string>;
  before(async () => {
    live = await startPostgres({ settings: { log_connections: 'on', log_statement: 'all' } });
    work = await tempDir('drill-pgdump');
    await chmod(work.path, 0o711);
    env = {
      CAIRN_REPOSITORY: `${work.path}/repo`,
      CAIRN_PASSWORD: PASSPHRASE,
      CAIRN_DB_PASSWORD: live.password,
      CAIRN_DRILL_DIR: join(work.path, 'scratch'),
    };
    assert.equal((await runCli(['init'], env)).code, 0);
  });
  after(async () => {
    await live?.stop();
    await work?.remove();
  });

  it('restores the dump into a private cluster and counts its tables; the live server keeps its data and sees no connection', async () => {
    live.sql('CREATE DATABASE shop');
    live.sql(
      `CREATE TABLE customers (id int PRIMARY KEY, name text);
       CREATE TABLE orders (id int PRIMARY KEY, customer int REFERENCES customers, amount float8);
       INSERT INTO customers SELECT g, 'c' || g FROM generate_series(1, 3000) g;
       INSERT INTO orders SELECT g, 1 + g % 3000, g * 0.5 FROM generate_series(1, 5000) g;`,
      'shop',
    );
    const conn = [
      '--engine',
      'pgdump',
      '--db-host',
      '127.0.0.1',
      '--db-port',
      String(live.port),
      '--db-user',
      live.user,
      '--db-name',
      'shop',
    ];
    const backup = await runCli(['backup', ...conn], env);
    assert.equal(backup.code, 0, backup.stderr);
    const snapshotId = (lastOfType(backup, 'summary') as { snapshotId: string }).snapshotId;

    live.sql(
      "DELETE FROM orders WHERE id > 1000; INSERT INTO customers VALUES (99999, 'live only'); CREATE TABLE live_only (x int)",
      'shop',
    );
    const liveBefore =
      live.sql('SELECT count(*), sum(id) FROM customers', 'shop') + live.sql('SELECT count(*), sum(amount) FROM orders', 'shop');
    const aimed = {
      ...env,
      PGHOST: '127.0.0.1',
      PGPORT: String(live.port),
      PGUSER: live.user,
      PGPASSWORD: live.password,
      PGDATABASE: 'shop',
    };

    const logBefore = await pgLogThrough(live, 'before-the-drill');
    const result = await runCli(['drill', snapshotId], aimed);
    const logAfter = await pgLogThrough(live, 'after-the-drill');
    // Between the two markers, the only connection is the second marker's own.
    assert.equal(connectionsIn(logAfter) - connectionsIn(logBefore), 1, 'the live server saw no connection from the drill');
    const liveAfter =
      live.sql('SELECT count(*), sum(id) FROM customers', 'shop') + live.sql('SELECT count(*), sum(amount) FROM orders', 'shop');
    assert.equal(liveAfter, liveBefore, 'the live data is unchanged');
    assert.equal(live.sql("SELECT count(*) FROM pg_tables WHERE tablename = 'live_only'", 'shop').trim(), '1');

    assert.equal(result.code, 0, `${result.stderr}\n${result.stdout}`);
    const report = reportOf(result);
    assertAllPassed(report, ['private cluster', 'globals', 'pg_restore', 'table counts']);
    const counts = checkNamed(report, 'table counts').details as { tables: number; rows: Record<string, number> };
    assert.deepEqual(counts.rows, { 'shop.public.customers': 3000, 'shop.public.orders': 5000 }, 'the snapshot’s rows, not the live ones');
    assert.deepEqual(await readdir(join(work.path, 'scratch')), []);
    const events = await drillEvents(`${work.path}/repo`);
    assert.equal(events.at(-1)?.outcome, 'passed');
  });
});
