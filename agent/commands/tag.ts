import { randomBytes } from 'node:crypto';
import { CairnError } from '../core/errors.ts';
import { PINS_PREFIX, snapshotKey } from '../core/layout.ts';
import type { Repository, Who } from '../core/repository.ts';
import type { Snapshot } from '../core/snapshot.ts';
import type { DeletableStorage } from '../core/storage.ts';
import type { ProgressListener } from '../progress/progress.ts';
import { pinnedIds } from './forget.ts';
import { record, underLock, operationContext } from './operation.ts';
import { selectSnapshotList } from './snapshot-selector.ts';

export interface TagOptions {
  /** Snapshot ids, unique prefixes or "latest". */
  refs: string[];
  add: string[];
  remove: string[];
  /** Replace all tags with these first (an empty list clears them). */
  set?: string[] | undefined;
  dryRun?: boolean | undefined;
  who: Who;
  progress: ProgressListener;
  leaseMs?: number | undefined;
  lockWaitMs?: number | undefined;
}

export interface TagChange {
  /** The snapshot's id before (the manifest that was deleted, when changed). */
  id: string;
  /** Its id now: a new manifest when the tags changed, the same id when they did not. */
  newId: string;
  /** The id it was first committed as. */
  original: string;
  tagsBefore: string[];
  tags: string[];
  changed: boolean;
}

export function newTags(current: readonly string[], options: Pick<TagOptions, 'add' | 'remove' | 'set'>): string[] {
  const tags = [...(options.set ?? current)];
  const out = tags.filter((t) => !options.remove.includes(t));
  for (const t of options.add) if (!out.includes(t)) out.push(t);
  return [...new Set(out)];
}

function checkTag(tag: string): void {
  if (tag === '' || /[,\s]/.test(tag)) {
    throw new CairnError('Cairn.Usage', `invalid tag ${JSON.stringify(tag)}`, {
      hint: 'a tag is a non-empty word without commas or spaces',
    });
  }
}

/**
 * Changes the tags of snapshots. Manifests are never modified, so a changed
 * snapshot gets a new manifest under a new id (with `original` naming the id
 * it was first committed as), written create-if-absent before the old one is
 * deleted: a crash in between leaves both, never neither. A pin moves with
 * the snapshot. Deleting makes this a control-plane operation, like forget,
 * under the exclusive lock.
 */
export async function tagSnapshots(repo: Repository, storage: DeletableStorage, options: TagOptions): Promise<TagChange[]> {
  if (options.refs.length === 0)
    throw new CairnError('Cairn.Usage', 'no snapshot given', { hint: 'name the snapshots to tag by id, prefix or "latest"' });
  if (options.add.length === 0 && options.remove.length === 0 && options.set === undefined) {
    throw new CairnError('Cairn.Usage', 'nothing to change', { hint: 'give --add TAG, --remove TAG and/or --set TAG' });
  }
  for (const t of [...options.add, ...options.remove, ...(options.set ?? [])]) checkTag(t);
  const ctx = operationContext(repo, options);
  return underLock(ctx, 'tag', !options.dryRun, async (lease) => {
    const targets = await selectSnapshotList(repo, options.refs);
    const pins = await pinnedIds(repo);
    const changes: TagChange[] = [];
    for (const snapshot of targets) {
      const tags = newTags(snapshot.tags, options);
      const original = snapshot.original ?? snapshot.id;
      const changed = tags.length !== snapshot.tags.length || tags.some((t, i) => t !== snapshot.tags[i]);
      if (!changed || options.dryRun) {
        changes.push({ id: snapshot.id, newId: snapshot.id, original, tagsBefore: snapshot.tags, tags, changed });
        continue;
      }
      const next: Snapshot = { ...snapshot, id: randomBytes(32).toString('hex'), tags, original };
      lease.assertHeld();
      await repo.saveSnapshot(next);
      if (pins.has(snapshot.id)) {
        const name = `${PINS_PREFIX}${next.id}`;
        await storage.put(
          name,
          repo.seal(
            'pin',
            name,
            Buffer.from(JSON.stringify({ snapshot: next.id, time: new Date().toISOString(), by: options.who, movedFrom: snapshot.id })),
          ),
          { ifAbsent: true },
        );
      }
      lease.assertHeld();
      await storage.delete(snapshotKey(snapshot.id));
      if (pins.has(snapshot.id)) await storage.delete(`${PINS_PREFIX}${snapshot.id}`);
      changes.push({ id: snapshot.id, newId: next.id, original, tagsBefore: snapshot.tags, tags, changed });
    }
    if (!options.dryRun && changes.some((c) => c.changed))
      await record(ctx, 'tag', {
        changes: changes
          .filter((c) => c.changed)
          .map((c) => ({ id: c.id, newId: c.newId, original: c.original, tagsBefore: c.tagsBefore, tags: c.tags })),
      });
    return changes;
  });
}
