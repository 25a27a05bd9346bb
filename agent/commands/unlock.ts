import { probeStorageClock, readLockTable } from '../core/locks.ts';
import type { Repository } from '../core/repository.ts';
import type { DeletableStorage } from '../core/storage.ts';
import { operationContext, record, type OperationOptions } from './operation.ts';

export interface UnlockReport {
  /** Lock holders whose records were deleted, and unreadable lock records deleted. */
  removed: number;
  /** Holders whose locks still look active and were left (always 0 with `all`). */
  stillActive: number;
}

/**
 * `cairn unlock`: deletes the lock records of operations that released their
 * lock or whose lease expired (docs/locks-and-gc.md), and lock records that
 * cannot be read once a lease of storage time has passed. With `all`, active
 * and unreadable ones too: only for when their processes are known to be
 * gone, since a live holder would then run on without the protection its lock
 * gave it. Leases are judged by the storage's clock (a probe record it writes
 * and removes).
 */
export async function removeLocks(
  repo: Repository,
  storage: DeletableStorage,
  options: OperationOptions & { all: boolean },
): Promise<UnlockReport> {
  const probe = await probeStorageClock(repo, options.who);
  const table = await readLockTable(repo, { storageNow: probe.storageNow });
  const states = table.states.filter((s) => !s.keys.includes(probe.key));
  let removed = 0;
  const deleted = new Set<string>();
  for (const s of states) {
    if (s.state === 'active' && !options.all) continue;
    for (const key of s.keys) await storage.delete(key);
    for (const key of s.keys) deleted.add(key);
    removed++;
  }
  for (const bad of table.unreadable) {
    if (deleted.has(bad.key)) continue;
    if (!bad.expired && !options.all) {
      options.progress.warn(
        `left the unreadable lock record ${bad.key} (${bad.error}): it blocks no one; removed once a lease has passed, or now with --all`,
      );
      continue;
    }
    await storage.delete(bad.key);
    removed++;
  }
  await storage.delete(probe.key);
  const active = states.filter((s) => s.state === 'active').length;
  await record(operationContext(repo, options), 'unlock', { removed, all: options.all });
  return { removed, stillActive: options.all ? 0 : active };
}
