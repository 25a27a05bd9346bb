import { makeOwnedDir, removeKilledDirs, removeOwnedDir, type OwnedKind } from '../process/owned-dir.ts';

/**
 * A drill's scratch directory, and what a killed drill left of one (process/owned-dir.ts).
 *
 * A drill removes its scratch directory when it returns, throws or is cancelled. A SIGKILL gave it
 * no chance: the restored copy of the snapshot, as big as the database, stayed on the production
 * host's disk, and the next drill's free-space check counted it against itself. Its private server
 * is killed with it (drill-server-user.ts, deathSignalPrefix); the directory is removed by the next
 * drill on the same scratch parent, before that one measures its room. A directory a live process
 * still works in (a killed drill's server without setpriv's --pdeathsig: removing its data under
 * it would free no space, its files stay open, and lose the socket and pid file that lead to it) is
 * left, with a warning.
 */
const SCRATCH: OwnedKind = { prefix: 'cairn-drill-', owner: '.cairn-drill-owner', what: 'the scratch directory of a drill' };

/** Removes a scratch directory without following a link, not even one swapped in while it runs (process/owned-dir.ts). */
export const removeScratch = removeOwnedDir;

/** Makes the scratch directory under `parent` with `mode`, recording this process as its owner. */
export function makeScratch(parent: string, mode: number): Promise<string> {
  return makeOwnedDir(parent, SCRATCH, mode);
}

/** Removes the scratch directories of killed drills under `parent`; returns their paths. */
export function removeKilledScratch(parent: string, warn: (message: string) => void): Promise<string[]> {
  return removeKilledDirs(parent, SCRATCH, warn);
}
