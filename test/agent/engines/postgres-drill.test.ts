import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chown, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { join } from 'node:path';
import { runCli, lastOfType } from '../../helpers/cli.ts';
import { tempDir, PASSPHRASE } from '../../helpers/repo.ts';
import {
  missingPostgres,
  postgresWorkDir,
  serverCairn,
  startPostgres,
  type PostgresServer,
  type ServerCairn,
} from '../../helpers/postgres.ts';
import { checkNamed, drillSnapshot } from './drill-harness.ts';

const BIN = '/usr/lib/postgresql/15/bin';
const skip =
  missingPostgres() ??
  (['pg_basebackup', 'pg_amcheck', 'pg_checksums'].every((b) => spawnSync('test', ['-x', join(BIN, b)]).status === 0)
    ? undefined
    : 'needs pg_basebackup, pg_amcheck and pg_checksums: apt-get install postgresql postgresql-client');
const asRoot = process.getuid?.() === 0;
const as = (argv: string[]): string[] => (asRoot ? ['runuser', '-u', 'postgres', '--', ...argv] : argv);

function runAs(argv: string[], cwd: string): string {
  const full = as(argv);
  const out = spawnSync(full[0] as string, full.slice(1), { encoding: 'utf8', cwd });
  if (out.status !== 0) throw new Error(`${argv.join(' ')} failed: ${out.stderr}`);
  return out.stdout;
}

/**
 * Makes block 0 of a heap file logically corrupt with a valid checksum: the first line
 * pointer's offset moved off its alignment, then pg_checksums rewrites the page's checksum
 * (--disable, --enable: only pages whose checksum differs are written). This is corruption
 * a checksum cannot see (a bug that wrote a bad page, checksummed): pg_basebackup verifies
 * checksums and takes the page as it is, and only a structural check (amcheck) finds it.
 */
async function corruptHeapPage(dataDir: string, relationPath: string, cwd: string): Promise<void> {
  const file = join(dataDir, relationPath);
  const bytes = await readFile(file);
  const pointer = bytes.readUInt32LE(24);
  const offset = pointer & 0x7fff;
  assert.ok(offset > 24 && offset % 8 === 0, `block 0's first line pointer points at a tuple (${offset})`);
  bytes.writeUInt32LE((pointer & ~0x7fff) | (offset + 1), 24);
  await writeFile(file, bytes);
  assert.throws(
    () => runAs([join(BIN, 'pg_checksums'), '--check', '-D', dataDir], cwd),
    /checksum verification failed/,
    'the page changed',
  );
  runAs([join(BIN, 'pg_checksums'), '--disable', '-D', dataDir], cwd);
  runAs([join(BIN, 'pg_checksums'), '--enable', '-D', dataDir], cwd);
  runAs([join(BIN, 'pg_checksums'), '--check', '-D', dataDir], cwd);
}

