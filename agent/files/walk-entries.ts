import type { BigIntStats } from 'node:fs';
import type { RootMeta } from '../core/snapshot.ts';
import { entryName, type Tree, type TreeEntry } from '../core/tree.ts';

/** The backup walk's entries: their paths, the names they are shown and matched by, what they record. */

/** A tree's entries by the bytes of their names (as latin1 strings: one character per byte). */
export function byName(tree: Tree): Map<string, TreeEntry> {
  return new Map(tree.entries.map((e) => [entryName(e).toString('latin1'), e]));
}

export function childPath(dir: Buffer, name: Buffer): Buffer {
  return dir[dir.length - 1] === 0x2f ? Buffer.concat([dir, name]) : Buffer.concat([dir, SLASH, name]);
}

/** The path shown in messages and matched by --exclude: names as UTF-8 (an invalid sequence shows as U+FFFD). */
export function childRel(rel: string, name: Buffer): string {
  const shown = name.toString('utf8');
  return rel === '' ? shown : `${rel}/${shown}`;
}

const SLASH = Buffer.from('/');

/** What every entry records of its inode. */
export function entryMeta(st: BigIntStats): Omit<TreeEntry, 'name' | 'type'> & RootMeta {
  return {
    mode: Number(st.mode & 0o7777n),
    uid: Number(st.uid),
    gid: Number(st.gid),
    mtimeNs: st.mtimeNs.toString(),
    ctimeNs: st.ctimeNs.toString(),
    dev: st.dev.toString(),
    inode: st.ino.toString(),
  };
}
