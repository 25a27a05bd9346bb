import { statfs } from 'node:fs/promises';
import { CairnError } from '../core/errors.ts';

/**
 * A drill may run on a production host, on the file system production writes to. It checks the
 * room it needs before restoring (checkFreeSpace), but what a snapshot grows to is the snapshot's
 * choice: a logical dump of a few bytes can insert gigabytes, and a real one can build bigger
 * indexes than expected. So while it runs, the drill watches the free space of its scratch file
 * system and stops itself (a host failure: nothing is marked damaged) before it takes the last
 * of it: `CAIRN_DRILL_MIN_FREE` bytes are always left, by default 5% of the file system, at most
 * 1 GiB. A fast writer can pass the floor between two looks (every half second), so the floor is
 * a margin, not a quota; a scratch file system of its own is the real bound (CAIRN_DRILL_DIR).
 */

const LOOK_EVERY_MS = 500;

export async function checkFreeSpace(directory: string, needed: number): Promise<void> {
  const space = await statfs(directory);
  const free = space.bavail * space.bsize;
  if (free < needed)
    throw new CairnError(
      'Cairn.Failure',
      `not enough free space for the drill in ${directory}: ${free} bytes free, ${needed} needed; nothing was restored`,
      { hint: 'point CAIRN_DRILL_DIR (or --scratch-dir) at a file system with room, or run the drill on another host' },
    );
}

/** The bytes a drill leaves free on its scratch file system: CAIRN_DRILL_MIN_FREE, else 5% of it, at most 1 GiB. */
export async function minFreeSpace(directory: string, env: NodeJS.ProcessEnv): Promise<number> {
  const set = env.CAIRN_DRILL_MIN_FREE;
  if (set !== undefined && set !== '') {
    if (!/^\d+$/.test(set))
      throw new CairnError('Cairn.Usage', `CAIRN_DRILL_MIN_FREE=${JSON.stringify(set)} is not a number of bytes`, {
        hint: 'give the bytes a drill must leave free on its scratch file system, e.g. 2147483648',
      });
    return Number(set);
  }
  const space = await statfs(directory);
  return Math.min(1 << 30, Math.floor(space.blocks * space.bsize * 0.05));
}

function mib(bytes: number): string {
  return `${(bytes / 2 ** 20).toFixed(0)} MiB`;
}

export interface SpaceGuard {
  /** Aborted when the caller's signal is, or when the free space fell below the floor. */
  readonly signal: AbortSignal;
  /** Throws the host failure naming the floor once the guard has stopped the drill; else nothing. */
  check(): void;
  stop(): void;
}

/** Watches `directory`'s file system until stop(); below `floor` free bytes it aborts its signal. */
export function watchFreeSpace(directory: string, floor: number, outer: AbortSignal | undefined): SpaceGuard {
  const controller = new AbortController();
  let tripped: CairnError | undefined;
  const onOuter = (): void => controller.abort(outer?.reason);
  if (outer?.aborted) onOuter();
  else outer?.addEventListener('abort', onOuter, { once: true });
  let looking = false;
  const timer = setInterval(() => {
    if (looking || controller.signal.aborted) return;
    looking = true;
    statfs(directory)
      .then((space) => {
        const free = space.bavail * space.bsize;
        if (free >= floor || controller.signal.aborted) return;
        tripped = new CairnError(
          'Cairn.Failure',
          `the drill stopped itself: the free space of ${directory}'s file system fell to ${mib(free)}, below the ${mib(floor)} it leaves free; what the snapshot restores to is bigger than that file system can hold, which says nothing against its data`,
          {
            hint: 'point CAIRN_DRILL_DIR (or --scratch-dir) at a file system of its own with more room, or lower CAIRN_DRILL_MIN_FREE if this one may be filled further',
          },
        );
        controller.abort(tripped);
      })
      // A look that fails (the directory removed as the drill ends) stops nothing.
      .catch(() => undefined)
      .finally(() => {
        looking = false;
      });
  }, LOOK_EVERY_MS);
  timer.unref();
  return {
    signal: controller.signal,
    check() {
      if (tripped) throw tripped;
    },
    stop() {
      clearInterval(timer);
      outer?.removeEventListener('abort', onOuter);
    },
  };
}