describe('postgres drill: a private cluster from the snapshot, pg_amcheck, pg_checksums', { skip }, () => {
  let server: PostgresServer;
  let work: Awaited<ReturnType<typeof tempDir>>;
  let pgWork: string;
  let dataDir: string;
  let env: Record<string, string>;
  const start = async (): Promise<PostgresServer> => startPostgres({ dataDir, settings: { autovacuum: 'off' } });
  const backup = async (): Promise<string> => {
    const result = await runCli(
      ['backup', '--engine', 'postgres', '--db-host', '127.0.0.1', '--db-port', String(server.port), '--db-user', 'postgres'],
      env,
    );
    assert.equal(result.code, 0, result.stderr);
    return (lastOfType(result, 'summary') as { snapshotId: string }).snapshotId;
  };

  before(async () => {
    work = await tempDir('pg-drill');
    pgWork = await postgresWorkDir();
    // A cluster with data checksums (the test helper's initdb has none), with the helper's login.
    dataDir = join(pgWork, 'data');
    const pw = join(pgWork, 'pw');
    await writeFile(pw, 'cairn-test-pw');
    if (asRoot) {
      const id = (flag: string): number => Number(spawnSync('id', [flag, 'postgres'], { encoding: 'utf8' }).stdout.trim());
      await chown(pw, id('-u'), id('-g'));
    }
    runAs(
      [
        join(BIN, 'initdb'),
        '-D',
        dataDir,
        '--data-checksums',
        '-U',
        'postgres',
        `--pwfile=${pw}`,
        '--auth-local=trust',
        '--auth-host=scram-sha-256',
        '-E',
        'UTF8',
        '--locale=C.UTF-8',
      ],
      pgWork,
    );
    server = await start();
    env = { CAIRN_REPOSITORY: join(work.path, 'repo'), CAIRN_PASSWORD: PASSPHRASE, CAIRN_DB_PASSWORD: server.password };
    assert.equal((await runCli(['init'], env)).code, 0);
    server.sql('CREATE DATABASE shop');
    server.sql(
      `CREATE TABLE items (id int PRIMARY KEY, name text, body text);
       CREATE INDEX items_name ON items (name);
       INSERT INTO items SELECT g, 'item-' || g, repeat(md5(g::text), 4) FROM generate_series(1, 20000) g;
       CREATE TABLE small (id int PRIMARY KEY, body text);
       INSERT INTO small SELECT g, md5(g::text) FROM generate_series(1, 50) g;`,
      'shop',
    );
  });
  after(async () => {
    await server?.stop();
    await work?.remove();
    if (pgWork) await rm(pgWork, { recursive: true, force: true });
  });

  it('restores the snapshot into a private cluster that recovers to a consistent point, and every check runs and passes', async () => {
    const id = await backup();
    const checks = await drillSnapshot(env.CAIRN_REPOSITORY as string, id);
    assert.deepEqual(
      checks.map((c) => c.name),
      ['restore', 'start', 'consistent', 'pg_amcheck', 'pg_checksums'],
    );
    for (const check of checks) assert.ok(check.ran && check.ok, `${check.name}: ${check.found}`);
    assert.match(checkNamed(checks, 'start').found, /archive_mode=off/);
    assert.match(checkNamed(checks, 'consistent').found, /^consistent at [0-9A-F]+\/[0-9A-F]+/);
    assert.match(checkNamed(checks, 'pg_checksums').found, /every page checksum matches \(\d+ blocks\)/);

    const thorough = await drillSnapshot(env.CAIRN_REPOSITORY as string, id, { thorough: true });
    const amcheck = checkNamed(thorough, 'pg_amcheck');
    assert.ok(amcheck.ran && amcheck.ok, amcheck.found);
    assert.match(amcheck.found, /--heapallindexed/);
  });

  it('a heap page made logically corrupt in the live cluster before the backup fails pg_amcheck, naming the table', async () => {
    const relation = server.sql("SELECT pg_relation_filepath('small')", 'shop').trim();
    server.sql('CHECKPOINT');
    await server.stop();
    await corruptHeapPage(dataDir, relation, pgWork);
    server = await start();
    // pg_basebackup verifies page checksums: the page's is valid, so the backup takes it as the live cluster has it.
    const id = await backup();

    const checks = await drillSnapshot(env.CAIRN_REPOSITORY as string, id);
    const amcheck = checkNamed(checks, 'pg_amcheck');
    assert.ok(amcheck.ran, amcheck.found);
    assert.equal(amcheck.ok, false, amcheck.found);
    assert.match(amcheck.found, /corruption in shop\.public\.small\b.*line pointer to page offset \d+ is not maximally aligned/);
    assert.deepEqual(amcheck.details?.relations, ['shop.public.small']);
    for (const name of ['restore', 'start', 'consistent', 'pg_checksums']) {
      const check = checkNamed(checks, name);
      assert.ok(check.ran && check.ok, `${name} passes: the page's checksum is valid (${check.found})`);
    }
  });
});

/** Every object under a directory, with its size: the log archive's state. */
async function listing(dir: string): Promise<string[]> {
  const names = await readdir(dir, { recursive: true }).catch(() => [] as string[]);
  const out: string[] = [];
  for (const name of names.sort()) {
    const info = await stat(join(dir, name));
    if (info.isFile()) out.push(`${name} ${info.size}`);
  }
  return out;
}

