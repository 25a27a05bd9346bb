import { DamagedError } from './errors.ts';

/**
 * How many directories deep any walk of a snapshot goes before it gives up on
 * the snapshot as damaged. No honest backup comes near it (a path that deep is
 * kilobytes long even with one-letter names), and it bounds the recursion of
 * every walk, so a crafted tree cannot overflow the stack.
 */
export const MAX_TREE_DEPTH = 1024;

/**
 * The trees on the way from a snapshot's root down to the directory being read,
 * which every walk of trees (verify, check, ls -R, find, diff, copy) carries.
 * An honest tree can never hold itself — its id is a keyed hash of bytes that
 * name its subtrees — but a crafted pack can claim any id for any bytes, and a
 * walk that remembers a tree only after walking it would follow such a loop
 * forever. Immutable: each level is a new value, so concurrent walks (the two
 * sides of a diff) and abandoned ones (a listing stopped early) share nothing.
 */
export class TreeAncestors {
  static readonly none = new TreeAncestors(undefined, undefined, 0);

  private readonly treeId: string | undefined;
  private readonly parent: TreeAncestors | undefined;
  /** How many trees are on the way down. */
  readonly depth: number;

  private constructor(treeId: string | undefined, parent: TreeAncestors | undefined, depth: number) {
    this.treeId = treeId;
    this.parent = parent;
    this.depth = depth;
  }

  /**
   * The ancestors one level down, in tree `treeId` at `path` (for the message):
   * a DamagedError (exit 14) naming the tree if it is one of its own ancestors
   * or lies deeper than MAX_TREE_DEPTH.
   */
  enter(treeId: string, path: string): TreeAncestors {
    const where = path === '' ? 'the snapshot root' : JSON.stringify(path);
    if (this.holds(treeId)) throw new DamagedError(`tree ${treeId} holds itself (a loop of directories) at ${where}`, { hint: LOOP_HINT });
    if (this.depth >= MAX_TREE_DEPTH)
      throw new DamagedError(`tree ${treeId} at ${where} lies more than ${MAX_TREE_DEPTH} directories deep`, { hint: LOOP_HINT });
    return new TreeAncestors(treeId, this, this.depth + 1);
  }

  /** Whether `treeId` is this tree or one above it. */
  private holds(treeId: string): boolean {
    return this.treeId === treeId || (this.parent?.holds(treeId) ?? false);
  }
}

const LOOP_HINT =
  'no backup writes such a tree: the snapshot was crafted or its pieces replaced; forget it (`cairn forget ID`) and run `cairn check`';
