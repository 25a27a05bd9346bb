import { CairnError } from '../core/errors.ts';
import { probeStorageClock } from '../core/locks.ts';
import type { Repository, Who } from '../core/repository.ts';
import type { DeletableStorage } from '../core/storage.ts';

/**
 * Whether these credentials may delete, asked before a repair that deletes
 * changes anything. Hosts hold create-only rights (docs/contracts.md, "Who may
 * do what"), and nothing in the Storage interface says which kind a storage
 * was opened with: the only answer is the storage's own. So the repair creates
 * a small object (a released lock record, which blocks no one and which
 * `cairn unlock` removes should it stay) and deletes it again; a refusal stops
 * the repair before its first write, instead of halfway, with new index files
 * written beside the old ones it could not remove.
 */
export async function assertCanDelete(
  repo: Repository,
  storage: DeletableStorage,
  command: string,
  deletes: string,
  who: Who,
): Promise<void> {
  const probe = await probeStorageClock(repo, who);
  try {
    await storage.delete(probe.key);
  } catch (error) {
    if (error instanceof CairnError && error.code === 'Cairn.Cancelled') throw error;
    throw new CairnError(
      'Cairn.Storage',
      `\`${command}\` deletes ${deletes}, but ${storage.location} refused to delete the probe object ${probe.key} it had just created: these credentials cannot delete (a host's create-only role); nothing was changed`,
      {
        hint: 'hosts are not meant to delete: run it with operator credentials (add --dry-run to see what it would change)',
        cause: error,
      },
    );
  }
}
