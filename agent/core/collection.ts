import { z } from 'zod';
import { PACKS_PREFIX, packKey } from './layout.ts';
import type { DeletableStorage } from './storage.ts';

/**
 * `orchestration/gc/<generation>`: the work list of the control plane's sweep,
 * written by a retention run once it has settled one or more GC generations
 * (core/gc-collect.ts): the packs to delete, which no index names any more and
 * no manifest uses. The sweep (one invocation per pack prefix, in parallel)
 * deletes them; a sweep that is retried or runs twice only deletes what is
 * still there. The control plane seals it (core/gc-work-list.ts writes and reads
 * it), and even a sealed list is not trusted beyond that: the sweep deletes only
 * packs that the sealed, settled generations it names (`generations`) marked.
 */
export const collectionSchema = z.object({
  generation: z.string().regex(/^[0-9A-Za-z-]{1,80}$/),
  planId: z.string(),
  created: z.string(),
  packs: z.array(z.string().regex(/^[0-9a-f]{64}$/)),
  /** The GC generations (gc/<name>) this list settles. */
  generations: z.array(z.string()).default([]),
});
export type Collection = z.input<typeof collectionSchema>;

/**
 * Deletes the collection's packs under one two-hex prefix that `marked` also holds (the packs of
 * the sealed generations the collection names: a forged list cannot add any); returns how many
 * were there and their bytes.
 */
export async function sweepPrefix(
  storage: DeletableStorage,
  collection: Collection,
  prefix: string,
  marked: ReadonlySet<string>,
): Promise<{ deleted: number; bytes: number }> {
  if (!/^[0-9a-f]{2}$/.test(prefix)) throw new Error(`invalid pack prefix ${JSON.stringify(prefix)}`);
  const doomed = new Set(collection.packs.filter((id) => id.startsWith(prefix) && marked.has(id)));
  let deleted = 0;
  let bytes = 0;
  for await (const object of storage.list(`${PACKS_PREFIX}${prefix}/`)) {
    const id = object.key.slice(object.key.lastIndexOf('/') + 1);
    if (!doomed.has(id)) continue;
    await storage.delete(packKey(id));
    deleted++;
    bytes += object.size;
  }
  return { deleted, bytes };
}
