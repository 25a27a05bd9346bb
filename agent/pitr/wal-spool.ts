import { createHash } from 'node:crypto';
import { access, constants, lstat, mkdir, readdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
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

/** --spool-dir, else CAIRN_SPOOL_DIR, else /var/spool/cairn when usable, else $XDG_RUNTIME_DIR/cairn, else <tmp>/cairn-<uid>. */
export async function chooseSpoolDir(given: string | undefined, env: NodeJS.ProcessEnv): Promise<string> {
  if (given) return resolve(given);
  if (env.CAIRN_SPOOL_DIR) return resolve(env.CAIRN_SPOOL_DIR);
  if (await usable('/var/spool/cairn')) return '/var/spool/cairn';
  if (env.XDG_RUNTIME_DIR && (await usable(join(env.XDG_RUNTIME_DIR, 'cairn')))) return join(env.XDG_RUNTIME_DIR, 'cairn');
  return join(tmpdir(), `cairn-${process.getuid?.() ?? 'user'}`);
}

async function usable(dir: string): Promise<boolean> {
  try {
    const info = await lstat(dir);
    return (
      info.isDirectory() &&
      info.uid === process.getuid?.() &&
      (await access(dir, constants.W_OK).then(
        () => true,
        () => false,
      ))
    );
  } catch {
    // Not there yet: usable when its parent lets us create it.
    return access(resolve(dir, '..'), constants.W_OK).then(
      () => true,
      () => false,
    );
  }
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
  if (!info.isDirectory() || (uid !== undefined && info.uid !== uid) || (info.mode & 0o077) !== 0) {
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
