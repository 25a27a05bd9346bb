import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmod, chown, mkdtemp, readdir, readFile, rm, unlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { lastOfType, runCli } from '../../helpers/cli.ts';
import { PASSPHRASE } from '../../helpers/repo.ts';
import type { DaemonStatus } from '../../../agent/pitr/wal-protocol.ts';
import {
  missingPostgres,
  postgresWorkDir,
  runServerCairn,
  serverCairn,
  startPostgres,
  type PostgresServer,
  type ServerCairn,
} from '../../helpers/postgres.ts';

const BIN = '/usr/lib/postgresql/15/bin';
const skip =
  missingPostgres() ??
  (spawnSync('sh', ['-c', `command -v pg_basebackup && test -x ${BIN}/pg_waldump`]).status === 0
    ? undefined
    : 'needs pg_basebackup and pg_waldump: apt-get install postgresql postgresql-client');
const asRoot = process.getuid?.() === 0;
const owner = asRoot ? ['--owner', 'postgres'] : [];

interface Row {
  id: number;
  committed: string;
}

/** Rows with their commit times (track_commit_timestamp), as ISO strings with microseconds. */
function rows(server: PostgresServer): Row[] {
  const out = server.sql(
    'SELECT id, to_char(pg_xact_commit_timestamp(xmin) AT TIME ZONE \'UTC\', \'YYYY-MM-DD"T"HH24:MI:SS.US"Z"\') FROM t ORDER BY id',
    'app',
  );
  return out
    .trim()
    .split('\n')
    .filter(Boolean)
    .map((line) => {
      const [id, committed] = line.split('|');
      return { id: Number(id), committed: committed as string };
    });
}

function ids(server: PostgresServer): number[] {
  return server.sql('SELECT id FROM t ORDER BY id', 'app').trim().split('\n').filter(Boolean).map(Number);
}

/** A time halfway between two commits (microsecond precision, as PostgreSQL compares). */
function between(a: string, b: string): string {
  const us = (t: string): bigint => BigInt(Date.parse(t.replace(/\.\d+Z$/, 'Z'))) * 1000n + BigInt(/\.(\d{6})Z$/.exec(t)?.[1] ?? '0');
  const mid = (us(a) + us(b)) / 2n;
  const ms = mid / 1000n;
  const iso = new Date(Number(ms)).toISOString();
  return iso.replace(/\.(\d{3})Z$/, `.$1${(mid % 1000n).toString().padStart(3, '0')}Z`);
}

