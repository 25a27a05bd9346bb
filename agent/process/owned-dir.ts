import { constants as fsConstants, readFileSync, readdirSync, readlinkSync } from 'node:fs';
import { chmod, lstat, mkdtemp, open, readdir, writeFile, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { errorMessage } from '../core/errors.ts';
import { run } from './run.ts';

/**
 * Working directories that must not outlive a killed process: a drill's scratch directory (a
 * restored copy of the snapshot, as big as the database) and an engine's temporary directory (the
 * database password's option file or PGPASSFILE, an etcd snapshot of the whole keyspace). The
 * process removes its own when it returns, throws or is cancelled; a SIGKILL (the OOM killer,
 * `kill -9`, a host agent's timeout) gives it no chance, so the next process that makes one
 * under the same parent removes what killed ones left (`removeKilledDirs`).
 *
 * Each directory holds an owner file: the pid and start time (in clock ticks since boot, from
 * /proc) of the process it belongs to, the boot's id and the pid namespace. A directory is removed
 * as a killed process's only when all of these hold: its name has the prefix, it is a directory
 * (not a link) owned by this process's user, the owner file is a small regular file (not a link
 * or a FIFO, which would hang the read), it was written during this boot in this pid namespace (a
 * pid from a container sharing the directory, or from another host sharing it over NFS, says
 * nothing about a process here), it names a process that no longer runs (no such pid, a zombie,
 * or a pid since given to a process that started at another time), and no live process works in
 * it. A running process's, another user's, another namespace's or host's, or anything without
 * the owner file is left alone.
 */

/** The directories of one kind: their name prefix and the name of their owner file. */
export interface OwnedKind {
  prefix: string;
  owner: string;
  /** What they are, for messages: "the scratch directory of a drill". */
  what: string;
}

/** A process's start time from /proc/PID/stat (field 22, counted after the command's closing parenthesis), or undefined when it is gone or a zombie. */
function startTime(pid: number): string | undefined {
  let stat: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
  } catch {
    return undefined;
  }
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // fields[0] is field 3 (the state); field 22 is fields[19].
  if (fields[0] === 'Z' || fields[0] === 'X') return undefined;
  return fields[19];
}

/** This boot and pid namespace, as the owner file records them: `<boot id> <pid namespace>`; undefined without /proc. */
function here(): string | undefined {
  try {
    // A /proc mounted for another pid namespace (unshare --pid without --mount-proc) shows other
    // processes under our pids: nothing it says about a pid is about ours.
    if (readlinkSync('/proc/self') !== String(process.pid)) return undefined;
    return `${readFileSync('/proc/sys/kernel/random/boot_id', 'latin1').trim()} ${readlinkSync('/proc/self/ns/pid')}`;
  } catch {
    return undefined;
  }
}

/**
 * A live process that still uses the directory: its working directory is in it, or its command
 * line names a path in it (a private server's data directory). Without setpriv's --pdeathsig a
 * killed drill's server runs on: removing its data under it would free no space (its files stay
 * open) and lose the socket and pid file that lead to it.
 */
function userOf(dir: string): string | undefined {
  let pids: string[];
  try {
    pids = readdirSync('/proc').filter((name) => /^\d+$/.test(name));
  } catch {
    return undefined;
  }
  for (const pid of pids) {
    try {
      const cwd = readlinkSync(`/proc/${pid}/cwd`);
      const cmdline = readFileSync(`/proc/${pid}/cmdline`, 'latin1');
      if (!(cwd === dir || cwd.startsWith(`${dir}/`) || cmdline.includes(`${dir}/`))) continue;
      if (startTime(Number(pid)) === undefined) continue;
      return `${pid} (${readFileSync(`/proc/${pid}/comm`, 'latin1').trim()})`;
    } catch {
      // Gone meanwhile, or not ours to look at.
    }
  }
  return undefined;
}

/**
 * Removes such a directory: with coreutils' rm, which never follows a link, not even one swapped
 * in while it runs. Node's recursive rm walks by path: a private server's user, which owns the data
 * directories in here, could swap one for a link to root's files between its steps, and root would
 * delete them. A tree it cannot remove whole (a restored read-only directory, when the drill is
 * not root) is made writable first (chmod -R does not follow links either).
 */
export async function removeOwnedDir(dir: string): Promise<void> {
  const remove = ['rm', '-rf', '--one-file-system', '--', dir];
  try {
    await run(remove);
  } catch {
    await run(['chmod', '-R', 'u+rwX', '--', dir]).catch(() => undefined);
    await run(remove);
  }
}

/** Makes a directory of this kind under `parent` with `mode`, recording this process as its owner. */
export async function makeOwnedDir(parent: string, kind: OwnedKind, mode: number): Promise<string> {
  const dir = await mkdtemp(join(parent, kind.prefix));
  await chmod(dir, mode);
  await writeFile(join(dir, kind.owner), `${process.pid} ${startTime(process.pid) ?? ''} ${here() ?? ''}\n`, { mode: 0o600 });
  return dir;
}

/** The owner file's text when it is a regular file of at most 256 bytes (opened without following a link, and without waiting on a FIFO). */
async function ownerText(dir: string, owner: string): Promise<string | undefined> {
  let handle: FileHandle;
  try {
    handle = await open(join(dir, owner), fsConstants.O_RDONLY | fsConstants.O_NOFOLLOW | fsConstants.O_NONBLOCK);
  } catch {
    return undefined;
  }
  try {
    if (!(await handle.stat()).isFile()) return undefined;
    const buffer = Buffer.alloc(257);
    const { bytesRead } = await handle.read(buffer, 0, buffer.length, 0);
    return bytesRead < buffer.length ? buffer.toString('latin1', 0, bytesRead) : undefined;
  } catch {
    return undefined;
  } finally {
    await handle.close();
  }
}

/** Whether the directory's owner, as its owner file records it, no longer runs here; false when that cannot be told. */
async function ownerGone(dir: string, owner: string): Promise<boolean> {
  const text = await ownerText(dir, owner);
  const match = text === undefined ? null : /^(\d+) (\d+) (\S+ \S+)\n$/.exec(text);
  if (!match || match[3] !== here()) return false;
  return startTime(Number(match[1])) !== match[2];
}

/**
 * Removes the directories of this kind that killed processes left under `parent`; returns their
 * paths. A directory it cannot remove, or that a live process still uses, is reported through
 * `warn` and left.
 */
export async function removeKilledDirs(parent: string, kind: OwnedKind, warn: (message: string) => void): Promise<string[]> {
  const uid = process.getuid?.();
  let names: string[];
  try {
    names = await readdir(parent);
  } catch {
    return [];
  }
  const removed: string[] = [];
  for (const name of names) {
    if (!name.startsWith(kind.prefix)) continue;
    const dir = join(parent, name);
    const info = await lstat(dir).catch(() => undefined);
    if (!info?.isDirectory() || (uid !== undefined && info.uid !== uid)) continue;
    if (!(await ownerGone(dir, kind.owner))) continue;
    const user = userOf(dir);
    if (user) {
      warn(`left ${dir}, ${kind.what} that was killed: process ${user} still uses it; stop it, and the next run removes the directory`);
      continue;
    }
    try {
      await removeOwnedDir(dir);
      removed.push(dir);
    } catch (error) {
      warn(`could not remove ${dir}, left by ${kind.what} that was killed: ${errorMessage(error)}`);
    }
  }
  return removed;
}
