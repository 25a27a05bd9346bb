import { createHash } from 'node:crypto';
import { access, constants, lstat, mkdir, readdir } from 'node:fs/promises';
import { homedir, tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { CairnError } from '../core/errors.ts';

/**
 * The WAL daemon's spool directory: its socket, pid file, log and prefetched
 * segments. Owner-only (0700), because the socket answers with WAL (the
 * database's data) to whoever can connect: the directory's mode is what keeps
 * other users out, so a directory that others can enter is refused.
 */

/** Linux's sun_path holds 108 bytes; stay well under it. */
const MAX_SOCKET_PATH = 100;

export interface SpoolPaths {
  dir: string;
  socket: string;
  pid: string;
  log: string;
  /** Held while a daemon starts, so two racing starts end with one daemon. */
  lock: string;
  prefetch: string;
}

/**
 * --spool-dir, else CAIRN_SPOOL_DIR, else /var/spool/cairn when usable, else $XDG_RUNTIME_DIR/cairn,
 * else the user's cache directory ($XDG_CACHE_HOME/cairn or ~/.cache/cairn: the PostgreSQL
 * server's user has a home it owns, /var/lib/postgresql on Debian), and only then
 * <tmp>/cairn-<uid>. That last name is known in advance, and another user can create it first
 * (`mkdir -m 700 /tmp/cairn-<uid>`), which stops every wal-push and wal-fetch of this user.
 */
export async function chooseSpoolDir(given: string | undefined, env: NodeJS.ProcessEnv): Promise<string> {
  if (given) return resolve(given);
  if (env.CAIRN_SPOOL_DIR) return resolve(env.CAIRN_SPOOL_DIR);
  if (await usable('/var/spool/cairn')) return '/var/spool/cairn';
  if (env.XDG_RUNTIME_DIR && (await usable(join(env.XDG_RUNTIME_DIR, 'cairn')))) return join(env.XDG_RUNTIME_DIR, 'cairn');
  const cache = env.XDG_CACHE_HOME ? resolve(env.XDG_CACHE_HOME) : join(env.HOME || homedir(), '.cache');
  // (Only where the daemon's socket path fits: a very long home would fail there, where <tmp> would not.)
  if (Buffer.byteLength(join(cache, 'cairn', 'wal-0123456789abcdef.sock')) < MAX_SOCKET_PATH && (await usable(join(cache, 'cairn'))))
    return join(cache, 'cairn');
  return join(tmpdir(), `cairn-${process.getuid?.() ?? 'user'}`);
}

/** An existing directory of ours that we can write, or one we can create: its nearest existing ancestor is writable. */
async function usable(dir: string): Promise<boolean> {
  let path = dir;
  let info = await lstat(path).catch(() => undefined);
  while (!info && path !== dirname(path)) {
    path = dirname(path);
    info = await lstat(path).catch(() => undefined);
  }
  if (!info?.isDirectory() || (path === dir && info.uid !== process.getuid?.())) return false;
  return access(path, constants.W_OK).then(
    () => true,
    () => false,
  );
}

/** Creates the directory 0700, or checks that an existing one is ours and closed to others. */
export async function ensureSpoolDir(dir: string): Promise<void> {
  await mkdir(dir, { recursive: true, mode: 0o700 }).catch((cause: unknown) => {
    throw new CairnError('Cairn.Usage', `cannot create the WAL spool directory ${dir}`, {
      hint: 'give a writable directory with --spool-dir or CAIRN_SPOOL_DIR',
      cause,
    });
  });
  const info = await lstat(dir);
  const uid = process.getuid?.();
  if (info.isDirectory() && uid !== undefined && info.uid !== uid)
    throw new CairnError(
      'Cairn.Usage',
      `the WAL spool directory ${dir} belongs to another user (uid ${info.uid}), not to this one (uid ${uid}): it was created by someone else, and nothing of this user's goes there`,
      {
        hint: `give this user a spool directory of its own with CAIRN_SPOOL_DIR (in the server's environment) or --spool-dir, for example ~/.cache/cairn, and find out who created ${dir}`,
      },
    );
  if (!info.isDirectory() || (info.mode & 0o077) !== 0) {
    throw new CairnError(
      'Cairn.Usage',
      `the WAL spool directory ${dir} must be a directory owned by this user (uid ${uid ?? '?'}) with mode 0700; it is ${info.isDirectory() ? `owned by uid ${info.uid}, mode ${(info.mode & 0o777).toString(8)}` : 'not a directory'}`,
      {
        hint: `chmod 700 ${dir} (as its owner), or give another directory with --spool-dir / CAIRN_SPOOL_DIR`,
      },
    );
  }
}

/** How a repository is named to pick its daemon: an absolute path for a directory, the URL otherwise. */
export function repositoryIdentity(repo: string): string {
  return /^[a-z][a-z0-9+.-]*:\/\//i.test(repo) ? repo.replace(/\/+$/, '') : resolve(repo);
}

/** One daemon per repository and stream, named by a hash of both (short enough for a socket path). */
export function spoolPaths(dir: string, repo: string, stream: string): SpoolPaths {
  return pathsOf(
    dir,
    `wal-${createHash('sha256')
      .update(`${repositoryIdentity(repo)}\0${stream}`)
      .digest('hex')
      .slice(0, 16)}`,
  );
}

/** Every daemon's paths in a spool directory (for stopping them all), by their sockets. */
export async function spoolDaemons(dir: string): Promise<SpoolPaths[]> {
  const names = await readdir(dir).catch(() => [] as string[]);
  return names.filter((n) => /^wal-[0-9a-f]{16}\.sock$/.test(n)).map((n) => pathsOf(dir, n.slice(0, -'.sock'.length)));
}

function pathsOf(dir: string, name: string): SpoolPaths {
  const base = join(dir, name);
  const paths = { dir, socket: `${base}.sock`, pid: `${base}.pid`, log: `${base}.log`, lock: `${base}.lock`, prefetch: `${base}.prefetch` };
  if (Buffer.byteLength(paths.socket) >= MAX_SOCKET_PATH) {
    throw new CairnError(
      'Cairn.Usage',
      `the WAL spool directory path is too long for a Unix socket (${paths.socket} is ${Buffer.byteLength(paths.socket)} bytes, at most ${MAX_SOCKET_PATH - 1})`,
      {
        hint: 'give a shorter --spool-dir / CAIRN_SPOOL_DIR',
      },
    );
  }
  return paths;
}