describe('postgres drill of a cluster that archives its WAL through Cairn', { skip }, () => {
  let server: PostgresServer | undefined;
  let cairn: ServerCairn | undefined;
  let pgWork: string;
  let env: Record<string, string>;
  let spool: string;
  before(async () => {
    pgWork = await postgresWorkDir();
    cairn = await serverCairn();
  });
  after(async () => {
    await server?.stop();
    if (cairn && spool) {
      const program = [cairn.node, cairn.script, 'wal-daemon', '--stop', '--spool-dir', spool];
      const stop = as(program);
      spawnSync(stop[0] as string, stop.slice(1), { stdio: 'ignore', cwd: pgWork });
    }
    await cairn?.remove();
    if (pgWork) await rm(pgWork, { recursive: true, force: true });
  });

  it("pushes nothing to the log archive, though the snapshot's own configuration archives every segment there", async () => {
    const repo = join(pgWork, 'repo');
    env = { CAIRN_REPOSITORY: repo, CAIRN_PASSWORD: PASSPHRASE };
    assert.equal((await runCli(['init'], env)).code, 0);
    const pw = join(pgWork, 'pw');
    await writeFile(pw, PASSPHRASE);
    spool = join(pgWork, 'spool');
    const attempts = join(pgWork, 'archive-attempts');
    await writeFile(attempts, '');
    // The server (and so archive_command) runs as postgres: the repository, passphrase and attempt log must be its.
    if (asRoot) spawnSync('chown', ['-R', 'postgres:', repo, pw, attempts]);
    // Everything the command needs is on its line, so a copy of the cluster started anywhere could push with it;
    // every call is logged first, so a push that fails (a segment name archived already) is seen too.
    const archiveCommand = `echo %f >> ${attempts} && ${cairn?.command ?? ''} -r ${repo} --password-file ${pw} wal-push --spool-dir ${spool} %p`;
    const settings = { wal_level: 'replica', archive_mode: 'on', archive_command: archiveCommand, archive_timeout: '1s' };
    server = await startPostgres({ settings });
    // Also in postgresql.auto.conf, which the base backup carries: the restored cluster's own configuration archives.
    for (const [name, value] of Object.entries(settings)) server.sql(`ALTER SYSTEM SET ${name} = '${value.replaceAll("'", "''")}'`);
    env.CAIRN_DB_PASSWORD = server.password;
    server.sql(
      'CREATE TABLE t (id serial PRIMARY KEY, body text); INSERT INTO t (body) SELECT md5(g::text) FROM generate_series(1, 1000) g',
    );
    const stream = `pg-${server.sql('SELECT system_identifier FROM pg_control_system()').trim()}`;
    const archive = join(repo, 'logs', stream);
    const segment = server.sql('SELECT pg_walfile_name(pg_switch_wal())').trim();
    for (const deadline = Date.now() + 60_000; !(await listing(archive)).some((l) => l.includes(segment)); await sleep(100))
      if (Date.now() > deadline) assert.fail(`the live cluster did not archive ${segment}: ${server.serverLog().slice(-2000)}`);

    const backup = await runCli(
      ['backup', '--engine', 'postgres', '--db-host', '127.0.0.1', '--db-port', String(server.port), '--db-user', 'postgres'],
      env,
    );
    assert.equal(backup.code, 0, backup.stderr);
    const id = (lastOfType(backup, 'summary') as { snapshotId: string }).snapshotId;
    // The live cluster stops (its archiver finishing what is ready): from here on, only the drill could push.
    await server.stop();
    server = undefined;
    const objects = await listing(archive);
    const calls = await readFile(attempts, 'utf8');
    assert.ok(objects.length > 0 && calls.includes(segment), 'the live cluster archived through Cairn');

    const checks = await drillSnapshot(repo, id);
    // This cluster has no data checksums: pg_checksums is skipped as expected; every other check runs and passes.
    for (const check of checks) assert.ok(check.ok && (check.ran || check.name === 'pg_checksums'), `${check.name}: ${check.found}`);
    assert.ok(checkNamed(checks, 'pg_amcheck').ran);
    assert.deepEqual(await listing(archive), objects, "the log archive's objects are unchanged");
    assert.equal(await readFile(attempts, 'utf8'), calls, 'the drill ran no archive_command');
  });
});
