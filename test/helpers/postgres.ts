import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { chmod, chown, copyFile, link, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { bundleAgent } from '../../cdk/lib/agent-bundle.ts';
import type { CliResult } from './cli.ts';
import { freePort } from './mariadb.ts';

export interface PostgresServer {
  port: number;
  user: string;
  password: string;
  /** Runs SQL as the superuser over TCP; returns unaligned tuples. */
  sql(statement: string, database?: string): string;
  /** What the server has written to stderr so far (its log), for assertion messages. */
  serverLog(): string;
  /** The data directory and the Unix socket directory (tools that connect locally, like pgBackRest). */
  dataDir: string;
  socketDir: string;
  stop(): Promise<void>;
}

const BIN = '/usr/lib/postgresql/15/bin';
/** Where Debian's PostgreSQL 15 server programs are. */
export const POSTGRES_BIN = BIN;

export function missingPostgres(): string | undefined {
  const missing = ['initdb', 'postgres'].filter((b) => spawnSync('test', ['-x', join(BIN, b)]).status !== 0);
  for (const b of ['pg_dump', 'pg_restore', 'pg_dumpall', 'psql'])
    if (spawnSync('sh', ['-c', `command -v ${b}`]).status !== 0) missing.push(b);
  return missing.length ? `needs ${missing.join(', ')}: apt-get install postgresql postgresql-client` : undefined;
}

/**
 * A private PostgreSQL 15 cluster (Debian's binaries) in a temp dir on a free
 * port, password authentication over TCP. PostgreSQL refuses to run as root, so
 * under root the server runs as the `postgres` user the package created.
 */
export async function startPostgres(
  options: { dataDir?: string; settings?: Record<string, string>; env?: Record<string, string> } = {},
): Promise<PostgresServer> {
  const base = await mkdtemp(join(tmpdir(), 'cairn-pg-'));
  const data = options.dataDir ?? join(base, 'data');
  const port = await freePort();
  const password = 'cairn-test-pw';
  const asRoot = process.getuid?.() === 0;
  const as = (argv: string[]): string[] => (asRoot ? ['runuser', '-u', 'postgres', '--', ...argv] : argv);
  // Commands run as postgres start in `base`: PostgreSQL's programs look up their working directory
  // (find_my_exec), which fails in a checkout that user cannot enter.
  await writeFile(join(base, 'pw'), password);
  if (asRoot) {
    const pg = spawnSync('id', ['-u', 'postgres'], { encoding: 'utf8' });
    const uid = Number(pg.stdout.trim());
    const gid = Number(spawnSync('id', ['-g', 'postgres'], { encoding: 'utf8' }).stdout.trim());
    await chown(base, uid, gid);
    await chown(join(base, 'pw'), uid, gid);
  }
  await chmod(base, 0o700);
  if (!options.dataDir) {
    const initArgv = as([
      join(BIN, 'initdb'),
      '-D',
      data,
      '-U',
      'postgres',
      `--pwfile=${join(base, 'pw')}`,
      '--auth-local=trust',
      '--auth-host=scram-sha-256',
      '-E',
      'UTF8',
      '--locale=C.UTF-8',
    ]);
    const init = spawnSync(initArgv[0] as string, initArgv.slice(1), { encoding: 'utf8', cwd: base });
    if (init.status !== 0) throw new Error(`initdb failed: ${init.stderr}`);
  }
  // Extra settings (archive_mode, archive_command…) and environment (what archive_command and restore_command see).
  const extra = Object.entries(options.settings ?? {}).flatMap(([k, v]) => ['-c', `${k}=${v}`]);
  const serverArgv = as([
    join(BIN, 'postgres'),
    '-D',
    data,
    '-p',
    String(port),
    '-k',
    base,
    '-c',
    'listen_addresses=127.0.0.1',
    '-c',
    'shared_buffers=32MB',
    '-c',
    'fsync=off',
    ...extra,
  ]);
  const child: ChildProcess = spawn(serverArgv[0] as string, serverArgv.slice(1), {
    cwd: base,
    stdio: ['ignore', 'ignore', 'pipe'],
    env: { ...process.env, ...options.env },
  });
  let log = '';
  child.stderr?.on('data', (d: Buffer) => (log += d.toString()));
  const env = { ...process.env, PGPASSWORD: password };
  const sql = (statement: string, database = 'postgres'): string => {
    const out = spawnSync(
      'psql',
      ['-h', '127.0.0.1', '-p', String(port), '-U', 'postgres', '-d', database, '-v', 'ON_ERROR_STOP=1', '-At', '-c', statement],
      { encoding: 'utf8', env, maxBuffer: 1 << 28 },
    );
    if (out.status !== 0) throw new Error(`SQL failed: ${statement.slice(0, 200)}: ${out.stderr}`);
    return out.stdout;
  };
  for (let i = 0; ; i++) {
    if (child.exitCode !== null) throw new Error(`postgres exited: ${log.slice(-2000)}`);
    if (spawnSync('psql', ['-h', '127.0.0.1', '-p', String(port), '-U', 'postgres', '-c', 'SELECT 1'], { env }).status === 0) break;
    if (i > 300) throw new Error(`postgres did not start: ${log.slice(-2000)}`);
    await sleep(100);
  }
  return {
    port,
    user: 'postgres',
    password,
    sql,
    serverLog: () => log,
    dataDir: data,
    socketDir: base,
    stop: async () => {
      if (child.exitCode === null) {
        // runuser does not pass SIGINT on to the server: ask pg_ctl, as the server's own user.
        const exited = new Promise((r) => child.once('exit', r));
        const stop = as([join(BIN, 'pg_ctl'), '-D', data, '-m', 'fast', '-w', 'stop']);
        spawnSync(stop[0] as string, stop.slice(1), { stdio: 'ignore', cwd: base });
        const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
        await exited;
        clearTimeout(timer);
      }
      await rm(base, { recursive: true, force: true });
    },
  };
}

/** A directory the server's user can reach, for restored data directories. */
export async function postgresWorkDir(): Promise<string> {
  const base = await mkdtemp(join(tmpdir(), 'cairn-pgwork-'));
  if (process.getuid?.() === 0) {
    await chown(
      base,
      Number(spawnSync('id', ['-u', 'postgres'], { encoding: 'utf8' }).stdout.trim()),
      Number(spawnSync('id', ['-g', 'postgres'], { encoding: 'utf8' }).stdout.trim()),
    );
  }
  await chmod(base, 0o755);
  return base;
}

/** The cairn program the database server's user runs: `node` and the CLI script, each reachable by that user. */
export interface ServerCairn {
  node: string;
  script: string;
  /** `node script`, shell-quoted for archive_command. */
  command: string;
  remove(): Promise<void>;
}

/**
 * The server runs cairn as its own user (archive_command, restore_command, the
 * WAL daemon they start), and that user may not be able to enter the checkout
 * (a clone under /root, a 0700 temp directory). So this builds the CLI with
 * esbuild into one file, the bundle the CDK gives hosts (cdk/lib/agent-bundle.ts),
 * in a directory everyone can read, next to a hard link (or copy) of the Node
 * binary running the tests. The bundle is `cairn.mjs` at the directory's top, as
 * hosts install it, so the WAL client starts its daemon from the bundle as it does there.
 */
export async function serverCairn(): Promise<ServerCairn> {
  const dir = await mkdtemp(join(tmpdir(), 'cairn-server-cli-'));
  await chmod(dir, 0o755);
  // The bundle hosts run (npm run build:cli's, replacing the directory's contents: built first).
  const script = bundleAgent(dir);
  await chmod(script, 0o644);
  const node = join(dir, 'node');
  await link(process.execPath, node).catch(async () => {
    await copyFile(process.execPath, node);
    await chmod(node, 0o755);
  });
  return { node, script, command: `${node} ${script}`, remove: () => rm(dir, { recursive: true, force: true }) };
}

/** Runs `cairn` from a ServerCairn (as the current user), as runCli runs the checkout's: JSON lines on stdout. */
export function runServerCairn(cairn: ServerCairn, args: string[], env: Record<string, string>): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(cairn.node, [cairn.script, ...args], {
      env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '/tmp', CAIRN_JSON: '1', ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('close', (code, signal) => {
      const lines = stdout
        .split('\n')
        .filter((l) => l.startsWith('{'))
        .map((l) => JSON.parse(l) as Record<string, unknown>);
      resolve({ code, signal, stdout, stderr, lines });
    });
  });
}
