import { chmod, chown, lchown, lutimes, utimes, type FileHandle } from 'node:fs/promises';
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
  const mtime = nsToSeconds(entry.mtimeNs);
  await handle.utimes(mtime, mtime);
}

/** A directory's or symlink's metadata (a symlink's mode is not settable on Linux). */
export async function applyMeta(path: Buffer, meta: Meta, isLink: boolean): Promise<void> {
  const mtime = nsToSeconds(meta.mtimeNs);
  if (isLink) {
    if (isRoot) await lchown(path, meta.uid, meta.gid);
    await lutimes(path, mtime, mtime);
    return;
  }
  if (isRoot) await chown(path, meta.uid, meta.gid);
  await chmod(path, meta.mode);
  await utimes(path, mtime, mtime);
}

export function nsToSeconds(ns: string): number {
  const value = BigInt(ns);
  return Number(value / 1_000_000_000n) + Number(value % 1_000_000_000n) / 1e9;
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
