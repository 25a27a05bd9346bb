import { mkdir } from 'node:fs/promises';
import { userInfo } from 'node:os';
import { dirname, join } from 'node:path';
import type { Readable } from 'node:stream';
import { setTimeout as delay } from 'node:timers/promises';
import { CairnError, errorMessage } from '../core/errors.ts';
import { ProcessError, run, stream, type RunResult } from '../process/run.ts';
import type { DrillTool } from './engine.ts';
import { drillEnvironment, networkIsolation, requireTool } from './drill-tools.ts';
import { deathSignalPrefix, diesWithDrill, drillServerUser } from './drill-server-user.ts';

/**
 * A private MariaDB server for a drill (the mysqldump drill on an empty
 * datadir, the physical mariadb drill on a restored one). It can never reach,
 * or be reached from, production:
 *
 * - `--no-defaults`: nothing of /etc/mysql/my.cnf or ~/.my.cnf (the host's
 *   production settings: port, log-bin, replication, plugins) is read;
 * - `--skip-networking`: no TCP at all; the only way in is a Unix socket in a
 *   private directory (mode 0700) under the drill's scratch directory;
 * - `--skip-slave-start`: a restored datadir's replication settings
 *   (master.info, relay logs) are never acted on;
 * - `--event-scheduler=DISABLED`: no event of the restored data runs;
 * - `--skip-log-bin`: nothing is written to a binary log a tool could ship;
 * - `--skip-symbolic-links` and `--secure-file-priv` in the private directory: a
 *   `DATA DIRECTORY` table option or a file export cannot write outside it;
 * - started in a network namespace of its own where the host allows it
 *   (drill-tools.ts, networkIsolation), so even a FEDERATED/CONNECT table
 *   cannot open a connection;
 * - run as the unprivileged `cairn-drill` user when the drill runs as root
 *   (drill-server-user.ts; mariadbd refuses root), its files given to that
 *   user first. Never `mysql`: that user owns production's datadir (a dump's
 *   `SET GLOBAL general_log_file` would write into it), and production's
 *   `mysql`@`localhost` account logs in through unix_socket, so a server
 *   running as `mysql` is let into production through its Unix socket (a path,
 *   which no network namespace hides);
 * - `--plugin-dir` an empty private directory: a dump's `INSTALL SONAME` finds
 *   no engine (FederatedX, CONNECT) that could open a connection or a file;
 * - killed by the kernel when the drill's process ends, even by SIGKILL, where
 *   setpriv has --pdeathsig
 *   (drill-server-user.ts, deathSignalPrefix);
 * - the environment of drillEnvironment: no MYSQL_* variable.
 *
 * Clients connect with `--no-defaults --protocol=SOCKET --socket=<private>`
 * only (clientArgs), never with the plan's connection options.
 */
export interface PrivateMariadb {
  readonly datadir: string;
  readonly socket: string;
  /** Whether the server runs in a network namespace of its own (no network at all). */
  readonly isolated: boolean;
  /** The arguments every client program (mariadb, mariadb-check) takes to reach this server and nothing else. */
  readonly clientArgs: readonly string[];
  /** Runs SQL through the `mariadb` client; returns stdout (tab-separated, no column names). */
  sql(statement: string, database?: string): Promise<string>;
  /** Runs a client program against this server: `program` (a path from requireTool), then clientArgs, then `args`. */
  client(program: string, args: readonly string[], options?: { stdin?: Readable | undefined; doing?: string }): Promise<RunResult>;
  /** The server's error log so far (its stderr), for a failure's message. */
  log(): string;
  /** Stops the server (SIGTERM, waits for its exit; SIGKILL if it hangs). Safe to call twice; never throws. */
  stop(): Promise<void>;
}

