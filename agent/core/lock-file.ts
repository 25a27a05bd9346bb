import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { open, unlink } from 'node:fs/promises';
import { hostname } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { writeNewFileDurably } from './durable-file.ts';

/**
 * A single-winner lock file on a local file system, for the host's own
 * coordination (the metrics file's read-merge-write, the WAL daemon's start),
 * never for repository data (that is locks.ts, on the storage).
 *
 * The lock appears whole: its record (`pid host nonce`) is written to a
 * temporary file and hard-linked to the lock's name, which fails if the name
 * is taken. Its holder removes it only while it still holds its own record.
 *
 * A lock left by a holder that died (its pid is gone on this host, or it is
 * older than `staleMs`) is taken over. Judging and removing are two steps, so
 * two waiters that both judged the same lock stale could otherwise remove
 * each other's fresh lock and both go on as holders: removing another's lock
 * is therefore done only under a second lock file, `<lock>.break`, and only
 * if the lock still holds the record that was judged stale. Only a breaker
 * that dies inside those few file operations leaves `<lock>.break` behind;
 * it is removed in turn once its own holder is gone or it is older than
 * BREAK_STALE_MS, without that second guard (the one race left: two waiters
 * both removing such a leftover at the same instant).
 */

/** A breaker holds `<lock>.break` for a stat, a read and an unlink: one this old was left by a breaker that died. */
const BREAK_STALE_MS = 10_000;

export interface HeldLockFile {
  /** Removes the lock if it still holds this holder's record (a lock taken over as stale is the new holder's). */
  release(): Promise<void>;
}

interface Holder {
  record: string;
  ageMs: number;
}

/**
 * One attempt: the lock (undefined while another live holder has it). A
 * stale lock is taken over in the same attempt. `mode` is the lock file's:
 * waiters of other users must be able to read the record to judge it.
 */
export async function tryLockFile(path: string, options: { staleMs: number; mode: number }): Promise<HeldLockFile | undefined> {
  // Read first: a waiter polling a held lock writes nothing (creating one costs a temporary file and an fsync).
  const holder = await readHolder(path);
  if (holder) {
    if (!stale(holder, options.staleMs)) return undefined;
    await breakStale(path, holder, options);
  }
  return create(path, options.mode);
}

/** Creates the lock with a new record: undefined if the name is taken. */
async function create(path: string, mode: number): Promise<HeldLockFile | undefined> {
  const record = `${process.pid} ${hostname()} ${randomBytes(8).toString('hex')}\n`;
  const tmp = join(dirname(path), `.${basename(path).slice(0, 64)}.${randomBytes(6).toString('hex')}.tmp`);
  try {
    await writeNewFileDurably(path, record, tmp, mode);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'EEXIST') return undefined;
    throw error;
  }
  return {
    release: async () => {
      if ((await readHolder(path).catch(() => undefined))?.record === record) await unlink(path).catch(() => undefined);
    },
  };
}

/** The lock's record and age, read through one descriptor; undefined if there is no lock. */
async function readHolder(path: string): Promise<Holder | undefined> {
  let handle;
  try {
    handle = await open(path, 'r');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw error;
  }
  try {
    const [info, record] = await Promise.all([handle.stat(), handle.readFile('utf8')]);
    return { record, ageMs: Date.now() - info.mtimeMs };
  } finally {
    await handle.close();
  }
}

/**
 * A holder is gone when its record names a pid of this host that no longer
 * runs, or when its lock is older than `staleMs` (another host's, or a record
 * of an older cairn, which wrote none or only a pid).
 */
function stale(holder: Holder, staleMs: number): boolean {
  if (holder.ageMs > staleMs) return true;
  const match = /^(\d+)(?: (\S+) [0-9a-f]+)?\n?$/.exec(holder.record);
  if (!match) return false;
  if (match[2] !== undefined && match[2] !== hostname()) return false;
  return !processAlive(Number(match[1]));
}

/** Removes the lock if it still holds the record judged stale, under `<lock>.break` so no two waiters do it at once. */
async function breakStale(path: string, judged: Holder, options: { staleMs: number; mode: number }): Promise<void> {
  const guardPath = `${path}.break`;
  const guard = await create(guardPath, options.mode);
  if (!guard) {
    const breaker = await readHolder(guardPath);
    if (breaker && stale(breaker, BREAK_STALE_MS)) await unlink(guardPath).catch(() => undefined);
    return;
  }
  try {
    // Still the same record, and still stale: a lock written in place (no hard links) is empty for a moment, and an
    // empty record is judged by its age alone.
    const now = await readHolder(path);
    if (now && now.record === judged.record && stale(now, options.staleMs)) await unlink(path).catch(() => undefined);
  } finally {
    await guard.release();
  }
}

/**
 * True while a process with this pid runs (EPERM: it exists, as another
 * user). A daemon outlives the client that started it, so once it exits it
 * waits as a zombie until init reaps it: that counts as gone.
 */
export function processAlive(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
  try {
    return !/^\d+ \(.*\) Z/s.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return true;
  }
}
