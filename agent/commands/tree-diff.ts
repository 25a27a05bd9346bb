import type { TreeEntry } from '../core/tree.ts';
import type { Snapshot } from '../core/snapshot.ts';
import type { SnapshotBrowser } from './snapshot-browser.ts';

export type DiffChange = 'added' | 'removed' | 'changed' | 'metadata';

export interface DiffItem {
  change: DiffChange;
  path: string;
  type: TreeEntry['type'];
  /** Size in the first snapshot (removed, changed, metadata). */
  sizeBefore?: number;
  /** Size in the second snapshot (added, changed, metadata). */
  sizeAfter?: number;
  /** For `metadata`: which of mode, owner, mtime changed; for `changed`: content or target. */
  fields?: string[];
}

export interface DiffSummary {
  added: { files: number; dirs: number; symlinks: number; bytes: number };
  removed: { files: number; dirs: number; symlinks: number; bytes: number };
  /** Content (or symlink target) changed. */
  changed: { entries: number; bytesBefore: number; bytesAfter: number };
  /** Same content, other mode, owner or mtime. */
  metadata: { entries: number };
}

export function emptyDiffSummary(): DiffSummary {
  return {
    added: { files: 0, dirs: 0, symlinks: 0, bytes: 0 },
    removed: { files: 0, dirs: 0, symlinks: 0, bytes: 0 },
    changed: { entries: 0, bytesBefore: 0, bytesAfter: 0 },
    metadata: { entries: 0 },
  };
}

export function countDiff(summary: DiffSummary, item: DiffItem): void {
  const kind = item.type === 'file' ? 'files' : item.type === 'dir' ? 'dirs' : 'symlinks';
  if (item.change === 'added') {
    summary.added[kind]++;
    summary.added.bytes += item.sizeAfter ?? 0;
  } else if (item.change === 'removed') {
    summary.removed[kind]++;
    summary.removed.bytes += item.sizeBefore ?? 0;
  } else if (item.change === 'changed') {
    summary.changed.entries++;
    summary.changed.bytesBefore += item.sizeBefore ?? 0;
    summary.changed.bytesAfter += item.sizeAfter ?? 0;
  } else {
    summary.metadata.entries++;
  }
}

/**
 * What changed from snapshot `a` to snapshot `b`, depth first in name order.
 * Subtrees with equal ids are equal and never read; so a diff of two backups
 * of a large, mostly unchanged tree reads only the directories on the way to
 * what changed. A changed type shows as removed + added. Directory mtimes
 * (they change with their contents) are not reported.
 */
export async function* diff(browser: SnapshotBrowser, a: Snapshot, b: Snapshot): AsyncGenerator<DiffItem> {
  yield* diffTrees(browser, a.tree, b.tree, '');
}

async function* diffTrees(browser: SnapshotBrowser, aTree: string, bTree: string, rel: string): AsyncGenerator<DiffItem> {
  if (aTree === bTree) return;
  const [aEntries, bEntries] = await Promise.all([browser.entries(aTree), browser.entries(bTree)]);
  const before = new Map(aEntries.map((e) => [e.name, e]));
  const after = new Map(bEntries.map((e) => [e.name, e]));
  const names = [...new Set([...before.keys(), ...after.keys()])].sort((x, y) => Buffer.compare(Buffer.from(x), Buffer.from(y)));
  for (const name of names) {
    const path = rel === '' ? name : `${rel}/${name}`;
    const old = before.get(name);
    const now = after.get(name);
    if (old && now && old.type === now.type) {
      if (old.type === 'dir') {
        const fields = metaFields(old, now, false);
        if (fields.length > 0) yield { change: 'metadata', path, type: 'dir', sizeBefore: 0, sizeAfter: 0, fields };
        if (old.subtree && now.subtree) yield* diffTrees(browser, old.subtree, now.subtree, path);
        else if (now.subtree) yield* everything(browser, now.subtree, path, 'added');
        else if (old.subtree) yield* everything(browser, old.subtree, path, 'removed');
        continue;
      }
      const sizes = { sizeBefore: old.size ?? 0, sizeAfter: now.size ?? 0 };
      if (old.type === 'symlink' ? old.target !== now.target : !sameContent(old, now)) {
        yield { change: 'changed', path, type: old.type, ...sizes, fields: [old.type === 'symlink' ? 'target' : 'content'] };
        continue;
      }
      const fields = metaFields(old, now, true);
      if (fields.length > 0) yield { change: 'metadata', path, type: old.type, ...sizes, fields };
      continue;
    }
    if (old) {
      yield { change: 'removed', path, type: old.type, sizeBefore: old.type === 'file' ? (old.size ?? 0) : 0 };
      if (old.type === 'dir' && old.subtree) yield* everything(browser, old.subtree, path, 'removed');
    }
    if (now) {
      yield { change: 'added', path, type: now.type, sizeAfter: now.type === 'file' ? (now.size ?? 0) : 0 };
      if (now.type === 'dir' && now.subtree) yield* everything(browser, now.subtree, path, 'added');
    }
  }
}

async function* everything(browser: SnapshotBrowser, treeId: string, rel: string, change: 'added' | 'removed'): AsyncGenerator<DiffItem> {
  for await (const e of browser.walk(treeId, rel, true)) {
    yield change === 'added'
      ? { change, path: e.path, type: e.type, sizeAfter: e.size }
      : { change, path: e.path, type: e.type, sizeBefore: e.size };
  }
}

function sameContent(a: TreeEntry, b: TreeEntry): boolean {
  const same = (x: string[] | undefined, y: string[] | undefined): boolean =>
    (x ?? []).length === (y ?? []).length && (x ?? []).every((id, i) => id === (y ?? [])[i]);
  return (a.size ?? 0) === (b.size ?? 0) && same(a.content, b.content) && same(a.contentLists, b.contentLists);
}

function metaFields(a: TreeEntry, b: TreeEntry, withMtime: boolean): string[] {
  const fields: string[] = [];
  if (a.mode !== b.mode) fields.push('mode');
  if (a.uid !== b.uid || a.gid !== b.gid) fields.push('owner');
  if (withMtime && a.mtimeNs !== b.mtimeNs) fields.push('mtime');
  return fields;
}