export interface PrivateMariadbOptions {
  /** The data directory, under the drill's scratch directory: empty when `initialize`, a restored one otherwise. */
  datadir: string;
  /** Run mariadb-install-db on the (empty) datadir first: root@localhost, no password, reachable only through the private socket. */
  initialize: boolean;
  /** A new directory for the socket, pid file, tmpdir and secure-file-priv (created here, mode 0700). */
  runDir: string;
  /**
   * Start with `--skip-grant-tables`: a restored datadir holds production's
   * accounts, whose passwords the drill does not have. Also loads no plugin
   * installed with INSTALL PLUGIN (the mysql.plugin table is not read).
   */
  skipGrantTables?: boolean | undefined;
  /** InnoDB buffer pool (default 128M). */
  bufferPool?: string | undefined;
  /** More mariadbd arguments (e.g. --innodb-force-recovery for a diagnosis); never networking ones. */
  extraArgs?: readonly string[] | undefined;
  env: NodeJS.ProcessEnv;
  signal?: AbortSignal | undefined;
}

/** The server programs (the drill's DrillTool entries), found in /usr/sbin and /usr/bin besides PATH. */
export const MARIADBD: DrillTool = { names: ['mariadbd', 'mysqld'], dirs: ['/usr/sbin', '/usr/libexec'], package: 'mariadb-server' };
export const MARIADB_INSTALL_DB: DrillTool = {
  names: ['mariadb-install-db', 'mysql_install_db'],
  dirs: ['/usr/bin', '/usr/sbin'],
  package: 'mariadb-server',
};
export const MARIADB_CLIENT: DrillTool = { names: ['mariadb', 'mysql'], dirs: ['/usr/bin'], package: 'mariadb-client' };
export const MARIADB_CHECK: DrillTool = { names: ['mariadb-check', 'mysqlcheck'], dirs: ['/usr/bin'], package: 'mariadb-client' };

/**
 * The OS user the private server runs as: `cairn-drill` under root (created on first use), else the
 * drill's own user (undefined), which must not be `mysql` (production's owner, let into production's
 * server through its socket by unix_socket).
 */
async function serverUser(env: NodeJS.ProcessEnv): Promise<string | undefined> {
  if (process.getuid?.() !== 0 && userInfo().username === 'mysql')
    throw new CairnError(
      'Cairn.Usage',
      "the drill runs as the `mysql` user, which owns this host's MariaDB data and logs in to its server through unix_socket: its private server would run as production's owner",
      { hint: 'run the drill as root (its server then runs as the unprivileged cairn-drill user) or as a user that owns no database' },
    );
  return drillServerUser(env);
}

