import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { mkdir, readFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { LogArchive, type LogFileRecord } from '../../../agent/core/log-archive.ts';
import { Repository } from '../../../agent/core/repository.ts';
import { FileStorage } from '../../../agent/storage/file.ts';
import { parseBinlog } from '../../../agent/pitr/binlog-parser.ts';
import { CAIRN_BIN, runCli, runCliProcess, lastOfType } from '../../helpers/cli.ts';
import { missingMariadb, serverClockPast, startMariadb, type MariadbServer } from '../../helpers/mariadb.ts';
import { PASSPHRASE, tempDir } from '../../helpers/repo.ts';

const skip =
  missingMariadb() ??
  (spawnSync('sh', ['-c', 'command -v mariadb-binlog']).status === 0 ? undefined : 'needs mariadb-binlog: apt-get install mariadb-client');

const ARCHIVER = { user: 'archiver', password: 'archiver-pw' };

function serverFiles(server: MariadbServer): Array<{ name: string; size: number }> {
  return server
    .sql('SHOW BINARY LOGS')
    .trim()
    .split('\n')
    .map((l) => l.split('\t'))
    .map(([name, size]) => ({ name: name as string, size: Number(size) }));
}

async function records(repoPath: string, stream: string): Promise<LogFileRecord[]> {
  const repo = await Repository.open(new FileStorage(repoPath), PASSPHRASE);
  return (await new LogArchive(repo, stream).read()).records;
}

async function archivedBytes(repoPath: string, stream: string, key: string): Promise<Buffer> {
  const repo = await Repository.open(new FileStorage(repoPath), PASSPHRASE);
  return new LogArchive(repo, stream).getFile(key);
}

describe('binlog-push against a real MariaDB server', { skip }, () => {
  let server: MariadbServer;
  let work: Awaited<ReturnType<typeof tempDir>>;
  let env: Record<string, string>;
  let repoPath: string;
  let spool: string;
  let conn: string[];
  before(async () => {
    server = await startMariadb({ serverId: 5, logBin: 'pushbin', maxBinlogSize: 4096 });
    server.sql(
      `CREATE USER '${ARCHIVER.user}'@'127.0.0.1' IDENTIFIED BY '${ARCHIVER.password}'; GRANT REPLICATION SLAVE, BINLOG MONITOR ON *.* TO '${ARCHIVER.user}'@'127.0.0.1'`,
    );
    server.sql(
      `CREATE USER 'nobinlog'@'127.0.0.1' IDENTIFIED BY '${ARCHIVER.password}'; GRANT BINLOG MONITOR ON *.* TO 'nobinlog'@'127.0.0.1'`,
    );
    server.sql('CREATE DATABASE w; CREATE TABLE w.t (id INT PRIMARY KEY, body VARCHAR(600)) ENGINE=InnoDB');
    work = await tempDir('binlog-push');
    repoPath = join(work.path, 'repo');
    spool = join(work.path, 'spool');
    await mkdir(spool, { mode: 0o700 });
    env = { CAIRN_REPOSITORY: repoPath, CAIRN_PASSWORD: PASSPHRASE, CAIRN_DB_PASSWORD: ARCHIVER.password, CAIRN_SPOOL_DIR: spool };
    conn = ['--db-host', '127.0.0.1', '--db-port', String(server.port), '--db-user', ARCHIVER.user];
    assert.equal((await runCli(['init'], env)).code, 0);
  });
  after(async () => {
    await server?.stop();
    await work?.remove();
  });

  it('archives every closed file once, byte for byte, with its GTID positions; a rerun archives nothing; the active file waits', async () => {
    // ~20 statements of 500 bytes: several 4 KiB files rotate on their own.
    for (let i = 1; i <= 20; i++) server.sql(`INSERT INTO w.t VALUES (${i}, '${'r'.repeat(500)}')`);
    server.sql('FLUSH BINARY LOGS');
    const files = serverFiles(server);
    assert.ok(files.length >= 4, `rotations by size (${files.length} files)`);
    const first = await runCli(['binlog-push', ...conn], env);
    assert.equal(first.code, 0, first.stderr);
    const pushed = first.lines.filter((l) => l.type === 'binlog-push');
    assert.deepEqual(
      pushed.map((l) => l.name),
      files.slice(0, -1).map((f) => f.name),
      'one result per closed file, in order',
    );
    assert.ok(pushed.every((l) => l.outcome === 'stored' && l.stream === 'mariadb-default'));
    const summary = lastOfType(first, 'summary');
    assert.equal(summary?.archived, files.length - 1);
    assert.equal(summary?.active, files.at(-1)?.name);

    const stored = await records(repoPath, 'mariadb-default');
    assert.equal(stored.length, files.length - 1);
    for (const [i, record] of stored.entries()) {
      const original = await readFile(join(server.datadir, record.name));
      assert.ok(
        (await archivedBytes(repoPath, 'mariadb-default', record.key)).equals(original),
        `${record.name} is stored as the server wrote it`,
      );
      const info = parseBinlog(original, record.name);
      assert.match(record.key, new RegExp(`^\\d{8}T\\d{6}Z-5-${record.name.replace('.', '\\.')}$`));
      assert.equal(record.size, original.length);
      assert.deepEqual(record.binlog, {
        serverId: 5,
        startGtid: info.startGtid,
        endGtid: info.endGtid,
        startPosition: info.startPosition,
        endPosition: original.length,
        nextFile: files[i + 1]?.name,
        closed: true,
        closedAt: info.closedAt,
        transactions: info.transactions.length,
      });
      assert.equal(record.firstEventTime, info.createdAt);
      assert.equal(record.lastEventTime, info.lastEventTime);
      if (i > 0) assert.equal(record.binlog?.startGtid, stored[i - 1]?.binlog?.endGtid);
    }
    assert.deepEqual(await readdir(spool), [], 'nothing is left in the spool');

    // In another time zone: mariadb-binlog prints local times, and the keys must not depend on them.
    // A subprocess: TZ applies to a whole process.
    const again = await runCliProcess(['binlog-push', ...conn], { ...env, TZ: 'Asia/Kolkata' });
    assert.equal(again.code, 0, again.stderr);
    assert.equal(again.lines.filter((l) => l.type === 'binlog-push').length, 0);
    assert.deepEqual([lastOfType(again, 'summary')?.archived, lastOfType(again, 'summary')?.alreadyArchived], [0, files.length - 1]);
    assert.equal((await records(repoPath, 'mariadb-default')).length, files.length - 1, 'no new records');
  });

  it('a server that numbers its binlogs again from .000001 gets new keys; the archived files stay as they were', async () => {
    const before = await records(repoPath, 'mariadb-default');
    const old = await Promise.all(
      before.map(async (r) => [r.key, (await archivedBytes(repoPath, 'mariadb-default', r.key)).toString('hex')] as const),
    );
    // The new pushbin.000001 gets a creation second of its own, as a restored server's files would have.
    const first = before.find((r) => r.name === 'pushbin.000001');
    assert.ok(first?.firstEventTime, 'the first file is archived with its creation time');
    await serverClockPast(server, first.firstEventTime);
    server.sql('RESET MASTER');
    server.sql("INSERT INTO w.t VALUES (1000, 'after reset'); FLUSH BINARY LOGS");
    const pushed = await runCli(['binlog-push', ...conn], env);
    assert.equal(pushed.code, 0, pushed.stderr);
    const fresh = pushed.lines.filter((l) => l.type === 'binlog-push');
    assert.deepEqual(
      fresh.map((l) => l.name),
      ['pushbin.000001'],
    );
    const after = await records(repoPath, 'mariadb-default');
    assert.equal(after.filter((r) => r.name === 'pushbin.000001').length, 2, 'both files named pushbin.000001 are archived');
    for (const [key, hex] of old)
      assert.equal((await archivedBytes(repoPath, 'mariadb-default', key)).toString('hex'), hex, `${key} is untouched`);
  });

  it('--rotate closes the file being written when it holds transactions the archive lacks, and only then', async () => {
    server.sql(`GRANT RELOAD ON *.* TO '${ARCHIVER.user}'@'127.0.0.1'`);
    server.sql("INSERT INTO w.t VALUES (7777, 'waits in the active file')");
    const position = server.sql('SELECT @@gtid_binlog_pos').trim();
    const before = serverFiles(server).length;
    const rotated = await runCli(['binlog-push', '--rotate', ...conn], env);
    assert.equal(rotated.code, 0, rotated.stderr);
    assert.equal(serverFiles(server).length, before + 1, 'one rotation');
    const newest = (await records(repoPath, 'mariadb-default'))
      .sort((a, b) => (a.firstEventTime ?? '').localeCompare(b.firstEventTime ?? ''))
      .at(-1);
    assert.equal(newest?.binlog?.endGtid.split(',').includes(position), true, `the transaction ${position} is archived at once`);
    const idle = await runCli(['binlog-push', '--rotate', ...conn], env);
    assert.equal(idle.code, 0, idle.stderr);
    assert.equal(serverFiles(server).length, before + 1, 'nothing new: no rotation');
  });

  it('names the missing privilege', async () => {
    const denied = await runCli(['binlog-push', '--db-host', '127.0.0.1', '--db-port', String(server.port), '--db-user', 'nobinlog'], env);
    assert.equal(denied.code, 1);
    assert.match(denied.stderr, /REPLICATION SLAVE/);
    const error = lastOfType(denied, 'error');
    assert.match(String(error?.hint), /GRANT REPLICATION SLAVE, BINLOG MONITOR/);
  });

  it('--follow archives each file as soon as the server rotates it, reconnects when the connection drops, and stops cleanly on SIGTERM', async () => {
    const stream = 'mariadb-follow';
    const child = spawn(process.execPath, [CAIRN_BIN, 'binlog-push', '--follow', '--archive-name', 'follow', ...conn], {
      env: { PATH: process.env.PATH ?? '', CAIRN_JSON: '1', ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const exited = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
    const lines = (): Array<Record<string, unknown>> =>
      stdout
        .split('\n')
        .filter((l) => l.startsWith('{'))
        .map((l) => JSON.parse(l) as Record<string, unknown>);
    const archivedNames = (): string[] =>
      lines()
        .filter((l) => l.type === 'binlog-push')
        .map((l) => String(l.name));
    const waitFor = async (what: string, test: () => boolean): Promise<void> => {
      for (let i = 0; i < 300 && !test(); i++) await sleep(100);
      assert.ok(test(), `${what}; stdout: ${stdout.slice(-2000)} stderr: ${stderr.slice(-2000)}`);
    };
    try {
      // The catch-up archives what the server closed so far.
      const closedNow = serverFiles(server)
        .slice(0, -1)
        .map((f) => f.name);
      await waitFor('the catch-up archives the closed files', () => closedNow.every((n) => archivedNames().includes(n)));
      for (let round = 0; round < 3; round++) {
        server.sql(`INSERT INTO w.t VALUES (${2000 + round}, 'follow ${round}'); FLUSH BINARY LOGS`);
        const closed = serverFiles(server).at(-2)?.name as string;
        await waitFor(`${closed} is archived soon after the rotation`, () => archivedNames().includes(closed));
      }
      // Drop the replication connection: the service reconnects and goes on.
      const dump = server.sql("SELECT id FROM information_schema.PROCESSLIST WHERE COMMAND LIKE 'Binlog Dump%'").trim();
      assert.match(dump, /^\d+$/, 'one dump connection');
      server.sql(`KILL ${dump}`);
      await waitFor('a warning says the stream ended and it tries again', () =>
        lines().some((l) => l.type === 'warning' && /trying again/.test(String(l.message))),
      );
      server.sql("INSERT INTO w.t VALUES (3000, 'after reconnect'); FLUSH BINARY LOGS");
      const afterReconnect = serverFiles(server).at(-2)?.name as string;
      await waitFor(`${afterReconnect} is archived after the reconnection`, () => archivedNames().includes(afterReconnect));
      const stored = await records(repoPath, stream);
      assert.deepEqual(new Set(stored.map((r) => r.name)), new Set(archivedNames()), 'every result has its record');
      for (const r of stored) {
        const original = await readFile(join(server.datadir, r.name)).catch(() => undefined);
        if (original) assert.ok((await archivedBytes(repoPath, stream, r.key)).equals(original), `${r.name} streamed byte for byte`);
      }
      assert.equal(new Set(archivedNames()).size, archivedNames().length, 'no file archived twice');
    } finally {
      child.kill('SIGTERM');
    }
    assert.equal(await exited, 0, stderr);
    assert.deepEqual(await readdir(spool), [], 'the spool is removed on exit');
  });
});
