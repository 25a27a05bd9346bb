import { CairnError } from './errors.ts';

/**
 * How a reference the user typed ("latest", a full id, a unique prefix) becomes one snapshot:
 * the same rules, order and errors for every CLI command (agent/commands/snapshot-selector.ts,
 * Repository.findSnapshot) and for the console's restore planner (core/restore-planning.ts). Pure:
 * the callers list the snapshots and say which are damaged.
 */

/** What the choice needs to know of a snapshot. */
export interface ChoiceCandidate {
  id: string;
  time: string;
  /** Why it is not a good backup (a damage marker names it, or it is tagged damaged): `latest` passes over it. */
  damaged?: string | undefined;
}

/** A reference's shape: "latest", or 4 to 64 lowercase hex digits of an id. */
export const SNAPSHOT_REFERENCE = /^(latest|[0-9a-f]{4,64})$/;

/** Newest first, as `latest` reads them: by the manifest's time, then by id (a stable order for equal times). */
export function newestFirst<T extends ChoiceCandidate>(snapshots: readonly T[]): T[] {
  return [...snapshots].sort((a, b) => b.time.localeCompare(a.time) || b.id.localeCompare(a.id));
}

/**
 * The id a full id or a unique prefix names among `ids`. `where` ends the messages ("in
 * file:///srv/repo", "of plan orders-db"). An id that is not hex, or shorter than 4 digits, is
 * a usage error before anything is looked up.
 */
export function resolveSnapshotId(ref: string, ids: readonly string[], where: string): string {
  if (ref === 'latest' || !SNAPSHOT_REFERENCE.test(ref))
    throw new CairnError('Cairn.Usage', `invalid snapshot id ${JSON.stringify(ref)}`, {
      hint: 'give "latest", a full id, or at least 4 hex digits of one (see `cairn snapshots`)',
    });
  const matches = [...new Set(ids.filter((id) => id.startsWith(ref)))];
  if (matches.length === 0)
    throw new CairnError('Cairn.NotFound', `no snapshot ${ref} ${where}`, { hint: 'list them with `cairn snapshots`' });
  if (matches.length > 1)
    throw new CairnError('Cairn.Usage', `snapshot id prefix ${ref} is ambiguous (${matches.length} snapshots ${where})`, {
      hint: 'give more digits',
    });
  return matches[0] as string;
}

export interface LatestChoice<T extends ChoiceCandidate> {
  /** The newest good candidate; undefined when none is good. */
  chosen: T | undefined;
  /** Damaged candidates newer than the one chosen (all of them when none is), newest first, each with why. */
  passedOver: Array<{ snapshot: T; why: string }>;
}

/** `latest` among `candidates` (any order): the newest one that is not damaged, and the damaged ones newer than it. */
export function chooseLatest<T extends ChoiceCandidate>(candidates: readonly T[]): LatestChoice<T> {
  const passedOver: Array<{ snapshot: T; why: string }> = [];
  for (const s of newestFirst(candidates)) {
    if (s.damaged === undefined) return { chosen: s, passedOver };
    passedOver.push({ snapshot: s, why: s.damaged });
  }
  return { chosen: undefined, passedOver };
}

/**
 * The error when `latest` means nothing. `filtered`: the caller narrowed the snapshots (by host,
 * path, tag, plan or source host) and the repository holds others, which the message says.
 */
export function noLatestError(choice: LatestChoice<ChoiceCandidate>, where: string, filtered: { by: string; others: boolean }): CairnError {
  if (choice.passedOver.length > 0)
    return new CairnError('Cairn.NotFound', `no good snapshot ${where}: every one "latest" could mean is damaged`, {
      hint: 'name a snapshot by its id (see `cairn snapshots`)',
    });
  if (filtered.others)
    return new CairnError('Cairn.NotFound', `no snapshot ${where} matches the ${filtered.by} given`, {
      hint: 'see the hosts, paths and tags there are with `cairn snapshots`',
    });
  return new CairnError('Cairn.NotFound', `no snapshot ${where} yet`, { hint: 'run a backup first' });
}

/** The warning for each snapshot `latest` passed over. */
export function passedOverWarning(snapshot: ChoiceCandidate, why: string): string {
  return `latest passes over snapshot ${snapshot.id} (${snapshot.time}): ${why}; restore it by its id if you need it`;
}
