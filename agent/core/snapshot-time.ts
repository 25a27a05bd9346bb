import type { Snapshot } from './snapshot.ts';

/** What listSnapshots returns. */
export interface SnapshotListing {
  snapshots: Snapshot[];
  unreadable: Array<{ id: string; error: string }>;
  /** Manifests whose `time` was later than their storage time allows: what they claimed, and the time used. */
  clamped: Array<{ id: string; claimed: string; bounded: string }>;
}

/**
 * How far a manifest's `time` may run ahead of the storage's clock: a backup writes its manifest
 * after it started, so an honest manifest is dated before it is stored, unless the host's clock
 * runs fast by more than this.
 */
export const MANIFEST_CLOCK_SKEW_MS = 15 * 60_000;

/**
 * Bounds a manifest's times by when the storage says it was stored (docs/repository-format.md,
 * "Latest" and "newest"): `time` and `endTime` become at most `modified + MANIFEST_CLOCK_SKEW_MS`,
 * in place. Everything that orders snapshots — `latest`, a backup's parent, retention, PITR bases,
 * the console's planner — reads them through listSnapshots/readSnapshot, so a manifest dated a year
 * ahead by a host with create rights cannot become the newest or push real snapshots out of
 * `--keep-daily`/`--keep-last`. Returns the claimed `time` when it was moved, else undefined.
 */
export function boundSnapshotTime(snapshot: Snapshot, modified: number): string | undefined {
  storedTimes.set(snapshot, modified);
  const bound = modified + MANIFEST_CLOCK_SKEW_MS;
  const claimed = snapshot.time;
  if (Date.parse(snapshot.endTime) > bound) snapshot.endTime = new Date(bound).toISOString();
  if (Date.parse(claimed) <= bound) return undefined;
  snapshot.time = new Date(bound).toISOString();
  return claimed;
}

/** Each manifest's storage modification time, kept beside the snapshot object rather than in it (it is not part of the manifest). */
const storedTimes = new WeakMap<Snapshot, number>();

/**
 * When the storage says the snapshot's manifest was stored (its commit), in epoch ms; undefined for
 * a snapshot not read through the repository. Unlike `time`, no host's clock moves it, so retention
 * orders by it: a host 10 minutes fast must not make its older backups look newer than one
 * committed after them (docs/locks-and-gc.md, "Retention").
 */
export function storedAt(snapshot: Snapshot): number | undefined {
  return storedTimes.get(snapshot);
}
