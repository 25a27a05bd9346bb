import type { Tree, TreeEntry } from '../core/tree.ts';

/**
 * The parent snapshot's file entries by path, for files an engine hands over by
 * path in any order (a tar or xbstream stream): each directory's tree is loaded
 * once, when a path first needs it.
 */
export class ParentFiles {
  private readonly root: string | undefined;
  private readonly load: (id: string) => Promise<Tree>;
  private readonly dirs = new Map<string, Promise<Map<string, TreeEntry> | undefined>>();

  constructor(root: string | undefined, load: (id: string) => Promise<Tree>) {
    this.root = root;
    this.load = load;
  }

  /** The parent's file entry at `rel`, or undefined (no parent, no such path, not a file). */
  async entry(rel: string): Promise<TreeEntry | undefined> {
    if (!this.root) return undefined;
    const parts = rel.split('/').filter((p) => p !== '' && p !== '.');
    const name = parts.pop();
    const entry = name === undefined ? undefined : (await this.dir(parts.join('/')))?.get(name);
    return entry?.type === 'file' ? entry : undefined;
  }

  private dir(path: string): Promise<Map<string, TreeEntry> | undefined> {
    let found = this.dirs.get(path);
    if (!found) {
      found = this.read(path);
      this.dirs.set(path, found);
    }
    return found;
  }

  private async read(path: string): Promise<Map<string, TreeEntry> | undefined> {
    let treeId = this.root;
    if (path !== '') {
      const slash = path.lastIndexOf('/');
      const above = await this.dir(slash < 0 ? '' : path.slice(0, slash));
      treeId = above?.get(path.slice(slash + 1))?.subtree;
    }
    if (!treeId) return undefined;
    return new Map((await this.load(treeId)).entries.map((e) => [e.name, e]));
  }
}
