import { constants as fsConstants, readFileSync, readdirSync, readlinkSync } from 'node:fs';
import { chmod, lstat, mkdtemp, open, readdir, writeFile, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { errorMessage } from '../core/errors.ts';
import { run } from '../process/run.ts';

/**
 * A drill's scratch directory, and what a killed drill left of one.
 *
 * A drill removes its scratch directory when it returns, throws or is cancelled. A SIGKILL (the
 * OOM killer, `kill -9`, a host agent's timeout) gives it no chance: the restored copy of the
 * snapshot, as big as the database, stayed on the production host's disk, and the next drill's
 * free-space check counted it against itself. Its private server is killed with it
 * (drill-server-user.ts, deathSignalPrefix); the directory is removed by the next drill on the
 * same scratch parent, before that one measures its room.
 *
 * Each scratch directory holds OWNER: the pid and start time (in clock ticks since boot, from
 * /proc) of the process whose drill it is, the boot's id and the pid namespace. A directory is
 * removed as a killed drill's only when all of these hold: its name is a scratch directory's, it
 * is a directory (not a link) owned by this process's user, OWNER is a small regular file (not a
 * link or a FIFO, which would hang the read), it was written during this boot in this pid
 * namespace (a pid from a container sharing the directory, or from another host sharing it over
 * NFS, says nothing about a process here), and it names a process that no longer runs (no such
 * pid, a zombie, or a pid since given to a process that started at another time). A running
 * drill's, another user's, another namespace's or host's, or anything without OWNER is left alone.
 */

const SCRATCH_PREFIX = 'cairn-drill-';
const OWNER = '.cairn-drill-owner';

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

/** This boot and pid namespace, as OWNER records them: `<boot id> <pid namespace>`; undefined without /proc. */
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
function userOf(scratch: string): string | undefined {
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
      if (!(cwd === scratch || cwd.startsWith(`${scratch}/`) || cmdline.includes(`${scratch}/`))) continue;
      if (startTime(Number(pid)) === undefined) continue;
      return `${pid} (${readFileSync(`/proc/${pid}/comm`, 'latin1').trim()})`;
    } catch {
      // Gone meanwhile, or not ours to look at.
    }
  }
  return undefined;
}

/**
 * Removes a scratch directory: with coreutils' rm, which never follows a link, not even one swapped
 * in while it runs. Node's recursive rm walks by path: a private server's user, which owns the data
 * directories in here, could swap one for a link to root's files between its steps, and root would
 * delete them. A tree it cannot remove whole (a restored read-only directory, when the drill is
 * not root) is made writable first (chmod -R does not follow links either).
 */
export async function removeScratch(scratch: string): Promise<void> {
  const remove = ['rm', '-rf', '--one-file-system', '--', scratch];
  try {
    await run(remove);
  } catch {
    await run(['chmod', '-R', 'u+rwX', '--', scratch]).catch(() => undefined);
    await run(remove);
  }
}

/** Makes the scratch directory under `parent` with `mode`, recording this process as its owner. */
export async function makeScratch(parent: string, mode: number): Promise<string> {
  const scratch = await mkdtemp(join(parent, SCRATCH_PREFIX));
  await chmod(scratch, mode);
  await writeFile(join(scratch, OWNER), `${process.pid} ${startTime(process.pid) ?? ''} ${here() ?? ''}\n`, { mode: 0o600 });
  return scratch;
}

/** OWNER's text when it is a regular file of at most 256 bytes (opened without following a link, and without waiting on a FIFO). */
async function ownerText(scratch: string): Promise<string | undefined> {
  let handle: FileHandle;
  try {
    handle = await open(join(scratch, OWNER), fsConstants.O_RDONLY | fsConstants.O_NOFOLLOW | fsConstants.O_NONBLOCK);
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

/** Whether the scratch directory's owner, as OWNER records it, no longer runs here; false when that cannot be told. */
async function ownerGone(scratch: string): Promise<boolean> {
  const text = await ownerText(scratch);
  const match = text === undefined ? null : /^(\d+) (\d+) (\S+ \S+)\n$/.exec(text);
  if (!match || match[3] !== here()) return false;
  return startTime(Number(match[1])) !== match[2];
}

/**
 * Removes the scratch directories of killed drills under `parent`; returns their paths. A
 * directory it cannot remove is reported through `warn` and left.
 */
export async function removeKilledScratch(parent: string, warn: (message: string) => void): Promise<string[]> {
  const uid = process.getuid?.();
  let names: string[];
  try {
    names = await readdir(parent);
  } catch {
    return [];
  }
  const removed: string[] = [];
  for (const name of names) {
    if (!name.startsWith(SCRATCH_PREFIX)) continue;
    const scratch = join(parent, name);
    const info = await lstat(scratch).catch(() => undefined);
    if (!info?.isDirectory() || (uid !== undefined && info.uid !== uid)) continue;
    if (!(await ownerGone(scratch))) continue;
    const user = userOf(scratch);
    if (user) {
      warn(
        `left ${scratch}, the scratch directory of a drill that was killed: process ${user} still uses it (its private server?); stop it, and the next drill removes the directory`,
      );
      continue;
    }
    try {
      await removeScratch(scratch);
      removed.push(scratch);
    } catch (error) {
      warn(`could not remove ${scratch}, left by a drill that was killed: ${errorMessage(error)}`);
    }
  }
  return removed;
}
