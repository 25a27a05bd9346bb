import { isLockRecordName, readLockTable } from './locks.ts';
import type { Repository } from './repository.ts';
import type { DeletableStorage } from './storage.ts';

/**
 * Clearing the records of locks that ended long ago (docs/locks-and-gc.md, "Lease locks").
 * Hosts can only create objects, so every lock ever taken leaves its records under `locks/`,
 * and every acquisition lists and reads the latest record of every holder: without this the
 * cost of taking a lock grows with the repository's age. The control plane's retention run and
 * `cairn prune` call it under their exclusive lock (core/gc-collect.ts tidyGenerations).
 *
 * Only the storage's clock decides, as for leases: a holder's records go when it released, or
 * its lease ran out, at least `ENDED_LOCK_RETENTION_MS` before storage-now, and none of its
 * objects (junk above its records included) was stored since. An active holder is never
 * touched; nor is a record that cannot be read, or an object under `locks/` that is no lock
 * record's name, until it was stored that long ago. The records' own times (a host's clock, or a
 * forger's) count for nothing.
 */

/** How long the records of an ended lock stay: a day of storage time. */
export const ENDED_LOCK_RETENTION_MS = 24 * 60 * 60_000;

export interface ClearedLocks {
  /** Holders whose records were all deleted. */
  holders: number;
  /** Objects deleted under `locks/` (the holders' records, unreadable records, stray objects). */
  objects: number;
}

export interface ClearEndedLocksOptions {
  /** The storage's current time (epoch ms), from an object the caller has just written (a clock probe). */
  storageNow: number;
  /** How long an ended lock's records stay; ENDED_LOCK_RETENTION_MS unless given. */
  olderThanMs?: number;
  /** Throws when the caller's own lock was lost: nothing more is deleted. */
  assertHeld: () => void;
}

export async function clearEndedLocks(repo: Repository, storage: DeletableStorage, options: ClearEndedLocksOptions): Promise<ClearedLocks> {
  const age = options.olderThanMs ?? ENDED_LOCK_RETENTION_MS;
  const now = options.storageNow;
  const table = await readLockTable(repo, { storageNow: now });
  // An object the listing did not date (stored after it) counts as stored now: it is kept.
  const storedAt = (key: string): number => table.objects.get(key)?.modified ?? now;
  const old = (time: number): boolean => now - time >= age;
  const result: ClearedLocks = { holders: 0, objects: 0 };
  const handled = new Set<string>();
  const remove = async (key: string): Promise<void> => {
    options.assertHeld();
    await storage.delete(key);
    result.objects++;
  };

  for (const state of table.states) {
    for (const key of state.keys) handled.add(key);
    if (state.state === 'active') continue;
    const ended = state.state === 'released' ? state.modified : state.effectiveExpiry;
    const newest = Math.max(...state.keys.map(storedAt));
    if (!old(Math.max(ended, newest))) continue;
    // Lowest sequence first: a run stopped half-way leaves the holder's latest record, which still says how it ended.
    for (const key of [...state.keys].sort()) await remove(key);
    result.holders++;
  }
  for (const bad of table.unreadable) {
    if (handled.has(bad.key)) continue;
    handled.add(bad.key);
    if (old(bad.modified)) await remove(bad.key);
  }
  // Objects under locks/ that are no lock record's name (nothing reads them, but every acquisition lists them).
  // A lock record left unjudged (its holder's latest record vanished while it was read) waits for the next run.
  for (const [key, info] of table.objects) {
    if (!handled.has(key) && !isLockRecordName(key) && old(info.modified)) await remove(key);
  }
  return result;
}
