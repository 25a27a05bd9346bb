import { spawn, type ChildProcess } from 'node:child_process';
import { chmod, lstat, mkdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { childEnvironment } from '../core/child-env.ts';
import { CairnError, DamagedError, errorMessage } from '../core/errors.ts';
import type { LogFileRecord } from '../core/log-archive.ts';
import { parseGtidState, splitPosition, type RecoveryTarget } from '../core/log-chain.ts';
import { ownerSpec } from '../process/owner.ts';
import { ProcessError, run, stream } from '../process/run.ts';
import { findStop, gtidStateAt, parseBinlog, type ReplayFile, type ReplayStop, type StopTarget } from './binlog-parser.ts';
import type { ReplayContext, ReplayResult } from './replay.ts';

/**
 * MariaDB point-in-time recovery (docs/pitr.md): the base snapshot is
 * restored and prepared in ctx.directory; this replays the archived binlogs
 * from the snapshot's binlog position to the target through a private
 * `mariadbd` on that datadir (no network, no grant checks, no event scheduler,
 * no replication), with binary logging on and the binlog GTID state set to the
 * base's, so the replayed transactions keep their GTIDs and the restored
 * server's binlog continues the history. Then it shuts the server down
 * cleanly: the datadir is ready to start.
 */
export async function replayMariadb(ctx: ReplayContext): Promise<ReplayResult> {
  const plan = ctx.plan;
  const target = stopTarget(plan.target);
  const records = neededFiles(plan.files, target);
  if (records.length === 0) throw new CairnError('Cairn.NotFound', `the replay plan for ${plan.describe} names no binlog file`);
  const logDir = join(ctx.tempDir, 'binlogs');
  await mkdir(logDir, { recursive: true, mode: 0o700 });
  const files: Array<ReplayFile & { path: string }> = [];
  let bytes = 0;
  for (const [i, record] of records.entries()) {
    ctx.signal?.throwIfAborted();
    const data = await ctx.archive.getFile(record.key);
    if (ctx.archive.hash(data) !== record.hash)
      throw new DamagedError(`the archived binlog ${record.name} (${record.key}) does not match its record's hash`);
    // Index-prefixed: two lines may hold files of one name, and mariadb-binlog reads them in the order given.
    const path = join(logDir, `${String(i).padStart(6, '0')}-${record.name}`);
    await writeFile(path, data, { mode: 0o600 });
    files.push({ name: record.name, info: parseBinlog(data, record.name), path });
    bytes += data.length;
  }
  const startPosition = plan.window.startPosition ?? (files[0] as ReplayFile).info.startPosition;
  const stop = findStop(files, startPosition, target);
  refuseCutTransactions(files.slice(0, stop.fileIndex + 1), stop);
  const baseGtid = gtidStateAt((files[0] as ReplayFile).info, startPosition);
  ctx.progress.warn(
    `replaying ${stop.transactions} transaction(s) from ${stop.fileIndex + 1} binlog file(s) (${records[0]?.name}:${startPosition} to ${files[stop.fileIndex]?.name}:${stop.position}) to ${plan.describe}`,
  );

  const server = await PrivateServer.start(ctx, {
    logBin: binlogBasename(plan.window.snapshot.engineMetadata.binlogFile, records[0]?.name as string),
    serverId: (files[stop.fileIndex] as ReplayFile).info.serverId,
  });
  try {
    // The restored datadir has no binlog of its own: give the new one the base's state, as if it continued the old.
    await server.sql(`RESET MASTER; SET GLOBAL gtid_binlog_state = '${baseGtid}'`);
    if (stop.transactions > 0)
      await pipeBinlogs(
        ctx,
        server,
        files.slice(0, stop.fileIndex + 1).map((f) => f.path),
        startPosition,
        stop,
      );
    const state = (await server.sql('SELECT @@GLOBAL.gtid_binlog_state')).trim();
    if (!sameGtidState(state, stop.endGtid)) {
      throw new CairnError(
        'Cairn.Failure',
        `after the replay the restored server's GTID state is ${state || '(empty)'}, but the binlogs lead to ${stop.endGtid || '(empty)'}`,
        {
          hint: 'some replayed transactions did not take effect: see the messages above; the datadir in --target is not a faithful point-in-time copy',
        },
      );
    }
    await server.shutdown();
  } catch (error) {
    await server.kill();
    throw error;
  } finally {
    await server.restoreOwnership();
  }
  const last = stop.last ? `; the last replayed transaction is ${stop.last.gtid}, committed ${stop.last.time}` : '';
  return {
    summary: `replayed ${stop.transactions} transaction(s) from ${stop.fileIndex + 1} binlog file(s) to ${plan.describe}; GTID state ${stop.endGtid || '(empty)'}${last}`,
    files: files.length,
    bytes,
  };
}

function stopTarget(target: RecoveryTarget): StopTarget {
  if (target.time) return { time: target.time };
  if (target.gtid) return { gtid: target.gtid };
  if (target.position) {
    const [file, position] = splitPosition(target.position);
    return { file, position };
  }
  throw new CairnError('Cairn.Usage', 'a MariaDB point-in-time restore needs --to-time, --to-gtid or --to-position');
}

/** The plan's files up to the one that holds the target (the plan lists the whole window for GTID and position targets). */
function neededFiles(files: readonly LogFileRecord[], target: StopTarget): LogFileRecord[] {
  let end = files.length;
  if ('file' in target) {
    const index = files.findIndex((f) => f.name === target.file);
    if (index >= 0) end = index + 1;
  } else if ('gtid' in target) {
    const goal = [...parseGtidState(target.gtid)].map(([key, seq]) => ({ domain: key.split('-')[0], seq }));
    const index = files.findIndex((f) =>
      [...parseGtidState(f.binlog?.endGtid ?? '')].some(([key, seq]) => goal.some((g) => g.domain === key.split('-')[0] && seq >= g.seq)),
    );
    if (index >= 0) end = index + 1;
  }
  return files.slice(0, end);
}

/**
 * A server that crashed leaves its binlog without ROTATE or STOP, perhaps
 * ending inside a transaction that crash recovery then rolled back. Replayed,
 * that half transaction would be committed by the next one's start: refuse
 * instead of restoring something that never existed.
 */
function refuseCutTransactions(files: readonly ReplayFile[], stop: ReplayStop): void {
  for (const [i, { name, info }] of files.entries()) {
    const last = info.transactions.at(-1);
    if (info.closed || !last || last.complete || (i === stop.fileIndex && last.position >= stop.position)) continue;
    throw new CairnError(
      'Cairn.Failure',
      `${name} ends inside transaction ${last.gtid} (the server stopped without closing the file, as in a crash); replaying past it is not supported`,
      {
        hint: `choose a target before ${last.time} (or --to-position ${name}:${last.position})`,
      },
    );
  }
}

function binlogBasename(snapshotFile: unknown, fallback: string): string {
  const name = typeof snapshotFile === 'string' ? snapshotFile : fallback;
  return name.replace(/\.\d+$/, '');
}

function sameGtidState(a: string, b: string): boolean {
  const x = parseGtidState(a);
  const y = parseGtidState(b);
  return x.size === y.size && [...x].every(([k, v]) => y.get(k) === v);
}

/** mariadb-binlog (from the base's position, to the stop) into the mariadb client on the private server; both must succeed. */
async function pipeBinlogs(ctx: ReplayContext, server: PrivateServer, paths: string[], start: number, stop: ReplayStop): Promise<void> {
  const decoder = stream(['mariadb-binlog', '--no-defaults', `--start-position=${start}`, `--stop-position=${stop.position}`, ...paths], {
    env: ctx.env,
    signal: ctx.signal,
    hint: "install mariadb-client (mariadb-binlog) of the server's version",
  });
  // --binary-mode: binlog statements may hold any bytes (\0, \r\n) that the client would otherwise interpret.
  const apply = run(['mariadb', '--no-defaults', `--socket=${server.socket}`, '-uroot', '--binary-mode', '--max-allowed-packet=1G'], {
    stdin: decoder.stdout,
    env: ctx.env,
    signal: ctx.signal,
  });
  const [decoded, applied] = await Promise.allSettled([decoder.done, apply]);
  for (const [what, outcome] of [
    ['mariadb-binlog (reading the archived binlogs)', decoded],
    ['mariadb (applying them to the restored datadir)', applied],
  ] as const) {
    if (outcome.status === 'rejected') {
      const reason: unknown = outcome.reason;
      if (reason instanceof CairnError && reason.code === 'Cairn.Cancelled') throw reason;
      throw new CairnError('Cairn.Failure', `the binlog replay failed in ${what}: ${errorMessage(reason)}`, {
        hint:
          reason instanceof ProcessError && /ERROR \d+/.test(reason.stderr)
            ? "the server refused a replayed statement: the base snapshot and the archived binlogs do not fit together (another server's binlogs in this stream?)"
            : 'see the message; the target directory holds the base snapshot and part of the replay, restore again into an empty directory',
        cause: reason,
      });
    }
  }
}

/** A mariadbd on the restored datadir that only this process can reach, run as the datadir's server user. */
class PrivateServer {
  readonly socket: string;
  private readonly child: ChildProcess;
  private readonly dir: string;
  private readonly ctx: ReplayContext;
  private readonly ownership: { uid: number; gid: number } | undefined;
  private readonly exited: Promise<number | null>;

  private constructor(ctx: ReplayContext, child: ChildProcess, dir: string, ownership: { uid: number; gid: number } | undefined) {
    this.ctx = ctx;
    this.child = child;
    this.dir = dir;
    this.socket = join(dir, 'mysqld.sock');
    this.ownership = ownership;
    this.exited = new Promise((resolve) => {
      if (child.exitCode !== null) resolve(child.exitCode);
      else child.once('exit', (code) => resolve(code));
    });
  }

  static async start(ctx: ReplayContext, options: { logBin: string; serverId: number }): Promise<PrivateServer> {
    const dir = join(ctx.tempDir, 'server');
    await mkdir(dir, { recursive: true, mode: 0o700 });
    const asUser: string[] = [];
    let ownership: { uid: number; gid: number } | undefined;
    if (process.getuid?.() === 0) {
      // mariadbd will not run as root; it runs as the user the datadir is for, who must own it and reach the socket.
      const user = ctx.owner ?? 'mysql';
      await run(['id', '-u', user], { env: ctx.env }).catch(() => {
        throw new CairnError('Cairn.Usage', `the replay runs mariadbd as ${user}, and there is no such user`, {
          hint: "give the database server's user with --owner",
        });
      });
      if (!ctx.owner) {
        const info = await stat(ctx.directory);
        ownership = { uid: info.uid, gid: info.gid };
      }
      await run(['chown', '-R', await ownerSpec(user, ctx.env), ctx.directory, dir], { env: ctx.env });
      await chmod(ctx.tempDir, 0o711);
      asUser.push(`--user=${user}`);
    }
    const cnf = join(ctx.directory, 'backup-my.cnf');
    // mariabackup's backup-my.cnf holds the InnoDB settings the datadir was written with (page size, undo tablespaces).
    const defaults = (await lstat(cnf).then(
      (s) => s.isFile(),
      () => false,
    ))
      ? `--defaults-file=${cnf}`
      : '--no-defaults';
    const args = [
      defaults,
      `--datadir=${ctx.directory}`,
      `--socket=${join(dir, 'mysqld.sock')}`,
      `--pid-file=${join(dir, 'mysqld.pid')}`,
      `--tmpdir=${dir}`,
      `--log-error=${join(dir, 'error.log')}`,
      '--skip-networking',
      '--skip-grant-tables',
      '--skip-slave-start',
      '--event-scheduler=DISABLED',
      `--log-bin=${options.logBin}`,
      `--server-id=${options.serverId}`,
      '--max-allowed-packet=1G',
      ...asUser,
    ];
    const child = spawn(await serverBinary(ctx.env), args, { env: childEnvironment(ctx.env, 'tool'), stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr?.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-8192)));
    const spawned = await new Promise<Error | undefined>((resolve) => {
      child.once('spawn', () => resolve(undefined));
      child.once('error', resolve);
    });
    if (spawned)
      throw new CairnError('Cairn.Failure', `could not start mariadbd: ${spawned.message}`, {
        hint: 'install mariadb-server (mariadbd) of the version the snapshot was taken with',
        cause: spawned,
      });
    const server = new PrivateServer(ctx, child, dir, ownership);
    for (let i = 0; ; i++) {
      if (child.exitCode !== null) {
        const log = await server.errorLog(stderr);
        const user = ctx.owner ?? (process.getuid?.() === 0 ? 'mysql' : 'this user');
        throw new CairnError('Cairn.Failure', `mariadbd did not start on the restored datadir: ${log}`, {
          hint: /Permission denied|Can't create/i.test(log)
            ? `the server runs as ${user}, who must be able to reach ${ctx.directory}: every directory above it needs execute permission for ${user}`
            : "the restored datadir is in --target; see the server's messages",
        });
      }
      if (
        await run(['mariadb', '--no-defaults', `--socket=${server.socket}`, '-uroot', '-e', 'SELECT 1'], { env: ctx.env }).then(
          () => true,
          () => false,
        )
      )
        break;
      if (ctx.signal?.aborted || i > 1200) {
        await server.kill();
        throw ctx.signal?.aborted
          ? (ctx.signal.reason as Error)
          : new CairnError('Cairn.Failure', 'mariadbd did not accept connections within 10 minutes (crash recovery of a large datadir?)');
      }
      await sleep(500);
    }
    return server;
  }

  async sql(statement: string): Promise<string> {
    const out = await run(['mariadb', '--no-defaults', `--socket=${this.socket}`, '-uroot', '-N', '-B', '-e', statement], {
      env: this.ctx.env,
      signal: this.ctx.signal,
    });
    return out.stdout;
  }

  /** A clean shutdown (InnoDB flushed, binlog closed): the datadir then starts without recovery. */
  async shutdown(): Promise<void> {
    await this.sql('SHUTDOWN');
    const code = await Promise.race([this.exited, sleep(600_000, undefined, { ref: false }).then(() => 'timeout' as const)]);
    if (code !== 0) {
      await this.kill();
      throw new CairnError(
        'Cairn.Failure',
        `the replay server did not shut down cleanly (${code === 'timeout' ? 'still running after 10 minutes' : `exit code ${code}`}): ${await this.errorLog('')}`,
      );
    }
  }

  async kill(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    this.child.kill('SIGTERM');
    const code = await Promise.race([this.exited, sleep(120_000, undefined, { ref: false }).then(() => 'timeout' as const)]);
    if (code === 'timeout') this.child.kill('SIGKILL');
  }

  /** Without --owner, the datadir goes back to whoever the restore left it to. */
  async restoreOwnership(): Promise<void> {
    if (this.ownership)
      await run(['chown', '-R', `${this.ownership.uid}:${this.ownership.gid}`, this.ctx.directory], { env: this.ctx.env });
  }

  private async errorLog(stderr: string): Promise<string> {
    const log = await readFile(join(this.dir, 'error.log'), 'utf8').catch(() => stderr);
    return (
      log
        .split('\n')
        .filter((l) => /ERROR|\[ERROR\]/.test(l))
        .slice(-5)
        .join(' | ') || log.trim().split('\n').slice(-5).join(' | ')
    );
  }
}

/** mariadbd lives in sbin, which a non-root PATH often lacks. */
async function serverBinary(env: NodeJS.ProcessEnv): Promise<string> {
  for (const candidate of ['mariadbd', '/usr/sbin/mariadbd', '/usr/libexec/mariadbd', 'mysqld', '/usr/sbin/mysqld']) {
    const found = candidate.startsWith('/')
      ? await lstat(candidate).then(
          () => true,
          () => false,
        )
      : await run(['sh', '-c', `command -v ${candidate}`], { env }).then(
          () => true,
          () => false,
        );
    if (found) return candidate;
  }
  throw new CairnError('Cairn.Usage', 'the binlog replay needs mariadbd, which is not installed', {
    hint: 'install mariadb-server of the version the snapshot was taken with (Debian: apt-get install mariadb-server)',
  });
}
