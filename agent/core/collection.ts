import { z } from 'zod';
import { PACKS_PREFIX, collectionKey, packKey } from './layout.ts';
import type { DeletableStorage } from './storage.ts';

/**
 * `orchestration/gc/<generation>`: the packs the control plane's retention run
 * decided to delete, after it had already removed them from every index under
 * the exclusive lock. The sweep (one invocation per pack prefix, in parallel)
 * deletes them; a sweep that is retried or runs twice only deletes what is
 * still there. Pack ids are random and reveal nothing, so the record is plain.
 */
export const collectionSchema = z.object({
  generation: z.string().regex(/^[0-9A-Za-z-]{1,80}$/),
  planId: z.string(),
  created: z.string(),
  packs: z.array(z.string().regex(/^[0-9a-f]{64}$/)),
});
export type Collection = z.infer<typeof collectionSchema>;

export async function writeCollection(storage: DeletableStorage, collection: Collection): Promise<void> {
  await storage.put(collectionKey(collection.generation), Buffer.from(JSON.stringify(collectionSchema.parse(collection))), {
    ifAbsent: true,
  });
}

export async function readCollection(storage: DeletableStorage, generation: string): Promise<Collection> {
  if (!/^[0-9A-Za-z-]{1,80}$/.test(generation)) throw new Error(`invalid GC generation ${JSON.stringify(generation)}`);
  return collectionSchema.parse(JSON.parse((await storage.get(collectionKey(generation))).toString('utf8')));
}

/** Deletes the collection's packs under one two-hex prefix; returns how many were there and their bytes. */
export async function sweepPrefix(
  storage: DeletableStorage,
  collection: Collection,
  prefix: string,
): Promise<{ deleted: number; bytes: number }> {
  if (!/^[0-9a-f]{2}$/.test(prefix)) throw new Error(`invalid pack prefix ${JSON.stringify(prefix)}`);
  const doomed = new Set(collection.packs.filter((id) => id.startsWith(prefix)));
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
