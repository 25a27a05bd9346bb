import { randomBytes } from 'node:crypto';
import { constants, readFileSync, readlinkSync } from 'node:fs';
import { lstat, open, readdir, unlink } from 'node:fs/promises';
import { hostname } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { writeNewFileDurably } from './durable-file.ts';
import { CairnError } from './errors.ts';

/**
 * A single-winner lock file on a local file system, for the host's own
 * coordination (the metrics file's read-merge-write, the WAL daemon's start),
 * never for repository data (that is locks.ts, on the storage).
 *
 * The lock appears whole: its record (`pid host nonce scope start`: the scope
 * is the boot id and the PID namespace, the start the process's start time)
 * is written to a temporary file and hard-linked to the lock's name, which
 * fails if the name is taken. Its holder removes it only while it still holds
 * its own record.
 *
 * A lock is taken over when its holder is gone: at once when the record names
 * a pid of the same boot and PID namespace that no longer runs, or now runs a
 * process started at another time (a hostname is not enough: containers
 * sharing the host's network share its hostname, and a restarted one reuses
 * small pids), else once it is older than `staleMs`
 * (another host's or container's record, or an older cairn's), or, for a live
 * holder, than `liveMs` (a stuck holder, or a pid reused by an unrelated
 * process). Judging and removing are two steps, so two waiters that both
 * judged the same lock stale could otherwise remove each other's fresh lock
 * and both go on as holders: removing another's lock is therefore done only
 * under a second lock file, `<lock>.break`, and only if the lock still holds
 * the record judged stale. A breaker holds it for a few file operations; a
 * leftover one is judged like a lock (at once if its holder died, after
 * BREAK_STALE_MS if its holder cannot be checked, after BREAK_LIVE_MS if it
 * lives) and removed, without a second guard but only if it still holds the
 * record judged stale; and a breaker checks that its guard is still its own
 * right before it removes the lock. What is left is a window of a few system
 * calls between a check and a removal, met only by waiters that both find a
 * breaker's leftover (one killed inside its own few operations) and are
 * descheduled there, or by a waiter stopped for minutes mid-takeover.
 */

/** A leftover `<lock>.break` whose holder cannot be checked (another container's) is removed after this. */
const BREAK_STALE_MS = 60_000;
/** A breaker that still runs keeps `<lock>.break` this long: it needs milliseconds, unless it is stopped. */
const BREAK_LIVE_MS = 10 * 60_000;
/** A record is a line of a few dozen bytes: anything longer is not one of ours, and is judged by its age. */
const MAX_RECORD_BYTES = 256;

export interface HeldLockFile {
  /** Removes the lock if it still holds this holder's record (a lock taken over as stale is the new holder's). */
  release(): Promise<void>;
  /** What this holder wrote into the lock. */
  readonly record: string;
}

export interface LockFileOptions {
  /** A lock whose holder cannot be checked is taken over once older than this. */
  staleMs: number;
  /** A lock whose holder still runs is taken over once older than this (default: 10 minutes, or staleMs if longer). */
  liveMs?: number;
  /** The lock file's mode: waiters of other users must be able to read the record to judge it. */
  mode: number;
}

interface Holder {
  record: string;
  ageMs: number;
}

/** One attempt: the lock, or undefined while a live holder has it. A stale lock is taken over in the same attempt. */
export async function tryLockFile(path: string, options: LockFileOptions): Promise<HeldLockFile | undefined> {
  const limits = { staleMs: options.staleMs, liveMs: options.liveMs ?? Math.max(10 * 60_000, options.staleMs) };
  // Read first: a waiter polling a held lock writes nothing (creating one costs a temporary file and an fsync).
  const holder = await readHolder(path);
  if (holder) {
    if (!stale(holder, limits)) return undefined;
    await breakStale(path, holder, limits, options.mode);
  }
  const held = await create(path, options.mode);
  if (held) await sweepTemporaries(path, limits.staleMs);
  return held;
}

/** Creates the lock with a new record: undefined if the name is taken. */
async function create(path: string, mode: number): Promise<HeldLockFile | undefined> {
  const record = `${process.pid} ${hostname()} ${randomBytes(8).toString('hex')} ${processScope() ?? '-'} ${processState(process.pid)?.start ?? '-'}\n`;
  const tmp = join(dirname(path), `${temporaryPrefix(path)}${randomBytes(6).toString('hex')}.tmp`);
  try {
    await writeNewFileDurably(path, record, tmp, mode);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'EEXIST') return undefined;
    throw new Error(`cannot create the lock file ${path}: ${(error as Error).message}`, { cause: error });
  }
  return {
    release: async () => {
      if (await holds(path, record)) await unlink(path).catch(() => undefined);
    },
    record,
  };
}

/** The lock's temporary files are named `<prefix><12 hex>.tmp`, the prefix capped so long lock names still fit. */
function temporaryPrefix(path: string): string {
  return `.${basename(path).slice(0, 64)}.`;
}

/**
 * Removes the temporary files of this lock and its breaker that a process killed while creating one
 * left behind (they are never renamed into place, so an old one is nobody's).
 */
async function sweepTemporaries(path: string, staleMs: number): Promise<void> {
  const prefixes = [temporaryPrefix(path), temporaryPrefix(`${path}.break`)];
  const names = await readdir(dirname(path)).catch(() => [] as string[]);
  for (const name of names) {
    if (!prefixes.some((prefix) => name.startsWith(prefix)) || !/\.[0-9a-f]{12}\.tmp$/.test(name)) continue;
    const file = join(dirname(path), name);
    const info = await lstat(file).catch(() => undefined);
    if (info?.isFile() && Math.abs(Date.now() - info.mtimeMs) > Math.max(staleMs, 60_000)) await unlink(file).catch(() => undefined);
  }
}

