import { PINS_PREFIX, idFromKey } from './layout.ts';
import type { Repository } from './repository.ts';

/** Ids of the snapshots pinned with `cairn pin`: retention keeps them whatever its rules say. */
export async function pinnedIds(repo: Repository): Promise<Set<string>> {
  const ids = new Set<string>();
  for await (const object of repo.storage.list(PINS_PREFIX)) {
    const id = idFromKey(object.key, PINS_PREFIX);
    if (id) ids.add(id);
  }
  return ids;
}