export async function startPrivateMariadb(options: PrivateMariadbOptions): Promise<PrivateMariadb> {
  const env = drillEnvironment(options.env);
  const mariadbd = await requireTool(MARIADBD, env);
  const mariadb = await requireTool(MARIADB_CLIENT, env);
  const user = await serverUser(env);
  // Parents the server's user can pass through (not list); the directories themselves its own, 0700.
  await mkdir(dirname(options.runDir), { recursive: true, mode: 0o711 });
  await mkdir(dirname(options.datadir), { recursive: true, mode: 0o711 });
  await mkdir(options.runDir, { mode: 0o700 });
  await mkdir(join(options.runDir, 'tmp'), { mode: 0o700 });
  // Empty: INSTALL SONAME finds nothing to load.
  await mkdir(join(options.runDir, 'plugin'), { mode: 0o700 });
  await mkdir(options.datadir, { recursive: true, mode: 0o700 });
  if (user && user !== 'root') await run(['chown', '-R', `${user}:`, options.datadir, options.runDir], { env });
  const socket = join(options.runDir, 'mysqld.sock');
  if (options.initialize) {
    const install = await requireTool(MARIADB_INSTALL_DB, env);
    await run(
      [
        install,
        '--no-defaults',
        `--datadir=${options.datadir}`,
        '--auth-root-authentication-method=normal',
        '--skip-test-db',
        '--skip-name-resolve',
        // Its bootstrap server runs as the drill's server user: the host's TMPDIR may be closed to that user.
        `--tmpdir=${join(options.runDir, 'tmp')}`,
        ...(user ? [`--user=${user}`] : []),
      ],
      { env, signal: options.signal, hint: 'mariadb-install-db could not create an empty data directory in the drill scratch directory' },
    ).catch((error: unknown) => rethrow(error, 'initializing the private MariaDB data directory'));
  }
  if (user && user !== 'root') await run(['chown', '-R', `${user}:`, options.datadir, options.runDir], { env });
  const isolation = await networkIsolation(env);
  // As the server's user from the start where the death signal is had (`--user` would switch after it
  // and clear it); else as before it, mariadbd switching by itself (no setpriv needed).
  const dies = await diesWithDrill(env);
  const argv = [
    ...isolation,
    ...(dies ? deathSignalPrefix(user) : []),
    mariadbd,
    '--no-defaults',
    `--datadir=${options.datadir}`,
    `--socket=${socket}`,
    `--pid-file=${join(options.runDir, 'mysqld.pid')}`,
    `--tmpdir=${join(options.runDir, 'tmp')}`,
    `--secure-file-priv=${join(options.runDir, 'tmp')}`,
    `--plugin-dir=${join(options.runDir, 'plugin')}`,
    '--skip-networking',
    '--skip-slave-start',
    '--event-scheduler=DISABLED',
    '--skip-log-bin',
    '--skip-symbolic-links',
    '--skip-name-resolve',
    `--innodb-buffer-pool-size=${options.bufferPool ?? '128M'}`,
    ...(options.skipGrantTables ? ['--skip-grant-tables'] : []),
    ...(options.extraArgs ?? []),
    ...(!dies && user ? [`--user=${user}`] : []),
  ];
  const child = stream(argv, { env });
  let log = '';
  child.child.stderr?.on('data', (d: Buffer) => (log = (log + d.toString()).slice(-64 * 1024)));
  child.stdout.resume();
  let exited = false;
  const done = child.done.then(
    () => undefined,
    () => undefined,
  );
  void done.then(() => (exited = true));
  const clientArgs = ['--no-defaults', '--protocol=SOCKET', `--socket=${socket}`, '--user=root'];
  const server: PrivateMariadb = {
    datadir: options.datadir,
    socket,
    isolated: isolation.length > 0,
    clientArgs,
    async client(program, args, opts = {}) {
      return run([program, ...clientArgs, ...args], {
        env,
        signal: options.signal,
        ...(opts.stdin ? { stdin: opts.stdin } : {}),
      }).catch((error: unknown) => rethrow(error, opts.doing ?? `${program} against the private server`));
    },
    async sql(statement, database) {
      // --database=: a name is never read as an option.
      return (
        await server.client(mariadb, ['-N', '-B', ...(database ? [`--database=${database}`] : []), '-e', statement], { doing: 'a query' })
      ).stdout;
    },
    log: () => log,
    async stop() {
      if (!exited) {
        child.child.kill('SIGTERM');
        const timer = setTimeout(() => child.child.kill('SIGKILL'), 60_000);
        await done;
        clearTimeout(timer);
      }
    },
  };
  // Wait until it answers on its socket (or exits, or the drill is cancelled).
  const deadline = Date.now() + 120_000;
  for (;;) {
    if (exited)
      throw new CairnError('Cairn.Failure', `the private mariadbd exited while starting: ${lastLines(log)}`, { hint: startHint(options) });
    if (options.signal?.aborted) {
      await server.stop();
      throw new CairnError('Cairn.Cancelled', 'the drill was cancelled while its private MariaDB server started');
    }
    try {
      await run([mariadb, ...clientArgs, '-N', '-B', '-e', 'SELECT 1'], { env });
      return server;
    } catch (error) {
      if (Date.now() > deadline) {
        await server.stop();
        throw new CairnError('Cairn.Failure', `the private mariadbd did not answer within 2 minutes: ${errorMessage(error)}`, {
          hint: startHint(options),
        });
      }
    }
    await delay(100);
  }
}

function startHint(options: PrivateMariadbOptions): string {
  return options.initialize
    ? 'check that mariadb-server is installed and the drill scratch directory (CAIRN_DRILL_DIR) is writable'
    : 'the restored data directory may not start with this mariadbd (another major version?); its log says why';
}

function lastLines(text: string): string {
  return text.trim().split('\n').slice(-8).join(' | ').slice(-1500);
}

function rethrow(error: unknown, doing: string): never {
  if (error instanceof ProcessError) throw new CairnError('Cairn.Failure', `${doing} failed: ${error.message}`, { cause: error });
  throw error;
}
