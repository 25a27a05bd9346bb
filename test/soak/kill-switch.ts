import { watch, readdirSync, readFileSync, statSync, openSync, readSync, closeSync, mkdirSync, type FSWatcher } from 'node:fs';
import { join } from 'node:path';
import { runCliProcess, type CliResult } from '../helpers/cli.ts';

/**
 * Lands a SIGKILL of a real `cairn` process in a chosen phase of its work, with
 * no hook in the product: the repository directory (file backend) is watched
 * with fs.watch; at each change the process is stopped (SIGSTOP, and every
 * thread seen stopped in /proc), the repository's state is read while nothing
 * can move, and the process is killed if that state is the phase wanted, else
 * continued. So the phase a kill is counted in is the state the process was
 * killed in, read exactly, never a guess from timing.
 *
 * Phases (judged against the repository as it was when the process started):
 * - mid-pack: a pack's temporary file (starts "CPK\x01", not yet linked into
 *   packs/) exists: a pack upload was cut;
 * - packs-index: new packs are placed, no pack write is in flight, no new
 *   index file is placed (an index write may be in flight);
 * - index-manifest: a backup or copy has placed its new index file and no new
 *   manifest;
 * - gc-deletes: prune has deleted at least one index file or pack that existed
 *   when it started (whether more were doomed is checked by the caller);
 * - other: anything else (start-up, locks, reading, after the commit, and every
 *   moment of operations without these phases).
 */
export const PHASES = ['mid-pack', 'packs-index', 'index-manifest', 'gc-deletes'] as const;
export type Phase = (typeof PHASES)[number] | 'other';

export interface RepoState {
  packs: Set<string>;
  index: Set<string>;
  snapshots: Set<string>;
  /** Temporary files: name → whether it is a pack not yet placed. */
  tmp: Map<string, { pack: boolean }>;
}

function names(dir: string, recursive = false): Set<string> {
  try {
    return new Set(
      (readdirSync(dir, { recursive, withFileTypes: true }) as Array<{ name: string; parentPath: string; isFile(): boolean }>)
        .filter((e) => e.isFile())
        .map((e) => join(e.parentPath, e.name).slice(dir.length + 1)),
    );
  } catch {
    return new Set();
  }
}

function head(path: string): Buffer {
  const out = Buffer.alloc(5);
  try {
    const fd = openSync(path, 'r');
    try {
      readSync(fd, out, 0, 5, 0);
    } finally {
      closeSync(fd);
    }
  } catch {
    // Gone meanwhile: counts as nothing written.
  }
  return out;
}

const PACK_MAGIC = Buffer.from('CPK\x01', 'latin1');

export function readRepoState(repo: string): RepoState {
  const tmp = new Map<string, { pack: boolean }>();
  for (const name of names(join(repo, 'tmp'))) {
    const path = join(repo, 'tmp', name);
    let nlink: number;
    try {
      nlink = statSync(path).nlink;
    } catch {
      continue;
    }
    // nlink 2: already linked into place (create-if-absent), only the unlink of the temporary name is left.
    tmp.set(name, { pack: nlink === 1 && head(path).subarray(0, 4).equals(PACK_MAGIC) });
  }
  return {
    packs: names(join(repo, 'packs'), true),
    index: names(join(repo, 'index')),
    snapshots: names(join(repo, 'snapshots')),
    tmp,
  };
}

const added = (before: Set<string>, after: Set<string>): number => [...after].filter((n) => !before.has(n)).length;
const removed = (before: Set<string>, after: Set<string>): number => [...before].filter((n) => !after.has(n)).length;

export function classify(operation: string, before: RepoState, now: RepoState): Phase {
  const deleted = removed(before.index, now.index) + removed(before.packs, now.packs);
  if (operation === 'prune' && deleted > 0) return 'gc-deletes';
  const packInFlight = [...now.tmp].some(([name, t]) => t.pack && !before.tmp.has(name));
  if (packInFlight) return 'mid-pack';
  const newIndex = added(before.index, now.index);
  const newPacks = added(before.packs, now.packs);
  if ((operation === 'backup' || operation === 'copy') && newIndex > 0 && added(before.snapshots, now.snapshots) === 0)
    return 'index-manifest';
  if (newPacks > 0 && newIndex === 0) return 'packs-index';
  return 'other';
}

