import { collectionSchema, type Collection } from './collection.ts';
import { CairnError, NotFoundError, errorMessage } from './errors.ts';
import { collectionKey } from './layout.ts';
import type { RecordSeal } from './run-lease.ts';
import type { DeletableStorage } from './storage.ts';

/**
 * The control plane's GC work list, `orchestration/gc/<id>` (core/collection.ts has its fields),
 * sealed like the run lease and run records (docs/orchestration.md, "Sealed records"): the hex
 * HMAC-SHA256 under the control plane's seal key of `cairn/v1/control|<object name>|<JSON>`, a
 * newline, then the JSON. The key is a secret only the functions read; hosts hold the
 * repository's key, so nothing sealed under it could tell the control plane's list from theirs.
 *
 * Sealing matters even though the sweep deletes only packs a sealed, settled GC generation
 * marked: a settlement keeps the marked packs a manifest committed during the grace uses, and
 * only the work list leaves them out. A list written by anyone else could name them again.
 * So `readWorkList` refuses a list whose seal does not verify as a whole: nothing it names is
 * to be deleted. (Wiring: apply-retention writes the list with `writeWorkList` and gc-sweep reads
 * it with `readWorkList`, both with the seal from functions/runtime.ts controlSeal.)
 */

export async function writeWorkList(storage: DeletableStorage, seal: RecordSeal, list: Collection): Promise<void> {
  const name = collectionKey(list.generation);
  const json = JSON.stringify(collectionSchema.parse(list));
  await storage.put(name, Buffer.from(`${seal.sign(name, json)}\n${json}`), { ifAbsent: true });
}

/** The list, if the control plane sealed it under this name; Cairn.Damaged naming the problem otherwise. */
export async function readWorkList(storage: DeletableStorage, seal: RecordSeal, id: string): Promise<Collection> {
  if (!/^[0-9A-Za-z-]{1,80}$/.test(id)) throw new CairnError('Cairn.InvalidInput', `invalid GC work list id ${JSON.stringify(id)}`);
  const name = collectionKey(id);
  let raw: string;
  try {
    raw = (await storage.get(name)).toString('utf8');
  } catch (error) {
    if (error instanceof NotFoundError)
      throw new CairnError('Cairn.NotFound', `the GC work list ${name} does not exist in ${storage.location}`, {
        hint: "the sweep runs on the list its own execution's ApplyRetention wrote; start a new retention run",
        cause: error,
      });
    throw error;
  }
  const refuse = (why: string): CairnError =>
    new CairnError(
      'Cairn.Damaged',
      `the GC work list ${name} in ${storage.location} was refused: ${why}; the control plane did not write it, and the sweep deletes nothing it names`,
      {
        hint: 'delete the object (hosts may not write under orchestration/: check the bucket policy and who holds write access), then run retention again',
      },
    );
  const newline = raw.indexOf('\n');
  if (newline < 0) throw refuse('it carries no seal');
  const json = raw.slice(newline + 1);
  if (!seal.verify(name, json, raw.slice(0, newline))) throw refuse('its seal does not verify (another key, another object, or altered)');
  let list: Collection;
  try {
    list = collectionSchema.parse(JSON.parse(json));
  } catch (error) {
    throw refuse(`it is sealed but not a work list (${errorMessage(error)})`);
  }
  if (list.generation !== id) throw refuse(`it is sealed but names work list ${JSON.stringify(list.generation)}`);
  return list;
}
