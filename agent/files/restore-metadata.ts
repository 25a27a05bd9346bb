import { constants as fsConstants } from 'node:fs';
import { chmod, lchown, lstat, lutimes, open, utimes, type FileHandle } from 'node:fs/promises';
import { DamagedError } from '../core/errors.ts';
import type { TreeEntry } from '../core/tree.ts';

/** Owner, mode and mtime as a tree entry (or the manifest's `root`) records them. */
export type Meta = Pick<TreeEntry, 'mode' | 'uid' | 'gid' | 'mtimeNs'>;

const isRoot = process.getuid?.() === 0;
const ourUid = process.getuid?.() ?? -1;
const ourGid = process.getgid?.() ?? -1;
const ZERO = Buffer.alloc(64 << 10);

/**
 * Size, owner, mode, mtime. Each is a system call on a latency-bound pool, so
 * the ones that would change nothing are skipped: truncate only when the file
 * ends in a hole, chown only when the owner differs from ours. Ownership only
 * as root: anyone else cannot give a file away.
 */
export async function finishFile(handle: FileHandle, size: number, written: number, entry: TreeEntry): Promise<void> {
  if (entry.size !== undefined && entry.size !== size) throw new DamagedError(`restored ${size} bytes, the snapshot records ${entry.size}`);
  if (written < size) await handle.truncate(size);
  if (isRoot && (entry.uid !== ourUid || entry.gid !== ourGid)) await handle.chown(entry.uid, entry.gid);
  await handle.chmod(entry.mode);
  const mtime = microsecondTime(entry.mtimeNs);
  await handle.utimes(mtime, mtime);
}

/** A symlink's metadata (its mode is not settable on Linux): the link itself, never what it points to. */
export async function applyLinkMeta(path: Buffer, meta: Meta): Promise<void> {
  const mtime = microsecondTime(meta.mtimeNs);
  if (isRoot) await lchown(path, meta.uid, meta.gid);
  await lutimes(path, mtime, mtime);
}

/**
 * A directory's metadata, through a handle opened with O_NOFOLLOW|O_DIRECTORY:
 * whatever sits at the path by now (a symlink swapped in, or a target the
 * operator named through a symlink), owner and mode go only to a real
 * directory. Throws ELOOP/ENOTDIR when the path is not one.
 */
export async function applyDirMeta(path: Buffer, meta: Meta): Promise<void> {
  const mtime = microsecondTime(meta.mtimeNs);
  let handle: FileHandle;
  try {
    handle = await open(path, fsConstants.O_RDONLY | fsConstants.O_DIRECTORY | fsConstants.O_NOFOLLOW);
  } catch (error) {
    // A directory we may change but not read (an existing one under --force, not as root): by path, once lstat says it is no link.
    if ((error as NodeJS.ErrnoException).code !== 'EACCES' || !(await lstat(path)).isDirectory()) throw error;
    await chmod(path, meta.mode);
    await utimes(path, mtime, mtime);
    return;
  }
  try {
    if (isRoot) await handle.chown(meta.uid, meta.gid);
    await handle.chmod(meta.mode);
    await handle.utimes(mtime, mtime);
  } finally {
    await handle.close();
  }
}

/**
 * The time to hand utimes for a recorded mtime: seconds as a decimal string, because Node turns a
 * negative number into "now" while it passes a numeric string through, and times before 1970 are
 * as real as any (mtimeNs is negative for them).
 *
 * Exact to the microsecond, the finest Node sets: libuv takes a double and keeps whole
 * microseconds, cutting toward zero (uv__fs_to_timespec), so the nanoseconds below are lost (a
 * limit of Node's fs calls; the snapshot and `dump`'s tar keep them). The nearest double to the
 * recorded time is not enough: when it falls just below, the cut takes a microsecond off (one file
 * in ten with random nanoseconds, half of those stamped in whole microseconds). The middle of the
 * microsecond is: a double below 2^33 seconds (the year 2242) lies within 0.48 µs of the value
 * asked for, so the cut lands on the microsecond meant. Before 1970 the cut toward zero goes up,
 * so there the middle is taken half a microsecond below the one meant.
 */
export function microsecondTime(ns: string): string {
  const value = BigInt(ns);
  // Whole microseconds and seconds, rounded down (toward the past, as stat's seconds and nanoseconds are).
  const micros = value >= 0n ? value / 1000n : -((-value + 999n) / 1000n);
  const seconds = micros >= 0n ? micros / 1_000_000n : -((-micros + 999_999n) / 1_000_000n);
  const fraction = Number(micros - seconds * 1_000_000n);
  return String(Number(seconds) + (fraction + (micros >= 0n ? 0.5 : -0.5)) / 1e6);
}

export async function writeAll(handle: FileHandle, data: Buffer, position: number): Promise<void> {
  let done = 0;
  while (done < data.length) {
    const { bytesWritten } = await handle.write(data, done, data.length - done, position + done);
    done += bytesWritten;
  }
}

/** All zero bytes: written as a hole instead. */
export function isZero(data: Buffer): boolean {
  for (let at = 0; at < data.length; at += ZERO.length) {
    const end = Math.min(data.length, at + ZERO.length);
    if (data.compare(ZERO, 0, end - at, at, end) !== 0) return false;
  }
  return true;
}
