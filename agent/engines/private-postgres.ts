import { mkdir, readdir, readFile, realpath, rm, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { Readable } from 'node:stream';
import { setTimeout as delay } from 'node:timers/promises';
import { CairnError, errorMessage } from '../core/errors.ts';
import { ProcessError, run, stream, type RunResult } from '../process/run.ts';
import type { DrillTool } from './engine.ts';
import { confineDataDirLinks } from './drill-datadir-links.ts';
import { asUser, drillServerUser, privateServerPrefix } from './drill-server-user.ts';
import { drillEnvironment, locateTool, networkIsolation } from './drill-tools.ts';
import { clientOptions, knownSettings, serverOverrides } from './private-postgres-settings.ts';

/**
 * A private PostgreSQL cluster for a drill (the pgdump drill on a fresh
 * `initdb`, the physical postgres drill on a restored data directory). It can
 * never reach, or be reached from, production, and what the restored data says
 * cannot change that:
 *
 * - a restored data directory holding a symbolic link that leads outside the
 *   drill's scratch directory (`pg_wal`, `pg_tblspc/<oid>`) is refused before
 *   anything runs on it (drill-datadir-links.ts);
 * - its postgresql.conf and postgresql.auto.conf are not read (the server gets
 *   the drill's own, empty, configuration file), and every setting naming a
 *   file, a command, a library or a peer is set on the command line
 *   (private-postgres-settings.ts): `listen_addresses=''` (the only way in is a
 *   Unix socket in a private 0700 directory, through the drill's pg_hba.conf
 *   trusting local connections only), `archive_mode=off`,
 *   `restore_command=''`, `primary_conninfo=''`, no preloaded library,
 *   `external_pid_file=''`, `data_directory` the scratch copy, `ssl=off`, and
 *   standby.signal and recovery.signal removed: it starts as a primary after
 *   crash recovery from its own pg_wal, fetching nothing, following no one;
 * - every client connects with options (PGOPTIONS) that outrank the per-role
 *   and per-database settings of the restored catalogs (no
 *   session_preload_libraries, an empty search_path; on 17 no event trigger);
 * - started in a network namespace of its own where the host allows it
 *   (drill-tools.ts, networkIsolation), so even dblink or postgres_fdw in the
 *   restored data cannot open a connection;
 * - run, when the drill runs as root, as the unprivileged `cairn-drill` user
 *   (drill-server-user.ts), never as `postgres`, who owns production's data
 *   (`setpriv … --no-new-privs`, which execs, so the drill signals the
 *   postmaster itself); the data and run directories are given to it first;
 * - killed by the kernel when the drill's process ends, even by SIGKILL, where
 *   setpriv has --pdeathsig
 *   (drill-server-user.ts, deathSignalPrefix);
 * - the environment of drillEnvironment: no PG* variable of the caller.
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
  /** Restored roles still superusers (the server refused to demote them: from 16 on, the bootstrap superuser). */
  readonly keptSuperusers: readonly string[];
  /** Whether the server runs in a network namespace of its own (no network at all). */
  readonly isolated: boolean;
  /** What every client program (psql, pg_restore, pg_amcheck) takes to reach this server and nothing else. */
  readonly clientArgs: readonly string[];
  /** The OS user the server runs as (undefined: the drill's own). */
  readonly osUser: string | undefined;
  /** The environment for the superuser's client programs: the drill's, without PG* variables, with PGOPTIONS (clientOptions). */
  readonly env: NodeJS.ProcessEnv;
  /** Runs SQL through psql (-X -At, ON_ERROR_STOP) as the superuser, or as `role`; returns stdout. */
  sql(statement: string, database?: string, role?: string): Promise<string>;
  /** Runs `binDir/program` with clientArgs (`-U role` when given), then `args`. */
  client(
    program: string,
    args: readonly string[],
    options?: { stdin?: Readable | undefined; doing?: string; role?: string | undefined },
  ): Promise<RunResult>;
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
  /** The drill's scratch directory: no symbolic link of a restored data directory may lead outside it. */
  scratchDir: string;
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

export async function startPrivatePostgres(options: PrivatePostgresOptions): Promise<PrivatePostgres> {
  const env = drillEnvironment(options.env);
  // Before anything reads, runs on or chowns a restored data directory: its links must stay in scratch.
  if (!options.initialize) await confineDataDirLinks(options.dataDir, options.scratchDir);
  // PG_VERSION is the snapshot's: only digits may become part of the path of the programs run.
  const version = options.initialize ? '' : (await readFile(join(options.dataDir, 'PG_VERSION'), 'utf8').catch(() => '')).trim();
  const major = /^\d{1,3}$/.test(version) ? version : undefined;
  const binDir = options.binDir ?? (await postgresBinDir(env, major));
  const superuser = options.superuser ?? 'postgres';
  const user = await drillServerUser(env);
  const as = asUser(user);
  const known = await knownSettings(binDir, env);
  const clientEnv = (superuserSession: boolean): NodeJS.ProcessEnv => ({ ...env, PGOPTIONS: clientOptions(known, superuserSession) });
  const superuserEnv = clientEnv(true);
  // Parents the server's user can pass through (not list); the directories themselves its own, 0700.
  await mkdir(dirname(options.runDir), { recursive: true, mode: 0o711 });
  await mkdir(dirname(options.dataDir), { recursive: true, mode: 0o711 });
  await mkdir(options.runDir, { mode: 0o700 });
  const hba = join(options.runDir, 'pg_hba.conf');
  await writeFile(hba, '# a drill: the private socket only\nlocal all all trust\n', { mode: 0o600 });
  const ident = join(options.runDir, 'pg_ident.conf');
  await writeFile(ident, '# a drill: no user name maps\n', { mode: 0o600 });
  if (options.initialize) await mkdir(options.dataDir, { recursive: true, mode: 0o700 });
  // -h: a link is chowned itself, never what it points at.
  if (user) await run(['chown', '-R', '-h', `${user}:`, options.dataDir, options.runDir], { env });
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
  // A restored configuration is not read: postgresql.conf may name production's paths, commands and
  // libraries, and include other files; postgresql.auto.conf (read from the data directory whatever
  // config_file says) likewise. The server gets the drill's empty file; its settings are on the command line.
  let configFile: string[] = [];
  if (!options.initialize) {
    await rm(join(options.dataDir, 'postgresql.auto.conf'), { force: true, recursive: true });
    const conf = join(options.runDir, 'postgresql.conf');
    await writeFile(conf, '# a drill: settings are on the command line\n', { mode: 0o644 });
    configFile = ['-c', `config_file=${conf}`];
  }
  if (user) await run(['chown', '-R', '-h', `${user}:`, options.runDir], { env });
  const overrides: Record<string, string> = {
    ...(options.fast
      ? { fsync: 'off', full_page_writes: 'off', synchronous_commit: 'off', autovacuum: 'off', wal_level: 'minimal', max_wal_senders: '0' }
      : {}),
    ...options.settings,
    ...serverOverrides({ dataDir: options.dataDir, runDir: options.runDir, port: SERVER_PORT, hbaFile: hba, identFile: ident, known }),
  };
  const isolation = await networkIsolation(env);
  const argv = [
    ...isolation,
    ...(await privateServerPrefix(user, env)),
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
  const connect = (role: string): string[] => ['-h', options.runDir, '-p', String(SERVER_PORT), '-U', role];
  const clientArgs = connect(superuser);
  /** The server as `login` (a superuser) sees it. */
  const view = (login: string, keptSuperusers: readonly string[] = []): PrivatePostgres => ({
    dataDir: options.dataDir,
    socketDir: options.runDir,
    port: SERVER_PORT,
    binDir,
    superuser: login,
    isolated: isolation.length > 0,
    osUser: user,
    keptSuperusers,
    clientArgs: connect(login),
    env: superuserEnv,
    async client(program, args, opts = {}) {
      const role = opts.role ?? login;
      return run([join(binDir, program), ...connect(role), ...args], {
        env: clientEnv(role === login),
        signal: options.signal,
        cwd: options.runDir,
        ...(opts.stdin ? { stdin: opts.stdin } : {}),
      }).catch((error: unknown) => rethrow(error, opts.doing ?? `${program} against the private cluster`));
    },
    async sql(statement, database = 'postgres', role = login) {
      return (
        await this.client('psql', ['-X', '-At', '-v', 'ON_ERROR_STOP=1', '-d', dbnameConninfo(database), '-c', statement], {
          doing: 'a query',
          role,
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
  });
  const server = view(superuser);
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
      await run([join(binDir, 'psql'), ...clientArgs, '-X', '-At', '-d', 'postgres', '-c', 'SELECT 1'], {
        env: superuserEnv,
        cwd: options.runDir,
      });
      break;
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
  if (options.initialize) return server;
  try {
    return await demoteRestoredSuperusers(server, view);
  } catch (error) {
    await server.stop();
    throw error;
  }
}

/** The superuser role a drill checks a restored cluster as: made by the drill, the only superuser left. */
export const CHECK_ROLE = 'cairn_drill_check';

/**
 * A restored cluster's roles are the snapshot's: a function it stores runs as its owner in some
 * checks (pg_amcheck --heapallindexed evaluates index expressions as the table's owner), so no
 * restored role stays a superuser. The drill's own CHECK_ROLE, made through the login role, is the
 * only one; a role the server will not demote (from 16 on, the bootstrap superuser) is reported.
 */
async function demoteRestoredSuperusers(
  login: PrivatePostgres,
  view: (role: string, kept?: readonly string[]) => PrivatePostgres,
): Promise<PrivatePostgres> {
  await login.sql(`CREATE ROLE ${CHECK_ROLE} LOGIN SUPERUSER`);
  const checker = view(CHECK_ROLE);
  const supers = (await checker.sql(`SELECT rolname FROM pg_catalog.pg_roles WHERE rolsuper AND rolname <> '${CHECK_ROLE}' ORDER BY 1`))
    .split('\n')
    .filter(Boolean);
  const kept: string[] = [];
  for (const role of supers) {
    await checker.sql(`ALTER ROLE "${role.replaceAll('"', '""')}" NOSUPERUSER`).catch(() => kept.push(role));
  }
  return view(CHECK_ROLE, kept);
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
    ? 'check that postgresql is installed and the drill scratch directory (CAIRN_DRILL_DIR) is reachable by the cairn-drill user (chmod o+x on its parents)'
    : 'the restored data directory may need another PostgreSQL major version or a preloaded extension (the drill loads none); its log says why';
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