describe('PostgreSQL point-in-time recovery from the WAL archive', { skip }, () => {
  let server: PostgresServer;
  let cairn: ServerCairn | undefined;
  let pgWork: string;
  /** Restore targets: as root, a restore refuses a target under a directory another user owns (postgres owns pgWork). */
  let restoreRoot: string;
  let env: Record<string, string>;
  let serverEnv: Record<string, string>;
  const rounds: Row[][] = [];
  const roundSegments: string[] = [];
  let stream: string;

  async function waitArchived(segment: string): Promise<void> {
    const deadline = Date.now() + 30_000;
    for (;;) {
      const [last, failed] = server.sql('SELECT last_archived_wal, failed_count FROM pg_stat_archiver').trim().split('|');
      if (last && last >= segment) return;
      if (Date.now() > deadline)
        assert.fail(`${segment} was not archived (last ${last}, ${failed} failures): ${server.serverLog().slice(-3000)}`);
      await sleep(100);
    }
  }

  async function restoreAndStart(time: string, dir: string, settings?: Record<string, string>): Promise<PostgresServer> {
    // The restore writes restore_command naming the program that ran it: the one the server's user can run.
    const restored = await runServerCairn(cairn as ServerCairn, ['restore', '--to-time', time, '--target', dir, ...owner], env);
    assert.equal(restored.code, 0, restored.stderr);
    const summary = lastOfType(restored, 'summary') as { replay?: string; logFiles?: number };
    assert.match(summary.replay ?? '', /start the server/);
    const copy = await startPostgres({ dataDir: dir, env: serverEnv, settings });
    const deadline = Date.now() + 60_000;
    while (copy.sql('SELECT pg_is_in_recovery()').trim() !== 'f') {
      if (Date.now() > deadline) assert.fail(`recovery did not finish: ${copy.serverLog().slice(-3000)}`);
      await sleep(100);
    }
    assert.match(
      copy.serverLog(),
      /recovery stopping before commit|recovery stopping after commit/,
      'replay stopped at the target, not at the end of the archive',
    );
    return copy;
  }

  /** The settings of a server that archives into the repository through wal-push. */
  function archiving(): Record<string, string> {
    return {
      wal_level: 'replica',
      archive_mode: 'on',
      archive_command: `${(cairn as ServerCairn).command} wal-push %p`,
      track_commit_timestamp: 'on',
    };
  }

  /** What the daemon serving the server's user reports (run as that user, with the server's spool). */
  function daemonStatus(): DaemonStatus | undefined {
    const program = [cairn?.node ?? process.execPath, cairn?.script ?? '', '--json', 'wal-daemon', '--status'];
    const argv = asRoot ? ['runuser', '-u', 'postgres', '--', ...program] : program;
    const r = spawnSync(argv[0] as string, argv.slice(1), { env: { ...process.env, ...serverEnv }, encoding: 'utf8', cwd: pgWork });
    const line = r.stdout
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as { type?: string; running?: DaemonStatus[] })
      .find((l) => l.type === 'wal-daemon');
    return line?.running?.find((s) => s.stream === stream);
  }

  before(async () => {
    pgWork = await postgresWorkDir();
    restoreRoot = await mkdtemp(join(tmpdir(), 'cairn-pgrestore-'));
    await chmod(restoreRoot, 0o755);
    cairn = await serverCairn();
    const repo = join(pgWork, 'repo');
    env = { CAIRN_REPOSITORY: repo, CAIRN_PASSWORD: PASSPHRASE };
    assert.equal((await runCli(['init'], env)).code, 0);
    // The server (and so archive_command) runs as postgres: the repository must be its to write.
    if (asRoot) spawnSync('chown', ['-R', 'postgres:', repo]);
    serverEnv = { ...env, CAIRN_SPOOL_DIR: join(pgWork, 'spool'), CAIRN_WAL_DAEMON_IDLE: '120' };
    server = await startPostgres({ settings: archiving(), env: serverEnv });
    env.CAIRN_DB_PASSWORD = server.password;
    server.sql('CREATE DATABASE app');
    server.sql('CREATE TABLE t (id serial PRIMARY KEY, round int NOT NULL, body text)', 'app');
    stream = `pg-${server.sql('SELECT system_identifier FROM pg_control_system()').trim()}`;
  });
  after(async () => {
    if (server) {
      // The daemon runs as postgres, with the server's spool: stop it as that user.
      const program = [cairn?.node ?? process.execPath, cairn?.script ?? '', 'wal-daemon', '--stop'];
      const stop = asRoot ? ['runuser', '-u', 'postgres', '--', ...program] : program;
      spawnSync(stop[0] as string, stop.slice(1), { env: { ...process.env, ...serverEnv }, stdio: 'ignore', cwd: pgWork });
      await server.stop();
    }
    await cairn?.remove();
    if (pgWork) await rm(pgWork, { recursive: true, force: true });
    if (restoreRoot) await rm(restoreRoot, { recursive: true, force: true });
  });

  it('restores to a time between two rounds of writes: exactly the rows committed by then; a removed segment is a gap that refuses later times', async () => {
    const backup = await runCli(
      ['backup', '--engine', 'postgres', '--db-host', '127.0.0.1', '--db-port', String(server.port), '--db-user', 'postgres'],
      env,
    );
    assert.equal(backup.code, 0, backup.stderr);
    const metadata = (lastOfType(backup, 'summary') as { engineMetadata: { systemIdentifier?: string } }).engineMetadata;
    assert.equal(`pg-${metadata.systemIdentifier ?? ''}`, stream, 'the snapshot names its WAL stream');

    for (let round = 1; round <= 4; round++) {
      const before = new Set(rows(server).map((r) => r.id));
      server.sql(
        `BEGIN; INSERT INTO t (round, body) SELECT ${round}, md5(g::text) FROM generate_series(1, 3) g; COMMIT; INSERT INTO t (round, body) VALUES (${round}, 'single');`,
        'app',
      );
      rounds.push(rows(server).filter((r) => !before.has(r.id)));
      const segment = server.sql('SELECT pg_walfile_name(pg_switch_wal())').trim();
      roundSegments.push(segment);
      await waitArchived(segment);
    }
    const all = rounds.flat();
    assert.equal(all.length, 16);

    const t1 = between((rounds[1]?.at(-1) as Row).committed, (rounds[2]?.[0] as Row).committed);
    const expected = all.filter((r) => r.committed <= t1).map((r) => r.id);
    assert.equal(expected.length, 8, 'two rounds before the target');

    // Put in service, archiving into the same stream: it promotes to timeline 2 and archives 00000002.history.
    const files = join(pgWork, 'repo', 'logs', stream, 'files');
    const first = await restoreAndStart(t1, join(restoreRoot, 'restored-1'), archiving());
    try {
      assert.deepEqual(ids(first), expected, `rows committed at or before ${t1}`);
      const deadline = Date.now() + 30_000;
      while (!(await readdir(files)).includes('00000002.history')) {
        if (Date.now() > deadline) assert.fail(`00000002.history was not archived: ${first.serverLog().slice(-3000)}`);
        await sleep(100);
      }
    } finally {
      await first.stop();
    }

    // Round 3's segment disappears from the repository: a gap between rounds 2 and 4.
    const lost = roundSegments[2] as string;
    assert.ok((await readdir(files)).includes(lost));
    await unlink(join(files, lost));

    const status = await runCli(['pitr', 'status', '--json'], env);
    assert.equal(status.code, 0, status.stderr);
    const report = (
      lastOfType(status, 'pitr-status') as { streams: Array<{ stream: string; gaps: Array<{ missing: string; cause: string }> }> }
    ).streams.find((s) => s.stream === stream);
    assert.ok(report, status.stdout);
    assert.equal(report.gaps.length, 1, JSON.stringify(report.gaps));
    assert.match(report.gaps[0]?.missing ?? '', new RegExp(lost));
    assert.match(report.gaps[0]?.cause ?? '', /no longer in the repository/);

    const late = between((rounds[3]?.[0] as Row).committed, (rounds[3]?.at(-1) as Row).committed);
    const refused = await runServerCairn(
      cairn as ServerCairn,
      ['restore', '--to-time', late, '--target', join(restoreRoot, 'refused'), ...owner],
      env,
    );
    assert.equal(refused.code, 13, refused.stderr);
    assert.match(refused.stderr, new RegExp(`gap.*${lost}`));
    assert.deepEqual(await readdir(join(restoreRoot, 'refused')).catch(() => []), [], 'nothing was restored');

    // The storage fails on 00000002.history (unreadable, as a 5xx or a cut connection would) while the next
    // restore promotes: PostgreSQL probes it to choose a new timeline. Taken as "not archived", it would pick
    // timeline 2 again, whose history file the archive then refuses for good. wal-fetch's failure stops it.
    const t0 = between((rounds[0]?.at(-1) as Row).committed, (rounds[1]?.[0] as Row).committed);
    const history = join(files, '00000002.history');
    await chmod(history, 0o000);
    const restored = await runServerCairn(
      cairn as ServerCairn,
      ['restore', '--to-time', t0, '--target', join(restoreRoot, 'restored-2'), ...owner],
      env,
    );
    assert.equal(restored.code, 0, restored.stderr);
    // It may take connections while it replays (then it is gone when it promotes), or stop before that.
    const log = await startPostgres({ dataDir: join(restoreRoot, 'restored-2'), env: serverEnv }).then(
      async (copy) => {
        const until = Date.now() + 60_000;
        try {
          while (copy.sql('SELECT pg_is_in_recovery()').trim() === 't' && Date.now() < until) await sleep(100);
        } catch {
          // gone: what its log says is checked below
        }
        await copy.stop();
        return copy.serverLog();
      },
      (error: unknown) => String(error),
    );
    assert.match(log, /FATAL: +could not restore file "00000002\.history" from archive: child process exited with exit code 200/);
    await chmod(history, 0o644);
    // Started again once the storage answers: recovery goes on, and the new timeline is 3.
    const second = await startPostgres({ dataDir: join(restoreRoot, 'restored-2'), env: serverEnv });
    try {
      const until = Date.now() + 60_000;
      while (second.sql('SELECT pg_is_in_recovery()').trim() !== 'f') {
        if (Date.now() > until) assert.fail(`recovery did not finish: ${second.serverLog().slice(-3000)}`);
        await sleep(100);
      }
      assert.equal(second.sql('SELECT timeline_id FROM pg_control_checkpoint()').trim(), '3', 'a timeline not yet in the archive');
      assert.deepEqual(
        ids(second),
        all.filter((r) => r.committed <= t0).map((r) => r.id),
        'a time before the gap still recovers',
      );
    } finally {
      await second.stop();
    }
  });

  it('replays to the target with most segments taken by mv, never a planted or partial file, and removes the staging directory', async (t) => {
    // After the first test's gap: a new base backup, and a table of its own.
    server.sql('CREATE TABLE s (id int PRIMARY KEY, body text)', 'app');
    const backup = await runCli(
      ['backup', '--engine', 'postgres', '--db-host', '127.0.0.1', '--db-port', String(server.port), '--db-user', 'postgres'],
      env,
    );
    assert.equal(backup.code, 0, backup.stderr);

    // One row per segment; the target falls after row 14 of 16.
    const ROUNDS = 16;
    let last = '';
    let target = '';
    for (let round = 1; round <= ROUNDS; round++) {
      server.sql(`INSERT INTO s VALUES (${round}, md5('${round}'))`, 'app');
      if (round === 14) {
        await sleep(20);
        target = new Date().toISOString();
        await sleep(20);
      }
      last = server.sql('SELECT pg_walfile_name(pg_switch_wal())').trim();
    }
    const deadline = Date.now() + 60_000;
    while ((server.sql('SELECT last_archived_wal FROM pg_stat_archiver').trim() || '') < last) {
      if (Date.now() > deadline) assert.fail(`${last} was not archived: ${server.serverLog().slice(-3000)}`);
      await sleep(100);
    }

    const dir = join(restoreRoot, 'restored-staged');
    const restored = await runServerCairn(cairn as ServerCairn, ['restore', '--to-time', target, '--target', dir, ...owner], env);
    assert.equal(restored.code, 0, restored.stderr);
    const stage = (await readdir(dir)).find((n) => n.startsWith('cairn-wal-stage.'));
    assert.ok(stage, 'the restore made a staging directory in the data directory');

    // Planted before the server starts: garbage under the name of the first segment replay needs, owned by another
    // user, and a truncated temporary file under the next one's. Taking either would break replay.
    const first = /\(file ([0-9A-F]{24})\)/.exec(await readFile(join(dir, 'backup_label'), 'utf8'))?.[1] ?? '';
    assert.match(first, /^[0-9A-F]{24}$/);
    const next = `${first.slice(0, 16)}${(parseInt(first.slice(16), 16) + 1).toString(16).toUpperCase().padStart(8, '0')}`;
    if (asRoot) {
      await writeFile(join(dir, stage, first), Buffer.alloc(16 << 20, 0x5a));
      await chown(join(dir, stage, first), 65534, 65534);
    }
    await writeFile(join(dir, stage, `${next}.cairn-0a1b2c3d4e5f.tmp`), Buffer.alloc(4096, 0x5a));
    if (asRoot) await chown(join(dir, stage, `${next}.cairn-0a1b2c3d4e5f.tmp`), uidOf('postgres'), -1);

    const before = daemonStatus();
    const copy = await startPostgres({ dataDir: dir, env: serverEnv });
    try {
      const until = Date.now() + 60_000;
      while (copy.sql('SELECT pg_is_in_recovery()').trim() !== 'f') {
        if (Date.now() > until) assert.fail(`recovery did not finish: ${copy.serverLog().slice(-3000)}`);
        await sleep(100);
      }
      assert.match(copy.serverLog(), /recovery stopping before commit/);
      assert.deepEqual(
        copy.sql('SELECT id FROM s ORDER BY id', 'app').trim().split('\n').map(Number),
        Array.from({ length: 14 }, (_, i) => i + 1),
        'the rows committed by the target',
      );
      const restoredFiles = copy.serverLog().match(/restored log file "[0-9A-F]{24}" from archive/g) ?? [];
      assert.ok(restoredFiles.length >= 14, `segments replayed from the archive: ${restoredFiles.length}`);

      const status = daemonStatus();
      assert.ok(status, 'the daemon is still running');
      const taken = status.takenFromStage - (before?.takenFromStage ?? 0);
      const fetched = status.fetched - (before?.fetched ?? 0);
      t.diagnostic(`${restoredFiles.length} segments replayed: ${taken} taken with mv, ${fetched} fetched through cairn`);
      assert.ok(
        taken >= restoredFiles.length / 2 && taken > fetched,
        `most segments through mv: ${taken} taken from the staging directory, ${fetched} fetched through cairn, of ${restoredFiles.length}`,
      );
      // The end of recovery removed it; the daemon stops staging there.
      assert.equal((await readdir(dir)).filter((n) => n.startsWith('cairn-wal-stage.')).length, 0, 'staging directory removed');
      assert.equal(daemonStatus()?.stageDir, undefined);
    } finally {
      await copy.stop();
    }
  });
});

function uidOf(user: string): number {
  return Number(spawnSync('id', ['-u', user], { encoding: 'utf8' }).stdout.trim());
}
