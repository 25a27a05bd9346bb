import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmod, mkdir, open, readFile, readdir, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { prepareArgv } from '../../../agent/engines/mariabackup-drill.ts';
import { runCli, lastOfType } from '../../helpers/cli.ts';
import { tempDir, PASSPHRASE } from '../../helpers/repo.ts';
import { missingMariadb, startMariadb, type MariadbServer } from '../../helpers/mariadb.ts';
import { checkNamed, drillSnapshot } from './drill-harness.ts';

const skip =
  missingMariadb() ??
  (spawnSync('sh', ['-c', 'command -v mariabackup && command -v mariadb-check']).status === 0
    ? undefined
    : 'needs mariabackup and mariadb-check: apt-get install mariadb-backup mariadb-client');

const PAGE = 16384;

/** CRC-32C (Castagnoli), the checksum of InnoDB's full_crc32 page format (MariaDB's default since 10.5). */
const CRC32C = Array.from({ length: 256 }, (_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0x82f63b78 ^ (c >>> 1) : c >>> 1;
  return c >>> 0;
});
function crc32c(data: Buffer): number {
  let crc = 0xffffffff;
  for (const byte of data) crc = (CRC32C[(crc ^ byte) & 0xff] as number) ^ (crc >>> 8);
  return (crc ^ 0xffffffff) >>> 0;
}

/**
 * Makes the root (and only) page of a small table's secondary index logically corrupt with a
 * valid checksum: the infimum's next-record pointer skips the first entry, so the index lists one
 * entry fewer than the table has rows; then the full_crc32 checksum in the page's last 4 bytes is
 * recomputed. A checksum cannot see this (a bug that wrote a bad page, checksummed): mariabackup
 * verifies page checksums and copies the page as the live server has it, and only a structural
 * check (CHECK TABLE counts each index's entries against the clustered index) finds it.
 */
async function corruptIndexPage(ibd: string): Promise<void> {
  const INFIMUM = 99; // PAGE_NEW_INFIMUM: the compact format's infimum record, its next-record offset in the 2 bytes before it
  const file = await open(ibd, 'r+');
  try {
    const page = Buffer.alloc(PAGE);
    // Page 3 is the clustered index's root, page 4 the first secondary index's.
    await file.read(page, 0, PAGE, 4 * PAGE);
    assert.equal(page.readUInt32BE(PAGE - 4), crc32c(page.subarray(0, PAGE - 4)), 'the page is in the full_crc32 format');
    assert.equal(page.readUInt16BE(24), 17855, 'page 4 is an index page (FIL_PAGE_INDEX)');
    assert.equal(page.readUInt16BE(38 + 26), 0, 'it is a leaf: the whole index is on it');
    assert.equal(page.readUInt16BE(38 + 16), 60, 'it holds an entry per row (PAGE_N_RECS)');
    const first = (INFIMUM + page.readInt16BE(INFIMUM - 2)) & (PAGE - 1);
    const second = (first + page.readInt16BE(first - 2)) & (PAGE - 1);
    page.writeInt16BE(second - INFIMUM, INFIMUM - 2);
    page.writeUInt32BE(crc32c(page.subarray(0, PAGE - 4)), PAGE - 4);
    await file.write(page, 0, PAGE, 4 * PAGE);
  } finally {
    await file.close();
  }
}

