import { spawnSync } from 'node:child_process';
import { chmodSync, chownSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { postgresWorkDir, startPostgres, type PostgresServer } from '../helpers/postgres.ts';
import { CommandFailed, ensureCommand, runTimed, type Timed } from './measure.ts';
import { CAIRN_CLI } from './tools.ts';

/**
 * The PITR section of `npm run bench`: a busy PostgreSQL server archiving its
 * WAL, through `cairn wal-push` and through pgBackRest's `archive-push` with
 * archive-async (its fastest mode), then a replay restore to a time near the
 * end of the run. The same server settings and the same pgbench load for both,
 * one after the other. Printed: segments archived per second, the archive
 * backlog (.ready files in pg_wal/archive_status, sampled: its maximum and
 * what was left when pgbench stopped), and the time to restore and replay.
 * Timing never fails the run; a command that fails, or a restore that does
 * not stop at its target, does.
 */

const BIN = '/usr/lib/postgresql/15/bin';
const PASSWORD = 'cairn-bench-password';
const asRoot = process.getuid?.() === 0;

export interface PitrOptions {
  /** pgbench -T, seconds. */
  seconds: number;
  /** pgbench -i -s. */
  scale: number;
  logDir: string;
}

export interface PitrMeasurement {
  tool: string;
  /** Segments archived from the start of pgbench until the backlog was empty. */
  segments: number;
  segmentsPerSecond: number;
  /** Seconds from the end of pgbench until every ready segment was archived. */
  drainSeconds: number;
  backlogMax: number;
  backlogAtEnd: number;
  archiveFailures: number;
  baseBackupSeconds: number;
  /** Restore command, then the server's replay until it promoted. */
  restoreSeconds: number;
  replaySeconds: number;
  repositoryBytes: number;
  /** How the restored server got its segments, when the tool says (cairn: taken from the staging directory with mv, or fetched through wal-fetch). */
  replayPath?: string | undefined;
}

interface Archiver {
  readonly name: string;
  readonly repo: string;
  serverEnv: Record<string, string>;
  archiveCommand: string;
  /** After the server is up: repositories, stanzas. */
  prepare(server: PostgresServer): Promise<void>;
  baseBackup(server: PostgresServer): Promise<Timed>;
  /** Writes a data directory at `dir` that recovers to `time` when started. */
  restore(time: string, dir: string): Promise<Timed>;
  /** After replay: how the segments reached the server, when the tool tells. */
  replayPath?(): string | undefined;
  cleanup(): void;
}

function asPostgres(argv: string[]): [string, string[]] {
  return asRoot ? ['runuser', ['-u', 'postgres', '--', ...argv]] : [argv[0] as string, argv.slice(1)];
}

function giveToPostgres(path: string): void {
  if (asRoot) spawnSync('chown', ['-R', 'postgres:', path]);
}

class CairnArchiver implements Archiver {
  readonly name = 'cairn';
  readonly repo: string;
  readonly serverEnv: Record<string, string>;
  readonly archiveCommand = `${process.execPath} ${CAIRN_CLI} wal-push %p`;
  private readonly logDir: string;
  private seq = 0;

  constructor(work: string, logDir: string) {
    this.repo = join(work, 'cairn-repo');
    this.logDir = logDir;
    this.serverEnv = {
      CAIRN_REPOSITORY: this.repo,
      CAIRN_PASSWORD: PASSWORD,
      CAIRN_SPOOL_DIR: join(work, 'cairn-spool'),
      CAIRN_WAL_DAEMON_IDLE: '600',
    };
  }

  private run(label: string, args: string[], env: Record<string, string> = {}): Promise<Timed> {
    return runTimed(process.execPath, [CAIRN_CLI, '--json', ...args], {
      env: { ...this.serverEnv, ...env },
      logPrefix: join(this.logDir, `cairn-${++this.seq}-${label}`),
    });
  }

  async prepare(): Promise<void> {
    await this.run('init', ['init']);
    // archive_command runs as the server's user.
    giveToPostgres(this.repo);
  }

  baseBackup(server: PostgresServer): Promise<Timed> {
    return this.run(
      'backup',
      ['backup', '--engine', 'postgres', '--db-host', '127.0.0.1', '--db-port', String(server.port), '--db-user', 'postgres'],
      { CAIRN_DB_PASSWORD: server.password },
    );
  }

  restore(time: string, dir: string): Promise<Timed> {
    return this.run('restore', ['restore', '--to-time', time, '--target', dir, ...(asRoot ? ['--owner', 'postgres'] : [])]);
  }

  /** The WAL daemon's counters (it serves the archiving server and the restored one): mv from the staging directory vs wal-fetch. */
  replayPath(): string | undefined {
    const [cmd, args] = asPostgres([process.execPath, CAIRN_CLI, '--json', 'wal-daemon', '--status']);
    const out = spawnSync(cmd, args, { env: { ...process.env, ...this.serverEnv }, encoding: 'utf8' }).stdout;
    for (const line of out.split('\n')) {
      if (!line.startsWith('{')) continue;
      const status = (JSON.parse(line) as { running?: Array<{ takenFromStage?: number; fetched?: number }> }).running?.[0];
      if (status)
        return `${status.takenFromStage ?? 0} segments taken from the staging directory with mv, ${status.fetched ?? 0} through cairn wal-fetch`;
    }
    return undefined;
  }

  cleanup(): void {
    const [cmd, args] = asPostgres([process.execPath, CAIRN_CLI, 'wal-daemon', '--stop']);
    spawnSync(cmd, args, { env: { ...process.env, ...this.serverEnv }, stdio: 'ignore' });
  }
}

class PgBackRestArchiver implements Archiver {
  readonly name = 'pgbackrest';
  readonly repo: string;
  readonly serverEnv: Record<string, string> = {};
  readonly archiveCommand: string;
  private readonly work: string;
  private readonly config: string;
  private readonly logDir: string;
  private seq = 0;

  constructor(work: string, logDir: string) {
    this.work = join(work, 'pgbackrest');
    this.repo = join(this.work, 'repo');
    this.config = join(this.work, 'pgbackrest.conf');
    this.logDir = logDir;
    this.archiveCommand = `pgbackrest --config=${this.config} --stanza=bench archive-push %p`;
  }

  private run(label: string, args: string[]): Promise<Timed> {
    const [cmd, argv] = asPostgres(['pgbackrest', `--config=${this.config}`, '--stanza=bench', ...args]);
    return runTimed(cmd, argv, { logPrefix: join(this.logDir, `pgbackrest-${++this.seq}-${label}`) });
  }

  async prepare(server: PostgresServer): Promise<void> {
    for (const dir of ['repo', 'spool', 'log', 'lock']) mkdirSync(join(this.work, dir), { recursive: true });
    // Like for like: encrypted and zstd-compressed as Cairn's archive is; async push and get, two processes.
    writeFileSync(
      this.config,
      [
        '[global]',
        `repo1-path=${this.repo}`,
        'repo1-cipher-type=aes-256-cbc',
        `repo1-cipher-pass=${PASSWORD}`,
        'compress-type=zst',
        'archive-async=y',
        `spool-path=${join(this.work, 'spool')}`,
        'process-max=2',
        `log-path=${join(this.work, 'log')}`,
        `lock-path=${join(this.work, 'lock')}`,
        'log-level-console=warn',
        'log-level-file=info',
        'start-fast=y',
        '',
        '[bench]',
        `pg1-path=${server.dataDir}`,
        `pg1-port=${server.port}`,
        `pg1-socket-path=${server.socketDir}`,
        'pg1-user=postgres',
        '',
      ].join('\n'),
    );
    giveToPostgres(this.work);
    await this.run('stanza-create', ['stanza-create']);
  }

  baseBackup(): Promise<Timed> {
    return this.run('backup', ['--type=full', 'backup']);
  }

  restore(time: string, dir: string): Promise<Timed> {
    return this.run('restore', [
      `--pg1-path=${dir}`,
      '--type=time',
      `--target=${time.replace('T', ' ').replace('Z', '+00')}`,
      '--target-action=promote',
      'restore',
    ]);
  }

  cleanup(): void {
    // archive-async leaves a background process until its queue is empty; it ends by itself.
  }
}

/** What is missing to run the section, or undefined. */
export function pitrPrerequisites(): string | undefined {
  const missing = ['initdb', 'postgres', 'pg_waldump', 'pg_basebackup'].filter((b) => spawnSync('test', ['-x', join(BIN, b)]).status !== 0);
  if (missing.length > 0 && !ensureCommand(join(BIN, 'initdb'), 'postgresql'))
    return `PostgreSQL 15 is missing (${missing.join(', ')}): apt-get install postgresql`;
  if (!ensureCommand('pgbench', 'postgresql-contrib') || !ensureCommand('psql', 'postgresql-client'))
    return 'pgbench or psql is missing: apt-get install postgresql-contrib postgresql-client';
  return undefined;
}

function readyCount(server: PostgresServer): number {
  try {
    return readdirSync(join(server.dataDir, 'pg_wal', 'archive_status')).filter((f) => f.endsWith('.ready')).length;
  } catch {
    return 0;
  }
}

function archiverStats(server: PostgresServer): { archived: number; failed: number } {
  const [archived, failed] = server.sql('SELECT archived_count, failed_count FROM pg_stat_archiver').trim().split('|').map(Number);
  return { archived: archived ?? 0, failed: failed ?? 0 };
}

/** Until nothing is ready to archive (after closing the current segment), or the limit. */
async function drain(server: PostgresServer, limitSeconds: number): Promise<number> {
  const started = performance.now();
  server.sql('SELECT pg_switch_wal()');
  while (readyCount(server) > 0) {
    if ((performance.now() - started) / 1000 > limitSeconds)
      throw new CommandFailed(
        `the archive did not catch up within ${limitSeconds} s (${readyCount(server)} segments still ready): ${server.serverLog().slice(-2000)}`,
      );
    await sleep(100);
  }
  return (performance.now() - started) / 1000;
}

function pgbench(server: PostgresServer, args: string[], logPrefix: string): Promise<Timed> {
  return runTimed('pgbench', ['-h', '127.0.0.1', '-p', String(server.port), '-U', 'postgres', ...args, 'bench'], {
    env: { PGPASSWORD: server.password },
    logPrefix,
  });
}

async function measure(archiver: Archiver, options: PitrOptions, restoreRoot: string): Promise<PitrMeasurement> {
  const server = await startPostgres({
    settings: {
      wal_level: 'replica',
      archive_mode: 'on',
      archive_command: archiver.archiveCommand,
      // Small: frequent checkpoints, full-page writes, many segments.
      max_wal_size: '64MB',
      min_wal_size: '32MB',
    },
    env: archiver.serverEnv,
  });
  const restoreDir = join(restoreRoot, `${archiver.name}-restored`);
  let restored: PostgresServer | undefined;
  try {
    await archiver.prepare(server);
    server.sql('CREATE DATABASE bench');
    await pgbench(server, ['-i', '-s', String(options.scale), '-q'], join(options.logDir, `${archiver.name}-pgbench-init`));
    await drain(server, 600);
    const base = await archiver.baseBackup(server);
    await drain(server, 600);

    const before = archiverStats(server);
    let backlogMax = 0;
    const sampler = setInterval(() => (backlogMax = Math.max(backlogMax, readyCount(server))), 250);
    const load = await pgbench(
      server,
      ['-c', '4', '-j', '2', '-T', String(options.seconds), '-n'],
      join(options.logDir, `${archiver.name}-pgbench-run`),
    );
    clearInterval(sampler);
    const backlogAtEnd = readyCount(server);
    backlogMax = Math.max(backlogMax, backlogAtEnd);
    // Near the end of the load, on the server's clock: what a restore after an accident would ask for.
    const target = server.sql(`SELECT to_char((now() - interval '3 seconds') AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')`).trim();
    const drainSeconds = await drain(server, 900);
    const after = archiverStats(server);
    const segments = after.archived - before.archived;

    mkdirSync(restoreDir, { mode: 0o700 });
    chmodSync(restoreDir, 0o700);
    // pgBackRest restores as postgres, into postgres's directory; cairn restores as root (--owner postgres) only into root's own.
    if (asRoot && archiver.name !== 'cairn')
      chownSync(
        restoreDir,
        Number(spawnSync('id', ['-u', 'postgres'], { encoding: 'utf8' }).stdout),
        Number(spawnSync('id', ['-g', 'postgres'], { encoding: 'utf8' }).stdout),
      );
    const restore = await archiver.restore(target, restoreDir);
    const replayStarted = performance.now();
    restored = await startPostgres({ dataDir: restoreDir, env: archiver.serverEnv });
    while (restored.sql('SELECT pg_is_in_recovery()').trim() !== 'f') {
      if ((performance.now() - replayStarted) / 1000 > 900) throw new CommandFailed(`${archiver.name}: replay did not finish in 900 s`);
      await sleep(100);
    }
    const replaySeconds = (performance.now() - replayStarted) / 1000;
    const replayPath = archiver.replayPath?.();
    // The restored data must end at the target: the last pgbench transaction at or before it, within a second or two.
    const last = restored
      .sql(`SELECT extract(epoch FROM max(mtime) AT TIME ZONE current_setting('TimeZone'))::float8 FROM pgbench_history`, 'bench')
      .trim();
    const lastMs = Number(last) * 1000;
    const targetMs = Date.parse(target);
    if (!(lastMs <= targetMs + 1 && lastMs > targetMs - 5000))
      throw new CommandFailed(`${archiver.name}: the restored data ends at ${new Date(lastMs).toISOString()}, not at the target ${target}`);
    return {
      tool: archiver.name,
      segments,
      segmentsPerSecond: segments / (load.seconds + drainSeconds),
      drainSeconds,
      backlogMax,
      backlogAtEnd,
      archiveFailures: after.failed - before.failed,
      baseBackupSeconds: base.seconds,
      restoreSeconds: restore.seconds + replaySeconds,
      replaySeconds,
      repositoryBytes: Number(spawnSync('du', ['-sb', archiver.repo], { encoding: 'utf8' }).stdout.split('\t')[0]),
      replayPath,
    };
  } finally {
    await restored?.stop();
    archiver.cleanup();
    await server.stop();
    rmSync(restoreDir, { recursive: true, force: true });
  }
}

/** Runs the section; prints and returns its figures. */
export async function pitrBench(options: PitrOptions): Promise<PitrMeasurement[]> {
  const peer = ensureCommand('pgbackrest', 'pgbackrest');
  if (!peer) console.log('pgbackrest is missing and cannot be installed (Debian package pgbackrest): only cairn is measured');
  const work = await postgresWorkDir();
  // As root, cairn restores only under directories root owns (the work dir is postgres's): a root-owned parent the server can enter.
  const restoreRoot = mkdtempSync(join(tmpdir(), 'cairn-pitr-restore-'));
  chmodSync(restoreRoot, 0o755);
  mkdirSync(options.logDir, { recursive: true });
  console.log(
    `\nPITR: pgbench -i -s ${options.scale}, base backup, then pgbench -c 4 -T ${options.seconds} (max_wal_size 64MB) archived by each tool; then a restore to 3 s before the end, replayed until the server promotes`,
  );
  const results: PitrMeasurement[] = [];
  try {
    const archivers: Archiver[] = [
      new CairnArchiver(work, options.logDir),
      ...(peer ? [new PgBackRestArchiver(work, options.logDir)] : []),
    ];
    for (const archiver of archivers) {
      const m = await measure(archiver, options, restoreRoot);
      results.push(m);
      console.log(
        `  ${m.tool.padEnd(10)} ${m.segments} segments, ${m.segmentsPerSecond.toFixed(2)} segments/s (drained ${m.drainSeconds.toFixed(1)} s after the load); ` +
          `backlog max ${m.backlogMax}, at the end ${m.backlogAtEnd}; ${m.archiveFailures} archive failures; base backup ${m.baseBackupSeconds.toFixed(1)} s; ` +
          `restore to the target ${m.restoreSeconds.toFixed(1)} s (replay ${m.replaySeconds.toFixed(1)} s${m.replayPath ? `: ${m.replayPath}` : ''}); repository ${(m.repositoryBytes / 1e6).toFixed(0)} MB`,
      );
    }
  } finally {
    rmSync(work, { recursive: true, force: true });
    rmSync(restoreRoot, { recursive: true, force: true });
  }
  const [cairn, peerResult] = results;
  if (cairn && peerResult) {
    console.log(
      `  cairn / pgbackrest: segments/s ${(cairn.segmentsPerSecond / peerResult.segmentsPerSecond).toFixed(2)}×, backlog max ${cairn.backlogMax} vs ${peerResult.backlogMax}, ` +
        `restore time ${(cairn.restoreSeconds / peerResult.restoreSeconds).toFixed(2)}× (aim: ≥ 1× the rate, ≤ the backlog, ≤ 1× the time)`,
    );
  }
  return results;
}