/**
 * The lock's record (at most MAX_RECORD_BYTES) and age; undefined if there is no lock. Opened without
 * following a symbolic link and without blocking (a FIFO there would block the read, and with it the
 * process's exit): anything but a regular file is an error naming it. A lock this user cannot read is
 * judged by its age alone.
 */
async function readHolder(path: string): Promise<Holder | undefined> {
  let handle;
  try {
    handle = await open(path, constants.O_RDONLY | constants.O_NONBLOCK | constants.O_NOFOLLOW);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return undefined;
    if (code === 'ELOOP') throw notALockFile(path, 'a symbolic link');
    if (code !== 'EACCES') throw error;
    const info = await lstat(path).catch(() => undefined);
    if (!info) return undefined;
    if (!info.isFile()) throw notALockFile(path, 'not a regular file');
    return { record: '', ageMs: Date.now() - info.mtimeMs };
  }
  try {
    const info = await handle.stat();
    if (!info.isFile()) throw notALockFile(path, info.isDirectory() ? 'a directory' : 'not a regular file');
    const buffer = Buffer.alloc(MAX_RECORD_BYTES + 1);
    const { bytesRead } = await handle.read(buffer, 0, buffer.length, 0);
    return { record: bytesRead > MAX_RECORD_BYTES ? '' : buffer.toString('utf8', 0, bytesRead), ageMs: Date.now() - info.mtimeMs };
  } finally {
    await handle.close();
  }
}

function notALockFile(path: string, what: string): CairnError {
  return new CairnError('Cairn.Locked', `${path} is ${what}, where cairn keeps a lock file`, {
    hint: `remove ${path} if no cairn command is running`,
  });
}

/**
 * Whether the holder is gone (see the top of this file). An age counts either way: a lock far in the
 * future was written before the clock was stepped back.
 */
function stale(holder: Holder, limits: { staleMs: number; liveMs: number }): boolean {
  const age = Math.abs(holder.ageMs);
  const current = /^(\d+) \S+ [0-9a-f]{16} (\S+) (\d+|-)\n$/.exec(holder.record);
  const scope = processScope();
  if (current && scope !== undefined && current[2] === scope) {
    const pid = Number(current[1]);
    const now = processState(pid);
    // The pid runs a process started at another time: the holder died and its pid was reused (a restarted
    // container's small pids, this very process included).
    if (now && current[3] !== '-' && now.start !== current[3]) return true;
    // Without /proc/PID (another user's, under hidepid), kill(pid, 0) still tells.
    const alive = now ? now.state !== 'Z' : processAlive(pid);
    return !alive || age > limits.liveMs;
  }
  // An older cairn's WAL start lock held only its pid, on this host.
  const pidOnly = /^(\d+)$/.exec(holder.record);
  if (pidOnly) return !processAlive(Number(pidOnly[1])) || age > limits.staleMs;
  return age > limits.staleMs;
}

/** Removes the lock if it still holds the record judged stale, under `<lock>.break` so no two waiters do it at once. */
async function breakStale(path: string, judged: Holder, limits: { staleMs: number; liveMs: number }, mode: number): Promise<void> {
  const guardPath = `${path}.break`;
  const guard = await create(guardPath, mode);
  if (!guard) {
    const breakLimits = { staleMs: BREAK_STALE_MS, liveMs: BREAK_LIVE_MS };
    const breaker = await readHolder(guardPath);
    if (breaker && stale(breaker, breakLimits)) await removeIfStill(guardPath, breaker, breakLimits);
    return;
  }
  try {
    // Our guard still: another waiter may have judged it a leftover (we were descheduled that long).
    if (await holds(guardPath, guard.record)) await removeIfStill(path, judged, limits);
  } finally {
    await guard.release();
  }
}

/**
 * Removes a lock file if it still holds the record judged stale, and is still stale: a lock written
 * in place (no hard links) is empty for a moment, and an empty record is judged by its age alone.
 */
async function removeIfStill(path: string, judged: Holder, limits: { staleMs: number; liveMs: number }): Promise<void> {
  const now = await readHolder(path).catch(() => undefined);
  if (now && now.record === judged.record && stale(now, limits)) await unlink(path).catch(() => undefined);
}

async function holds(path: string, record: string): Promise<boolean> {
  return (await readHolder(path).catch(() => undefined))?.record === record;
}

/**
 * A process's state letter and start time (clock ticks after boot), from /proc/PID/stat: after the
 * last ')', as the command name in parentheses may hold anything, ') Z' included.
 */
function processState(pid: number): { state: string; start: string } | undefined {
  if (!Number.isInteger(pid) || pid <= 0) return undefined;
  try {
    const text = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = text.slice(text.lastIndexOf(')') + 2).split(' ');
    const [state, start] = [fields[0], fields[19]];
    return state && start && /^\d+$/.test(start) ? { state, start } : undefined;
  } catch {
    return undefined;
  }
}

let scopeCache: string | null | undefined;
/** This boot and PID namespace (`boot-id/namespace-inode`), in which a pid names one process; undefined if /proc cannot say. */
function processScope(): string | undefined {
  if (scopeCache === undefined) {
    try {
      const boot = readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
      const namespace = /^pid:\[(\d+)\]$/.exec(readlinkSync('/proc/self/ns/pid'))?.[1];
      scopeCache = /^[0-9a-f-]+$/.test(boot) && namespace ? `${boot}/${namespace}` : null;
    } catch {
      scopeCache = null;
    }
  }
  return scopeCache ?? undefined;
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
  const now = processState(pid);
  return now ? now.state !== 'Z' : true;
}