function threadsStopped(pid: number): boolean | undefined {
  let tasks: string[];
  try {
    tasks = readdirSync(`/proc/${pid}/task`);
  } catch {
    return undefined;
  }
  for (const task of tasks) {
    let stat: string;
    try {
      stat = readFileSync(`/proc/${pid}/task/${task}/stat`, 'utf8');
    } catch {
      continue;
    }
    const state = stat.slice(stat.lastIndexOf(')') + 2)[0];
    if (state !== 'T' && state !== 't' && state !== 'Z' && state !== 'X') return false;
  }
  return true;
}

/** SIGSTOP, then waits until every thread is stopped (a thread in a system call stops when it returns). */
async function stop(pid: number): Promise<boolean> {
  try {
    process.kill(pid, 'SIGSTOP');
  } catch {
    return false;
  }
  const deadline = Date.now() + 10_000;
  for (let i = 0; Date.now() < deadline; i++) {
    const stopped = threadsStopped(pid);
    if (stopped === undefined) return false;
    if (stopped) return true;
    // The first checks at once (a stop takes microseconds), then at most every millisecond.
    await new Promise((resolve) => (i < 100 ? setImmediate(resolve) : setTimeout(resolve, 1)));
  }
  // Never left stopped: a thread stuck in an uninterruptible call is let go and looked at next time.
  process.kill(pid, 'SIGCONT');
  return false;
}

export type KillPlan = { phase: Exclude<Phase, 'other'> } | { afterMs: number } | undefined;

export interface KillRun {
  result: CliResult;
  /** The phase the kill landed in, or undefined when the process was not killed. */
  phase: Phase | undefined;
  /** How often the process was stopped, looked at and continued. */
  looks: number;
  ms: number;
}

/**
 * Runs `cairn <args>` as a child and kills it as planned, watching the
 * repository directory `watched` (the one the operation writes).
 */
export async function runWithKill(
  args: string[],
  env: Record<string, string>,
  watched: string,
  operation: string,
  plan: KillPlan,
): Promise<KillRun> {
  for (const dir of ['tmp', 'index', 'snapshots', 'packs']) mkdirSync(join(watched, dir), { recursive: true });
  const before = readRepoState(watched);
  const watchers: FSWatcher[] = [];
  let phase: Phase | undefined;
  let looks = 0;
  let finished = false;
  let busy = false;
  let again = false;
  let timer: NodeJS.Timeout | undefined;
  let pid = 0;
  const started = Date.now();

  const look = async (force: boolean): Promise<void> => {
    if (finished || phase !== undefined || pid === 0) return;
    if (busy) {
      again = true;
      return;
    }
    busy = true;
    try {
      do {
        again = false;
        if (!(await stop(pid))) return;
        const now = classify(operation, before, readRepoState(watched));
        if (force || (plan && 'phase' in plan && plan.phase === now)) {
          phase = now;
          process.kill(pid, 'SIGKILL');
          return;
        }
        looks++;
        process.kill(pid, 'SIGCONT');
      } while (again);
    } catch {
      // The process ended meanwhile.
    } finally {
      busy = false;
    }
  };

  const result = await runCliProcess(args, env, {
    onSpawn: (child) => {
      pid = child;
      if (!plan) return;
      if ('afterMs' in plan) {
        timer = setTimeout(() => void look(true), plan.afterMs);
        return;
      }
      const onEvent = (): void => void look(false);
      for (const dir of ['tmp', 'index', 'snapshots']) watchers.push(watch(join(watched, dir), onEvent));
      watchers.push(watch(join(watched, 'packs'), { recursive: true }, onEvent));
    },
  });
  finished = true;
  if (timer) clearTimeout(timer);
  for (const w of watchers) w.close();
  if (result.signal !== 'SIGKILL') phase = undefined;
  return { result, phase, looks, ms: Date.now() - started };
}
