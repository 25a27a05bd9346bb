import type { PieceReader } from '../core/piece-reader.ts';
import type { Snapshot } from '../core/snapshot.ts';
import { TreeAncestors } from '../core/tree-walk.ts';
import { decodeTree, type TreeEntry } from '../core/tree.ts';
import { PathMatcher } from './glob.ts';

/**
 * The --include patterns (as given) that match nothing in the snapshot, found
 * before anything is written, so that a mistyped pattern fails the restore
 * instead of restoring nothing. Only the trees a pattern still unmatched can
 * reach are read, and the walk ends once every pattern has matched (the restore
 * reads them again: a path pattern reads only the trees on its way, a name
 * pattern usually matches early). A tree that cannot be read (or a loop of
 * trees) leaves the answer open: none is reported, and the restore itself
 * reports the damage.
 */
export async function unmatchedIncludes(reader: PieceReader, snapshot: Snapshot, includes: string[]): Promise<string[]> {
  const pending = includes.filter((p) => p.length > 0).map((pattern) => ({ pattern, matcher: new PathMatcher([pattern], snapshot.paths) }));
  let undecided = false;
  const visit = async (treeId: string, rel: string, ancestors: TreeAncestors): Promise<void> => {
    let entries: TreeEntry[];
    let here: TreeAncestors;
    try {
      here = ancestors.enter(treeId, rel);
      entries = decodeTree(await reader.read(Buffer.from(treeId, 'hex')), treeId).entries;
    } catch {
      undecided = true;
      return;
    }
    for (const entry of entries) {
      const childRel = rel === '' ? entry.name : `${rel}/${entry.name}`;
      for (let i = pending.length - 1; i >= 0; i--) if (pending[i]?.matcher.matches(childRel)) pending.splice(i, 1);
      if (pending.length === 0 || undecided) return;
      if (entry.type === 'dir' && entry.subtree && pending.some((p) => p.matcher.mayMatchBelow(childRel)))
        await visit(entry.subtree, childRel, here);
    }
  };
  if (pending.length > 0) await visit(snapshot.tree, '', TreeAncestors.none);
  return undecided ? [] : pending.map((p) => p.pattern);
}
