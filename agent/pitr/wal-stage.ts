import { randomBytes } from 'node:crypto';
import { lstat } from 'node:fs/promises';
import { basename } from 'node:path';
import { writeFileDurably } from '../core/durable-file.ts';

/**
 * The restore's staging directory (docs/pitr.md, "Fast path"): cairn restore
 * creates it inside the restored data directory, owner-only and owned by the
 * database server's user, and names it in restore_command. The WAL daemon
 * places the next segments there, whole and verified, and restore_command
 * takes one with a plain `mv` instead of starting cairn.
 */

/** The directory's name in the data directory: the prefix and a random id, new for every restore. */
export const STAGE_PREFIX = 'cairn-wal-stage.';
const STAGE_NAME = /^cairn-wal-stage\.[0-9a-f]{16}$/;

/** A fresh staging directory name for one restore. */
export function newStageName(): string {
  return `${STAGE_PREFIX}${randomBytes(8).toString('hex')}`;
}

/**
 * Why the daemon must not stage into `dir`, or undefined when it may: a
 * directory of a restore (by its name), not a symbolic link, owned by this
 * user and closed to every other one.
 */
export async function stageDirProblem(dir: string): Promise<string | undefined> {
  if (!STAGE_NAME.test(basename(dir))) return `${dir} is not a staging directory written by cairn restore`;
  const info = await lstat(dir).catch(() => undefined);
  if (!info) return `${dir} does not exist`;
  if (!info.isDirectory()) return `${dir} is not a directory`;
  const uid = process.getuid?.();
  if (uid !== undefined && info.uid !== uid) return `${dir} is owned by uid ${info.uid}, not this user (uid ${uid})`;
  if ((info.mode & 0o077) !== 0) return `${dir} has mode ${(info.mode & 0o777).toString(8)}, not 700`;
  return undefined;
}

/**
 * Writes `data` to `path` through a temporary name beside it, flushed to
 * disk before the rename: the name only ever holds the whole file, even
 * after a crash. The temporary name never matches a WAL file name, so
 * restore_command never takes one.
 */
export function writeDurably(path: string, data: Uint8Array): Promise<void> {
  return writeFileDurably(path, data, `${path}.cairn-${randomBytes(6).toString('hex')}.tmp`, 0o600);
}
