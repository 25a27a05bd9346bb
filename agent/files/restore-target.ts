import { lstat, mkdir, readdir, rm, stat, unlink } from 'node:fs/promises';
import { CairnError } from '../core/errors.ts';
import type { TreeEntry } from '../core/tree.ts';

/** Refuses a non-empty target unless forced, before anything is written. */
/** What the restore found at its target: it decides whether the snapshot's own directory metadata is applied to it. */
export type TargetState = 'created' | 'empty' | 'holds-data';

export async function prepareTarget(target: string, force: boolean): Promise<TargetState> {
  let isDir: boolean;
  try {
    isDir = (await stat(target)).isDirectory();
  } catch (error) {
    if (!isErrno(error, 'ENOENT')) throw error;
    await mkdir(target, { recursive: true });
    return 'created';
  }
  if (!isDir) throw new CairnError('Cairn.Usage', `restore target ${target} exists and is not a directory`, { hint: 'choose a directory' });
  const empty = (await readdir(target)).length === 0;
  if (!force && !empty) {
    throw new CairnError('Cairn.TargetNotEmpty', `restore target ${target} is not empty; nothing was written`, {
      hint: 'restore into an empty or new directory, or pass --force to overwrite what is there',
    });
  }
  return empty ? 'empty' : 'holds-data';
}

/**
 * The restore target's directories: paths under the target are built from
 * checked names only (keys: a path's bytes below the target as a latin1
 * string, one character per byte, so names that are not UTF-8 stay exact), and
 * every directory on the way is created by us or, with --force, checked to be a
 * real directory (a symlink or file in its place is removed, never followed).
 */
export class TargetTree {
  /** Directories created, in creation order, with the entry whose metadata they get at the end. */
  readonly createdDirs: Array<{ path: Buffer; entry: TreeEntry; rel: string }> = [];
  private readonly root: Buffer;
  private readonly force: boolean;
  private readonly onCreated: () => void;
  private readonly created = new Set<string>(['']);
  private readonly dirEntries = new Map<string, TreeEntry>();

  constructor(target: string, force: boolean, onCreated: () => void) {
    this.root = Buffer.from(target);
    this.force = force;
    this.onCreated = onCreated;
  }

  /** The target path of a key ('' is the target itself). */
  path(key: string): Buffer {
    return key === '' ? this.root : Buffer.concat([this.root, Buffer.from(`/${key}`, 'latin1')]);
  }

  /** Records a directory's entry, for its metadata once it is created. */
  noteDir(key: string, entry: TreeEntry): void {
    this.dirEntries.set(key, entry);
  }

  async ensureDir(key: string): Promise<void> {
    if (this.created.has(key)) return;
    await this.ensureParent(key);
    const path = this.path(key);
    try {
      await mkdir(path, { mode: 0o700 });
    } catch (error) {
      if (!isErrno(error, 'EEXIST')) throw error;
      const existing = await lstat(path);
      if (!existing.isDirectory()) {
        // Only reachable with --force: replace what is there, never follow it.
        await unlink(path);
        await mkdir(path, { mode: 0o700 });
      }
    }
    this.created.add(key);
    this.onCreated();
    const entry = this.dirEntries.get(key);
    if (entry) this.createdDirs.push({ path, entry, rel: Buffer.from(key, 'latin1').toString('utf8') });
  }

  async ensureParent(key: string): Promise<void> {
    const slash = key.lastIndexOf('/');
    await this.ensureDir(slash < 0 ? '' : key.slice(0, slash));
  }

  /** With --force: removes whatever is at a path before an entry is written there. */
  async clearForEntry(path: Buffer): Promise<void> {
    if (!this.force) return;
    try {
      const existing = await lstat(path);
      if (existing.isDirectory()) await rm(path, { recursive: true, force: true });
      else await unlink(path);
    } catch (error) {
      if (!isErrno(error, 'ENOENT')) throw error;
    }
  }
}

function isErrno(error: unknown, code: string): boolean {
  return error instanceof Error && (error as NodeJS.ErrnoException).code === code;
}
