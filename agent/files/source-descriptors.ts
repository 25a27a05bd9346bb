import { closeSync, constants, existsSync, fstatSync, openSync, type BigIntStats } from 'node:fs';

/**
 * Reading a backup source that other users can change while root reads it. O_NOFOLLOW guards only
 * the last part of a path: a user who owns a directory on it can swap that directory for a symlink
 * between the walk's lstat and its open, and have root read another file (/etc/shadow) into the
 * snapshot under the user's name, owner and mode, or walk another tree (/proc, to make the backup
 * endless, or one that --exclude leaves out) in its place. So each directory is opened without
 * following a symlink and checked to be the one listed, then listed and its entries looked up
 * through that descriptor (/proc/self/fd/N/NAME: Node has no openat), and each file read must be
 * the one listed (sameFile). What fails these checks is reported and skipped like an unreadable file.
 */

/** Whether a directory's entries can be looked up through its descriptor (else by path, as before). */
export const PROC_FD = existsSync('/proc/self/fd');
/** Linux's limit on a path, its final NUL included. */
const PATH_MAX = 4096;

/** A directory opened for the walk: its descriptor, the path its entries are looked up under, the length of the path that stands for, its lstat. */
export interface OpenedDirectory {
  fd: number;
  base: Buffer;
  bytes: number;
  listed: BigIntStats;
}

/** The directories being read, by descriptor: one per level of depth while the walk is in them. */
export class SourceDirectories {
  private readonly open = new Map<number, { shown: string; bytes: number }>();

  /** Opens `dir`, the directory `listed` describes. */
  openListed(dir: Buffer, listed: BigIntStats): OpenedDirectory {
    const fd = openSync(dir, constants.O_RDONLY | constants.O_DIRECTORY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
    try {
      const opened = fstatSync(fd, { bigint: true });
      if (opened.dev !== listed.dev || opened.ino !== listed.ino) throw replaced('another directory');
    } catch (error) {
      closeSync(fd);
      throw error;
    }
    const bytes = this.pathBytes(dir);
    this.open.set(fd, { shown: this.shown(dir.toString()), bytes });
    return { fd, base: PROC_FD ? Buffer.from(`/proc/self/fd/${fd}`) : dir, bytes, listed };
  }

  close(fd: number): void {
    this.open.delete(fd);
    closeSync(fd);
  }

  /** `text` (a system error's message) with the directories being read shown by their paths, not their descriptors. */
  shown(text: string): string {
    return text.replace(/\/proc\/self\/fd\/(\d+)/g, (path, fd: string) => this.open.get(Number(fd))?.shown ?? path);
  }

  /** The length in bytes of the path `path` stands for (looked up through a descriptor, it is much shorter). */
  private pathBytes(path: Buffer): number {
    const match = /^\/proc\/self\/fd\/(\d+)/.exec(path.subarray(0, 32).toString('latin1'));
    const parent = match ? this.open.get(Number(match[1])) : undefined;
    return match && parent ? parent.bytes + path.length - match[0].length : path.length;
  }
}

/**
 * An entry's path is `bytes` long: a walk by descriptor meets no PATH_MAX, but a restore, which works
 * by path, would. An entry past it is refused here, as a walk by path refused it.
 */
export function checkPathLength(bytes: number): void {
  if (bytes >= PATH_MAX)
    throw Object.assign(new Error(`its path is longer than the ${PATH_MAX - 1} bytes a restore could create`), {
      code: 'ENAMETOOLONG',
      syscall: 'lstat',
    });
}

/** The file opened must be the one listed: same device and inode, still a regular file. */
export function sameFile(opened: BigIntStats, listed: BigIntStats): void {
  if (opened.isFile() && opened.dev === listed.dev && opened.ino === listed.ino) return;
  throw replaced(opened.isFile() ? 'another file' : 'another kind of file');
}

/** A file system error (reported and skipped by the walk), as the system's own are. */
function replaced(what: string): Error {
  return Object.assign(new Error(`${what} is at its path since it was listed (it or a directory on the way was replaced); not read`), {
    code: 'ESTALE',
    syscall: 'open',
  });
}