describe('mariadb drill: prepare, a private mariadbd on the restored datadir, mariadb-check, binlog position', { skip }, () => {
  let server: MariadbServer;
  let work: Awaited<ReturnType<typeof tempDir>>;
  let datadir: string;
  let env: Record<string, string>;
  const start = async (): Promise<MariadbServer> => {
    const started = await startMariadb({ datadir });
    started.sql(
      `CREATE USER IF NOT EXISTS 'cairn'@'127.0.0.1' IDENTIFIED BY '${started.password}'; GRANT ALL PRIVILEGES ON *.* TO 'cairn'@'127.0.0.1'; FLUSH PRIVILEGES;`,
    );
    return started;
  };
  const backup = async (): Promise<{ id: string; metadata: { binlogFile: string; binlogPosition: number; gtid: string } }> => {
    const result = await runCli(
      ['backup', '--engine', 'mariadb', '--db-host', '127.0.0.1', '--db-port', String(server.port), '--db-user', server.user],
      env,
    );
    assert.equal(result.code, 0, result.stderr);
    const summary = lastOfType(result, 'summary') as {
      snapshotId: string;
      engineMetadata: { binlogFile: string; binlogPosition: number; gtid: string };
    };
    return { id: summary.snapshotId, metadata: summary.engineMetadata };
  };

  before(async () => {
    work = await tempDir('mariadb-drill');
    // A datadir of the test's own, so that it outlives a stop (the helper removes its own).
    datadir = join(work.path, 'live');
    const install = spawnSync(
      'mariadb-install-db',
      [
        '--no-defaults',
        `--datadir=${datadir}`,
        '--auth-root-authentication-method=socket',
        '--skip-test-db',
        ...(process.getuid?.() === 0 ? ['--user=root'] : []),
      ],
      { encoding: 'utf8' },
    );
    assert.equal(install.status, 0, install.stderr);
    server = await start();
    env = { CAIRN_REPOSITORY: join(work.path, 'repo'), CAIRN_PASSWORD: PASSPHRASE, CAIRN_DB_PASSWORD: server.password };
    assert.equal((await runCli(['init'], env)).code, 0);
    server.sql('CREATE DATABASE shop');
    server.sql(
      `CREATE TABLE items (id INT PRIMARY KEY, name VARCHAR(80), body TEXT, KEY (name)) ENGINE=InnoDB;
       INSERT INTO items SELECT seq, CONCAT('item-', seq), REPEAT(MD5(seq), 4) FROM seq_1_to_20000;
       CREATE TABLE small (id INT PRIMARY KEY, body VARCHAR(64), KEY (body)) ENGINE=InnoDB;
       INSERT INTO small SELECT seq, MD5(seq) FROM seq_1_to_60;`,
      'shop',
    );
  });
  after(async () => {
    await server?.stop();
    await work?.remove();
  });

  it('prepares the snapshot, starts it privately, and every check runs and passes with the recorded binlog position', async () => {
    const { id, metadata } = await backup();
    const checks = await drillSnapshot(env.CAIRN_REPOSITORY as string, id);
    assert.deepEqual(
      checks.map((c) => c.name),
      ['restore', 'prepare', 'start', 'mariadb-check', 'binlog position'],
    );
    for (const check of checks) assert.ok(check.ran && check.ok, `${check.name}: ${check.found}`);
    assert.match(checkNamed(checks, 'mariadb-check').found, /^\d+ tables OK$/);
    assert.ok(Number(checkNamed(checks, 'mariadb-check').details?.tables) >= 3);
    const binlog = checkNamed(checks, 'binlog position');
    assert.ok(
      binlog.found.startsWith(`${metadata.binlogFile}:${metadata.binlogPosition}, GTID ${metadata.gtid}, as recorded`),
      binlog.found,
    );

    const thorough = await drillSnapshot(env.CAIRN_REPOSITORY as string, id, { thorough: true });
    const extended = checkNamed(thorough, 'mariadb-check');
    assert.ok(extended.ran && extended.ok, extended.found);
    assert.match(extended.found, /--extended/);
  });

  it('ignores a defaults file mariabackup would read: --no-defaults comes first, and a hostile ~/.my.cnf changes nothing', async () => {
    // The argv the drill builds: MariaDB tools honour --no-defaults only as their first argument.
    assert.deepEqual(prepareArgv('/usr/bin/mariabackup', '/scratch/data').slice(0, 3), [
      '/usr/bin/mariabackup',
      '--no-defaults',
      '--prepare',
    ]);
    // A home whose .my.cnf aims mariabackup's redo log and undo directory at files outside the drill.
    const home = join(work.path, 'hostile-home');
    const elsewhere = join(work.path, 'elsewhere');
    await mkdir(elsewhere, { recursive: true });
    await mkdir(home, { recursive: true });
    const cnf = `innodb_log_group_home_dir=${elsewhere}\ninnodb_undo_directory=${elsewhere}\n`;
    await writeFile(join(home, '.my.cnf'), `[mysqld]\n${cnf}[mariabackup]\n${cnf}[xtrabackup]\n${cnf}`);
    // mariabackup does read that file when not told otherwise (its --print-defaults shows what it would use).
    const defaults = spawnSync('mariabackup', ['--print-defaults'], { encoding: 'utf8', env: { ...process.env, HOME: home } });
    assert.match(defaults.stdout, new RegExp(`--innodb[-_]log[-_]group[-_]home[-_]dir=${elsewhere}`), defaults.stdout + defaults.stderr);

    const { id } = await backup();
    const checks = await drillSnapshot(env.CAIRN_REPOSITORY as string, id, { env: { HOME: home } });
    for (const check of checks) assert.ok(check.ran && check.ok, `${check.name}: ${check.found}`);
    assert.deepEqual(await readdir(elsewhere), [], 'nothing was read from or written to the directory the hostile file names');
  });

  it('a snapshot holding an .isl file (a DATA DIRECTORY table) that leads outside scratch is refused before prepare; the file it names is untouched', async () => {
    // A table whose tablespace lives outside the datadir: the live datadir then holds shop/remote.isl naming it.
    const outside = join(work.path, 'outside');
    await mkdir(outside, { recursive: true });
    await chmod(outside, 0o777);
    server.sql(
      `CREATE TABLE remote (id INT PRIMARY KEY, body VARCHAR(64)) ENGINE=InnoDB DATA DIRECTORY='${outside}';
       INSERT INTO remote SELECT seq, MD5(seq) FROM seq_1_to_500;`,
      'shop',
    );
    const isl = await readFile(join(datadir, 'shop', 'remote.isl'), 'utf8');
    const ibd = join(outside, 'shop', 'remote.ibd');
    assert.equal(isl.trim(), ibd, 'the live datadir links the table to the file outside');
    try {
      const { id } = await backup();
      // The file the .isl names, as it is before the drill (the live server is stopped, so nothing else writes it).
      await server.stop();
      const before = {
        sha: createHash('sha256')
          .update(await readFile(ibd))
          .digest('hex'),
        mtimeMs: (await stat(ibd)).mtimeMs,
      };

      const checks = await drillSnapshot(env.CAIRN_REPOSITORY as string, id);
      const prepare = checkNamed(checks, 'prepare');
      assert.equal(prepare.ok, false, prepare.found);
      assert.match(prepare.found, /shop\/remote\.isl -> .*outside\/shop\/remote\.ibd.*refuses/);
      assert.equal((prepare as { failure?: string }).failure, 'host', 'a refusal proves nothing against the data: no damage marker');
      for (const name of ['start', 'mariadb-check', 'binlog position'])
        assert.equal(checkNamed(checks, name).ran, false, `${name} did not run`);
      const after = {
        sha: createHash('sha256')
          .update(await readFile(ibd))
          .digest('hex'),
        mtimeMs: (await stat(ibd)).mtimeMs,
      };
      assert.deepEqual(after, before, 'the file outside the drill is untouched');
      assert.deepEqual(await readdir(join(env.CAIRN_REPOSITORY as string, 'damage')).catch(() => []), []);
    } finally {
      server = await start();
      server.sql('DROP TABLE remote', 'shop');
    }
  });

  it('an InnoDB page made logically corrupt in the live datadir before the backup fails mariadb-check, naming the table', async () => {
    // A slow shutdown: every change is in the tablespace files, none only in the redo log.
    server.sql('SET GLOBAL innodb_fast_shutdown = 0');
    await server.stop();
    await corruptIndexPage(join(datadir, 'shop', 'small.ibd'));
    server = await start();
    // mariabackup verifies every page's checksum: this one's is valid, so the backup copies the page as the live datadir has it.
    const { id } = await backup();

    const checks = await drillSnapshot(env.CAIRN_REPOSITORY as string, id);
    const check = checkNamed(checks, 'mariadb-check');
    assert.ok(check.ran, check.found);
    assert.equal(check.ok, false, check.found);
    assert.match(check.found, /^table shop\.small: .*Index 'body' contains 59 entries, should be 60.*Corrupt/);
    assert.deepEqual(Object.keys((check.details?.damaged as Record<string, unknown>) ?? {}), ['shop.small']);
    for (const name of ['restore', 'prepare', 'start', 'binlog position']) {
      const other = checkNamed(checks, name);
      assert.ok(other.ran && other.ok, `${name} passes: the page's checksum is valid (${other.found})`);
    }
  });
});
