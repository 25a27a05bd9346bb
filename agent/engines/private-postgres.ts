import { access, mkdir, readdir, readFile, realpath, rm, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { Readable } from 'node:stream';
import { setTimeout as delay } from 'node:timers/promises';
import { CairnError, errorMessage } from '../core/errors.ts';
import { ProcessError, run, stream, type RunResult } from '../process/run.ts';
import type { DrillTool } from './engine.ts';
import { drillEnvironment, locateTool, networkIsolation } from './drill-tools.ts';

/**
 * A private PostgreSQL cluster for a drill (the pgdump drill on a fresh
 * `initdb`, the physical postgres drill on a restored data directory). It can
 * never reach, or be reached from, production. Whatever the data directory's
 * postgresql.conf and postgresql.auto.conf say, these are command-line
 * overrides (`-c`, which win over both):
 *
 * - `listen_addresses=''`: no TCP; the only way in is a Unix socket in a
 *   private directory (mode 0700) under the drill's scratch directory, through
 *   a private pg_hba.conf (`hba_file`) that trusts local connections only;
 * - `archive_mode=off`: no WAL is pushed anywhere (not to Cairn's log archive
 *   either);
 * - `restore_command=''`, `primary_conninfo=''`, `primary_slot_name=''`, and
 *   standby.signal and recovery.signal removed from a restored data directory:
 *   it starts as a primary after crash recovery from its own pg_wal, fetching
 *   nothing and following no one;
 * - `max_logical_replication_workers=0`: a restored subscription never connects
 *   to its publisher; `shared_preload_libraries=''` (unless the caller keeps
 *   them): no background worker of an extension (pg_cron, pglogical) runs;
 * - `synchronous_standby_names=''`: a commit never waits for a standby that
 *   will not come;
 * - `logging_collector=off`: the log goes to the drill (stderr), not into a
 *   log directory the restored configuration names;
 * - started in a network namespace of its own where the host allows it
 *   (drill-tools.ts, networkIsolation), so even dblink or postgres_fdw in the
 *   restored data cannot open a connection;
 * - run as the `postgres` user when the drill runs as root (PostgreSQL refuses
 *   root), the data and socket directories given to that user first
 *   (`setpriv`, which execs, so the drill signals the postmaster itself);
 * - the environment of drillEnvironment: no PG* variable.
 *
 * Clients connect with clientArgs (`-h <private socket dir> -p <port> -U
 * <superuser>`) only, never with the plan's connection options.
 */
export interface PrivatePostgres {
  readonly dataDir: string;
  readonly socketDir: string;
  readonly port: number;
  /** The directory of the server's programs (initdb, postgres, pg_restore, pg_amcheck, pg_checksums… of one major version). */
  readonly binDir: string;
  readonly superuser: string;
  /** Whether the server runs in a network namespace of its own (no network at all). */
  readonly isolated: boolean;
  /** What every client program (psql, pg_restore, pg_amcheck) takes to reach this server and nothing else. */
  readonly clientArgs: readonly string[];
  /** The environment for client programs: the drill's, without PG* variables. */
  readonly env: NodeJS.ProcessEnv;
  /** Runs SQL through psql (-X -At, ON_ERROR_STOP); returns stdout. */
  sql(statement: string, database?: string): Promise<string>;
  /** Runs `binDir/program` with clientArgs, then `args`. */
  client(program: string, args: readonly string[], options?: { stdin?: Readable | undefined; doing?: string }): Promise<RunResult>;
  /** The server's log so far (stderr), for a failure's message. */
  log(): string;
  /** A fast, clean shutdown (SIGINT; SIGKILL if it hangs); waits for the exit. Safe to call twice; never throws. */
  stop(): Promise<void>;
}

export interface PrivatePostgresOptions {
  /** The data directory, under the drill's scratch directory: a new one when `initialize`, a restored one otherwise. */
  dataDir: string;
  /** Run initdb on a new data directory first (superuser `postgres`, UTF8, trust on the private socket). */
  initialize: boolean;
  /** A new directory for the socket, the private pg_hba.conf and (when the data directory has none) postgresql.conf. */
  runDir: string;
  /** The server's programs; default: the newest /usr/lib/postgresql/<major>/bin, or <major> = the data directory's PG_VERSION. */
  binDir?: string | undefined;
  /** The role clients log in as (default postgres). */
  superuser?: string | undefined;
  /** A throwaway cluster (the pgdump drill): fsync, full_page_writes and autovacuum off, wal_level minimal. */
  fast?: boolean | undefined;
  /** Keep the data directory's shared_preload_libraries (an extension its tables need at start). Default: none loaded. */
  keepPreloadLibraries?: boolean | undefined;
  /** More -c settings; they cannot undo the overrides above (those come last). */
  settings?: Readonly<Record<string, string>> | undefined;
  env: NodeJS.ProcessEnv;
  signal?: AbortSignal | undefined;
}

/** The server programs, looked for in /usr/lib/postgresql/<major>/bin (Debian) besides PATH. */
export const POSTGRES_DIRS = ['/usr/lib/postgresql/*/bin', '/usr/pgsql-*/bin'];
export const INITDB: DrillTool = { names: ['initdb'], dirs: POSTGRES_DIRS, package: 'postgresql' };
export const POSTGRES: DrillTool = { names: ['postgres'], dirs: POSTGRES_DIRS, package: 'postgresql' };
export const PG_RESTORE: DrillTool = { names: ['pg_restore'], dirs: POSTGRES_DIRS, package: 'postgresql-client' };
export const PSQL: DrillTool = { names: ['psql'], dirs: POSTGRES_DIRS, package: 'postgresql-client' };

const SERVER_PORT = 5432;

/** The bin directory of one PostgreSQL major version (`major`), or the newest installed. */
export async function postgresBinDir(env: NodeJS.ProcessEnv, major?: string): Promise<string> {
  const dirs = major ? POSTGRES_DIRS.map((d) => d.replace('*', major)) : POSTGRES_DIRS;
  const postgres = await locateTool({ names: ['postgres'], dirs }, major ? {} : env);
  if (!postgres)
    throw new CairnError(
      'Cairn.Usage',
      `the drill needs the PostgreSQL ${major ?? ''} server programs (postgres, initdb), not installed on this host`,
      {
        hint: `install them (Debian: apt-get install postgresql${major ? `-${major}` : ''}), or run the drill on a host that has them`,
      },
    );
  // /usr/local/bin/postgres may be a link: the client programs of the same version are beside the real one.
  return dirname(await realpath(postgres));
}

/** The OS user the server runs as: `postgres` under root, else the drill's own user (undefined). */
async function serverUser(): Promise<string | undefined> {
  if (process.getuid?.() !== 0) return undefined;
  const passwd = await readFile('/etc/passwd', 'utf8').catch(() => '');
  if (passwd.split('\n').some((line) => line.startsWith('postgres:'))) return 'postgres';
  throw new CairnError('Cairn.Usage', 'a drill run as root needs a `postgres` user to run its private PostgreSQL server as', {
    hint: 'install the postgresql package (it creates the user), or run the drill as another user',
  });
}

async function exists(path: string): Promise<boolean> {
  return access(path).then(
    () => true,
    () => false,
  );
}

export async function startPrivatePostgres(options: PrivatePostgresOptions): Promise<PrivatePostgres> {
  const env = drillEnvironment(options.env);
  const major = options.initialize
    ? undefined
    : (await readFile(join(options.dataDir, 'PG_VERSION'), 'utf8').catch(() => '')).trim() || undefined;
  const binDir = options.binDir ?? (await postgresBinDir(env, major));
  const superuser = options.superuser ?? 'postgres';
  const user = await serverUser();
  const as = user ? ['setpriv', `--reuid=${user}`, `--regid=${user}`, '--init-groups', '--'] : [];
  // Parents the server's user can pass through (not list); the directories themselves its own, 0700.
  await mkdir(dirname(options.runDir), { recursive: true, mode: 0o711 });
  await mkdir(dirname(options.dataDir), { recursive: true, mode: 0o711 });
  await mkdir(options.runDir, { mode: 0o700 });
  const hba = join(options.runDir, 'pg_hba.conf');
  await writeFile(hba, '# a drill: the private socket only\nlocal all all trust\n', { mode: 0o600 });
  if (options.initialize) await mkdir(options.dataDir, { recursive: true, mode: 0o700 });
  if (user) await run(['chown', '-R', `${user}:`, options.dataDir, options.runDir], { env });
  if (options.initialize) {
    await run(
      [
        ...as,
        join(binDir, 'initdb'),
        '-D',
        options.dataDir,
        '-U',
        superuser,
        '--auth=trust',
        '-E',
        'UTF8',
        '--locale=C.UTF-8',
        '--no-instructions',
      ],
      { env, signal: options.signal, cwd: options.runDir },
    ).catch((error: unknown) => rethrow(error, 'initdb of the private cluster'));
  } else {
    // A restored standby or recovering cluster would fetch WAL or follow a primary: it starts as a primary here.
    await rm(join(options.dataDir, 'standby.signal'), { force: true });
    await rm(join(options.dataDir, 'recovery.signal'), { force: true });
  }
  // Debian keeps postgresql.conf in /etc, so a restored data directory may have none: an empty one of the drill's then.
  let configFile: string[] = [];
  if (!(await exists(join(options.dataDir, 'postgresql.conf')))) {
    const conf = join(options.runDir, 'postgresql.conf');
    await writeFile(conf, '# a drill: settings are on the command line\n', { mode: 0o644 });
    configFile = ['-c', `config_file=${conf}`];
  }
  if (user) await run(['chown', '-R', `${user}:`, options.runDir], { env });
  const overrides: Record<string, string> = {
    ...(options.fast
      ? { fsync: 'off', full_page_writes: 'off', synchronous_commit: 'off', autovacuum: 'off', wal_level: 'minimal', max_wal_senders: '0' }
      : {}),
    ...options.settings,
    listen_addresses: '',
    port: String(SERVER_PORT),
    unix_socket_directories: options.runDir,
    unix_socket_permissions: '0700',
    hba_file: hba,
    archive_mode: 'off',
    restore_command: '',
    primary_conninfo: '',
    primary_slot_name: '',
    max_logical_replication_workers: '0',
    synchronous_standby_names: '',
    logging_collector: 'off',
    log_destination: 'stderr',
    cluster_name: 'cairn-drill',
    ...(options.keepPreloadLibraries ? {} : { shared_preload_libraries: '', session_preload_libraries: '', local_preload_libraries: '' }),
  };
  const isolation = await networkIsolation(env);
  const argv = [
    ...isolation,
    ...as,
    join(binDir, 'postgres'),
    '-D',
    options.dataDir,
    ...configFile,
    ...Object.entries(overrides).flatMap(([name, value]) => ['-c', `${name}=${value}`]),
  ];
  const child = stream(argv, { env, cwd: options.runDir });
  let log = '';
  child.child.stderr?.on('data', (d: Buffer) => (log = (log + d.toString()).slice(-64 * 1024)));
  child.stdout.resume();
  let exited = false;
  const done = child.done.then(
    () => undefined,
    () => undefined,
  );
  void done.then(() => (exited = true));
  const clientArgs = ['-h', options.runDir, '-p', String(SERVER_PORT), '-U', superuser];
  const server: PrivatePostgres = {
    dataDir: options.dataDir,
    socketDir: options.runDir,
    port: SERVER_PORT,
    binDir,
    superuser,
    isolated: isolation.length > 0,
    clientArgs,
    env,
    async client(program, args, opts = {}) {
      return run([join(binDir, program), ...clientArgs, ...args], {
        env,
        signal: options.signal,
        cwd: options.runDir,
        ...(opts.stdin ? { stdin: opts.stdin } : {}),
      }).catch((error: unknown) => rethrow(error, opts.doing ?? `${program} against the private cluster`));
    },
    async sql(statement, database = 'postgres') {
      return (
        await server.client('psql', ['-X', '-At', '-v', 'ON_ERROR_STOP=1', '-d', dbnameConninfo(database), '-c', statement], {
          doing: 'a query',
        })
      ).stdout;
    },
    log: () => log,
    async stop() {
      if (!exited) {
        child.child.kill('SIGINT');
        const timer = setTimeout(() => child.child.kill('SIGKILL'), 120_000);
        await done;
        clearTimeout(timer);
      }
    },
  };
  // Wait until it accepts connections: a restored cluster first replays its WAL up to a consistent point.
  const deadline = Date.now() + 30 * 60_000;
  for (;;) {
    if (exited)
      throw new CairnError('Cairn.Failure', `the private PostgreSQL server exited while starting: ${lastLines(log)}`, {
        hint: startHint(options),
      });
    if (options.signal?.aborted) {
      await server.stop();
      throw new CairnError('Cairn.Cancelled', 'the drill was cancelled while its private PostgreSQL server started');
    }
    try {
      await run([join(binDir, 'psql'), ...clientArgs, '-X', '-At', '-d', 'postgres', '-c', 'SELECT 1'], { env, cwd: options.runDir });
      return server;
    } catch (error) {
      if (Date.now() > deadline) {
        await server.stop();
        throw new CairnError(
          'Cairn.Failure',
          `the private PostgreSQL server did not accept connections within 30 minutes: ${errorMessage(error)}`,
          {
            hint: startHint(options),
          },
        );
      }
    }
    await delay(100);
  }
}

/** The databases of a private cluster that accept connections, templates excluded. */
export async function clusterDatabases(server: PrivatePostgres): Promise<string[]> {
  return (await server.sql('SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate ORDER BY 1'))
    .split('\n')
    .filter(Boolean);
}

/** Whether a directory is empty or missing (a restored data directory must hold something). */
export async function isEmptyDirectory(path: string): Promise<boolean> {
  return (await readdir(path).catch(() => [])).length === 0;
}

function startHint(options: PrivatePostgresOptions): string {
  return options.initialize
    ? 'check that postgresql is installed and the drill scratch directory (CAIRN_DRILL_DIR) is reachable by the postgres user'
    : 'the restored data directory may need another PostgreSQL major version or a preloaded extension; its log says why';
}

function lastLines(text: string): string {
  return text.trim().split('\n').slice(-8).join(' | ').slice(-1500);
}

function rethrow(error: unknown, doing: string): never {
  if (error instanceof ProcessError) throw new CairnError('Cairn.Failure', `${doing} failed: ${error.message}`, { cause: error });
  throw error;
}

/**
 * A database name as a libpq connection string that says only `dbname`: given bare, a name holding
 * `=` (a snapshot's dump named `host=… port=….dump`, a restored catalog's database) is itself read as
 * a connection string whose host and port override the private socket.
 */
export function dbnameConninfo(database: string): string {
  return `dbname='${database.replaceAll('\\', '\\\\').replaceAll("'", "\\'")}'`;
}
