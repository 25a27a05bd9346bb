import { readLocks } from '../core/locks.ts';
import type { Repository } from '../core/repository.ts';
import type { DeletableStorage } from '../core/storage.ts';
import { operationContext, record, type OperationOptions } from './operation.ts';

export interface UnlockReport {
  /** Lock holders whose records were deleted. */
  removed: number;
  /** Holders whose locks still look active and were left (always 0 with `all`). */
  stillActive: number;
}

/**
 * `cairn unlock`: deletes the lock records of operations that released their
 * lock or whose lease expired (docs/locks-and-gc.md). With `all`, active ones
 * too: only for when their processes are known to be gone, since a live
 * holder would then run on without the protection its lock gave it.
 */
export async function removeLocks(
  repo: Repository,
  storage: DeletableStorage,
  options: OperationOptions & { all: boolean },
): Promise<UnlockReport> {
  const states = await readLocks(repo);
  let removed = 0;
  for (const s of states) {
    if (s.state === 'active' && !options.all) continue;
    for (const key of s.keys) await storage.delete(key);
    removed++;
  }
  const active = states.filter((s) => s.state === 'active').length;
  await record(operationContext(repo, options), 'unlock', { removed, all: options.all });
  return { removed, stillActive: options.all ? 0 : active };
}
