import type { Snapshot } from '../core/snapshot.ts';
import { TreeAncestors } from '../core/tree-walk.ts';
import { entryName, entryTarget, type TreeEntry } from '../core/tree.ts';
import { childPath, pathFields, type SnapshotBrowser } from './snapshot-browser.ts';

export type DiffChange = 'added' | 'removed' | 'changed' | 'metadata';

export interface DiffItem {
  change: DiffChange;
  /** The display form: names that are not UTF-8 show U+FFFD for their invalid bytes. */
  path: string;
  /** Base64 of the path's bytes, present only when they are not UTF-8 (two paths can share a display form). */
  pathBytes?: string;
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
 * (they change with their contents) are not reported. Entries are matched by
 * the bytes of their names (not their display form, which two names can share),
 * and each side's walk fails (Cairn.Damaged) on a loop of trees or an absurd depth.
 */
export async function* diff(browser: SnapshotBrowser, a: Snapshot, b: Snapshot): AsyncGenerator<DiffItem> {
  yield* diffTrees(browser, { tree: a.tree, ancestors: TreeAncestors.none }, { tree: b.tree, ancestors: TreeAncestors.none }, EMPTY);
}

const EMPTY = Buffer.alloc(0);

/** One side of a diff: a tree and the trees above it. */
interface Side {
  tree: string;
  ancestors: TreeAncestors;
}

async function* diffTrees(browser: SnapshotBrowser, a: Side, b: Side, rel: Buffer): AsyncGenerator<DiffItem> {
  if (a.tree === b.tree) return;
  const shown = rel.toString('utf8');
  const aAbove = a.ancestors.enter(a.tree, shown);
  const bAbove = b.ancestors.enter(b.tree, shown);
  const [aEntries, bEntries] = await Promise.all([browser.entries(a.tree), browser.entries(b.tree)]);
  const key = (e: TreeEntry): string => entryName(e).toString('latin1');
  const before = new Map(aEntries.map((e) => [key(e), e]));
  const after = new Map(bEntries.map((e) => [key(e), e]));
  const names = [...new Set([...before.keys(), ...after.keys()])].sort((x, y) =>
    Buffer.compare(Buffer.from(x, 'latin1'), Buffer.from(y, 'latin1')),
  );
  for (const name of names) {
    const old = before.get(name);
    const now = after.get(name);
    const pathBytes = childPath(rel, (old ?? now) as TreeEntry);
    const at = pathFields(pathBytes);
    if (old && now && old.type === now.type) {
      if (old.type === 'dir') {
        const fields = metaFields(old, now, false);
        if (fields.length > 0) yield { change: 'metadata', ...at, type: 'dir', sizeBefore: 0, sizeAfter: 0, fields };
        if (old.subtree && now.subtree)
          yield* diffTrees(browser, { tree: old.subtree, ancestors: aAbove }, { tree: now.subtree, ancestors: bAbove }, pathBytes);
        else if (now.subtree) yield* everything(browser, now.subtree, pathBytes, bAbove, 'added');
        else if (old.subtree) yield* everything(browser, old.subtree, pathBytes, aAbove, 'removed');
        continue;
      }
      const sizes = { sizeBefore: old.size ?? 0, sizeAfter: now.size ?? 0 };
      if (old.type === 'symlink' ? !entryTarget(old).equals(entryTarget(now)) : !sameContent(old, now)) {
        yield { change: 'changed', ...at, type: old.type, ...sizes, fields: [old.type === 'symlink' ? 'target' : 'content'] };
        continue;
      }
      const fields = metaFields(old, now, true);
      if (fields.length > 0) yield { change: 'metadata', ...at, type: old.type, ...sizes, fields };
      continue;
    }
    if (old) {
      yield { change: 'removed', ...at, type: old.type, sizeBefore: old.type === 'file' ? (old.size ?? 0) : 0 };
      if (old.type === 'dir' && old.subtree) yield* everything(browser, old.subtree, pathBytes, aAbove, 'removed');
    }
    if (now) {
      yield { change: 'added', ...at, type: now.type, sizeAfter: now.type === 'file' ? (now.size ?? 0) : 0 };
      if (now.type === 'dir' && now.subtree) yield* everything(browser, now.subtree, pathBytes, bAbove, 'added');
    }
  }
}

async function* everything(
  browser: SnapshotBrowser,
  treeId: string,
  rel: Buffer,
  ancestors: TreeAncestors,
  change: 'added' | 'removed',
): AsyncGenerator<DiffItem> {
  for await (const e of browser.walk(treeId, rel, true, ancestors)) {
    const at = e.pathBytes === undefined ? { path: e.path } : { path: e.path, pathBytes: e.pathBytes };
    yield change === 'added' ? { change, ...at, type: e.type, sizeAfter: e.size } : { change, ...at, type: e.type, sizeBefore: e.size };
  }
}

/**
 * Same content: same size and the same layout fields (content, contentLists, a page file's
 * extentLists), compared by id without reading a piece. A page file's `pageHashes` follow from
 * its bytes and `pageSize` says only how it was cut, so neither is compared. Two layouts of the
 * same bytes (a page file and an ordinary file, or extents that point at other pieces holding
 * equal pages) are reported changed: telling would mean reading both files.
 */
function sameContent(a: TreeEntry, b: TreeEntry): boolean {
  const same = (x: string[] | undefined, y: string[] | undefined): boolean =>
    (x ?? []).length === (y ?? []).length && (x ?? []).every((id, i) => id === (y ?? [])[i]);
  return (
    (a.size ?? 0) === (b.size ?? 0) &&
    same(a.content, b.content) &&
    same(a.contentLists, b.contentLists) &&
    same(a.extentLists, b.extentLists)
  );
}

function metaFields(a: TreeEntry, b: TreeEntry, withMtime: boolean): string[] {
  const fields: string[] = [];
  if (a.mode !== b.mode) fields.push('mode');
  if (a.uid !== b.uid || a.gid !== b.gid) fields.push('owner');
  if (withMtime && a.mtimeNs !== b.mtimeNs) fields.push('mtime');
  return fields;
}
