import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

export interface MariadbServer {
  port: number;
  socket: string;
  user: string;
  password: string;
  datadir: string;
  /** Runs SQL as root over the socket; returns stdout (tab-separated, no headers). */
  sql(statement: string, database?: string): string;
  stop(): Promise<void>;
}

const BINARIES = ['mariadb-install-db', 'mariadbd', 'mariadb', 'mariadb-dump'];

export function missingMariadb(): string | undefined {
  const missing = BINARIES.filter((b) => spawnSync('sh', ['-c', `command -v ${b} || test -x /usr/sbin/${b}`]).status !== 0);
  return missing.length ? `needs ${missing.join(', ')}: apt-get install mariadb-server mariadb-client mariadb-backup` : undefined;
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => (typeof address === 'object' && address ? resolve(address.port) : reject(new Error('no port'))));
    });
  });
}

export interface MariadbOptions {
  /** An existing datadir (a restored one): no install, no users created. */
  datadir?: string;
  /** Binary log basename (default mariadb-bin), server_id (default 1), max_binlog_size in bytes (the server's minimum is 4096). */
  logBin?: string;
  serverId?: number;
  maxBinlogSize?: number;
  /** More mariadbd arguments, e.g. --binlog-checksum=NONE. */
  extraArgs?: string[];
}

/**
 * A private MariaDB server (the Debian package's binaries) in a temp datadir on a
 * free port, with binary logging on, a root login over its socket and a TCP user
 * `cairn` with a password — what a backup host would have.
 */
export async function startMariadb(options: MariadbOptions = {}): Promise<MariadbServer> {
  const base = await mkdtemp(join(tmpdir(), 'cairn-mariadb-'));
  const datadir = options.datadir ?? join(base, 'data');
  const socket = join(base, 'mysqld.sock');
  const tmp = join(base, 'tmp');
  await mkdir(tmp);
  const port = await freePort();
  const asRoot = process.getuid?.() === 0 ? ['--user=root'] : [];
  if (!options.datadir) {
    const install = spawnSync(
      'mariadb-install-db',
      ['--no-defaults', `--datadir=${datadir}`, '--auth-root-authentication-method=socket', '--skip-test-db', ...asRoot],
      { encoding: 'utf8' },
    );
    if (install.status !== 0) throw new Error(`mariadb-install-db failed: ${install.stderr}`);
  }
  const child: ChildProcess = spawn(
    '/usr/sbin/mariadbd',
    [
      '--no-defaults',
      `--datadir=${datadir}`,
      `--socket=${socket}`,
      `--port=${port}`,
      '--bind-address=127.0.0.1',
      `--log-bin=${options.logBin ?? 'mariadb-bin'}`,
      `--server-id=${options.serverId ?? 1}`,
      '--innodb-buffer-pool-size=64M',
      '--skip-name-resolve',
      `--pid-file=${join(base, 'mysqld.pid')}`,
      // Its temporary tables in a directory of its own: tests running beside it clean up under /tmp
      // (a mariadb-dump once failed deleting '/tmp/#sql-temptable-…' that was gone).
      `--tmpdir=${tmp}`,
      ...(options.maxBinlogSize ? [`--max-binlog-size=${options.maxBinlogSize}`] : []),
      ...(options.extraArgs ?? []),
      ...asRoot,
    ],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let log = '';
  child.stderr?.on('data', (d: Buffer) => (log += d.toString()));
  const sql = (statement: string, database?: string): string => {
    const out = spawnSync(
      'mariadb',
      ['--no-defaults', `--socket=${socket}`, '-uroot', '-N', '-B', ...(database ? [database] : []), '-e', statement],
      { encoding: 'utf8', maxBuffer: 1 << 28 },
    );
    if (out.status !== 0) throw new Error(`SQL failed: ${statement.slice(0, 200)}: ${out.stderr}`);
    return out.stdout;
  };
  for (let i = 0; ; i++) {
    if (child.exitCode !== null) throw new Error(`mariadbd exited: ${log.slice(-2000)}`);
    if (spawnSync('mariadb', ['--no-defaults', `--socket=${socket}`, '-uroot', '-e', 'SELECT 1']).status === 0) break;
    if (i > 300) throw new Error(`mariadbd did not start: ${log.slice(-2000)}`);
    await sleep(100);
  }
  const password = 'cairn-test-pw';
  if (!options.datadir)
    sql(
      `CREATE USER 'cairn'@'127.0.0.1' IDENTIFIED BY '${password}'; GRANT ALL PRIVILEGES ON *.* TO 'cairn'@'127.0.0.1' WITH GRANT OPTION; FLUSH PRIVILEGES;`,
    );
  return {
    port,
    socket,
    user: 'cairn',
    password,
    datadir,
    sql,
    stop: async () => {
      if (child.exitCode === null) {
        child.kill('SIGTERM');
        await new Promise((r) => child.once('exit', r));
      }
      await rm(base, { recursive: true, force: true });
    },
  };
}

/**
 * Waits until the server's clock is past the whole second `time` falls in. Binary log events carry
 * whole seconds: after this, whatever the server logs is stamped later than `time` (a restore to
 * `time` leaves it out), and a binlog file it creates gets a creation second of its own.
 */
export async function serverClockPast(server: Pick<MariadbServer, 'sql'>, time: string): Promise<void> {
  const second = Math.floor(Date.parse(time) / 1000);
  const deadline = Date.now() + 30_000;
  for (;;) {
    const now = Number(server.sql('SELECT UNIX_TIMESTAMP()').trim());
    if (now > second) return;
    if (Date.now() > deadline) throw new Error(`the server's clock stays at ${now}, not past ${time}`);
    await sleep(50);
  }
}
