import { readFileSync } from 'node:fs';
import { chmod, lstat, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { errorMessage } from '../core/errors.ts';

/**
 * A drill's scratch directory, and what a killed drill left of one.
 *
 * A drill removes its scratch directory when it returns, throws or is cancelled. A SIGKILL (the
 * OOM killer, `kill -9`, a host agent's timeout) gives it no chance: the restored copy of the
 * snapshot, as big as the database, stayed on the production host's disk, and the next drill's
 * free-space check counted it against itself. Its private server is killed with it
 * (drill-server-user.ts, privateServerPrefix); the directory is removed by the next drill on the
 * same scratch parent, before that one measures its room.
 *
 * Each scratch directory holds OWNER: the pid and start time (in clock ticks since boot, from
 * /proc) of the process whose drill it is. A directory is removed as a killed drill's only when
 * all of these hold: its name is a scratch directory's, it is a directory (not a link) owned by
 * this process's user, OWNER names a process that no longer runs (no such pid, a zombie, or a
 * pid since given to a process that started at another time). A running drill's, another user's,
 * or anything without OWNER is left alone.
 */

export const SCRATCH_PREFIX = 'cairn-drill-';
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

/** Makes the scratch directory under `parent` with `mode`, recording this process as its owner. */
export async function makeScratch(parent: string, mode: number): Promise<string> {
  const scratch = await mkdtemp(join(parent, SCRATCH_PREFIX));
  await chmod(scratch, mode);
  await writeFile(join(scratch, OWNER), `${process.pid} ${startTime(process.pid) ?? ''}\n`, { mode: 0o600 });
  return scratch;
}

/** Whether the scratch directory's owner, as OWNER records it, no longer runs; false when there is no readable OWNER. */
async function ownerGone(scratch: string): Promise<boolean> {
  let text: string;
  try {
    text = await readFile(join(scratch, OWNER), 'latin1');
  } catch {
    return false;
  }
  const match = /^(\d+) (\d+)\n$/.exec(text);
  if (!match) return false;
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
    try {
      await rm(scratch, { recursive: true, force: true });
      removed.push(scratch);
    } catch (error) {
      warn(`could not remove ${scratch}, left by a drill that was killed: ${errorMessage(error)}`);
    }
  }
  return removed;
}
