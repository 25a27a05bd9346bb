import { createHash } from 'node:crypto';
import { lstat, readdir, readFile, readlink } from 'node:fs/promises';

/** One filesystem entry as the comparisons see it: the path as bytes (hex), and what a restore must bring back. */
export interface Seen {
  path: string;
  type: 'dir' | 'file' | 'symlink';
  mode: number;
  uid: number;
  gid: number;
  mtimeMs: number;
  content: string;
}

/** Every entry below a directory, walked with Buffer names (so names that are not UTF-8 are compared exactly). */
export async function walkBytes(root: Buffer, rel: Buffer = Buffer.alloc(0), out: Seen[] = []): Promise<Seen[]> {
  const dir = rel.length === 0 ? root : Buffer.concat([root, Buffer.from('/'), rel]);
  const names = (await readdir(dir, { encoding: 'buffer' })).sort((x, y) => Buffer.compare(x, y));
  for (const name of names) {
    const childRel = rel.length === 0 ? name : Buffer.concat([rel, Buffer.from('/'), name]);
    const path = Buffer.concat([root, Buffer.from('/'), childRel]);
    const st = await lstat(path);
    const type = st.isDirectory() ? 'dir' : st.isSymbolicLink() ? 'symlink' : 'file';
    const content =
      type === 'file'
        ? createHash('sha256')
            .update(await readFile(path))
            .digest('hex')
        : type === 'symlink'
          ? (await readlink(path, { encoding: 'buffer' })).toString('hex')
          : '';
    out.push({
      path: childRel.toString('hex'),
      type,
      mode: type === 'symlink' ? 0 : st.mode & 0o7777,
      uid: st.uid,
      gid: st.gid,
      mtimeMs: Math.floor(st.mtimeMs),
      content,
    });
    if (type === 'dir') await walkBytes(root, childRel, out);
  }
  return out;
}
