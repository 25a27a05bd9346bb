import { createHash } from 'node:crypto';
import { chmod, chown, link, lstat, mkdir, open, readdir, readFile, readlink, symlink, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Random } from '../../helpers/tree.ts';

/** A name that is not UTF-8 (0xfe never appears in UTF-8), and a path component past ustar's 100 bytes. */
export const NOT_UTF8 = Buffer.from([0x6e, 0xfe, 0x20, 0x78]);
export const LONG = `long-${'x'.repeat(140)}`;

/**
 * The tree `cairn dump` is checked on: nested directories with modes a restore must keep
 * (0750, 0700, a setgid 02750), files with 0600 and an owner other than root, an mtime in
 * the past, an empty and a sparse file, 3 MiB spanning many pieces, a symlink, a hard link
 * group of three (its first path outside `sub`, so a dump of `sub` stores the data once
 * inside), a name with spaces, one that is not UTF-8, and a path over 100 bytes.
 */
export async function buildSource(src: string): Promise<void> {
  await mkdir(join(src, 'sub', 'deep', 'deeper'), { recursive: true });
  await mkdir(join(src, 'sub', LONG));
  await writeFile(join(src, 'a-first'), 'linked three times\n');
  await link(join(src, 'a-first'), join(src, 'sub', 'hard1'));
  await link(join(src, 'a-first'), join(src, 'sub', 'deep', 'hard2'));
  await writeFile(join(src, 'sub', 'big.bin'), new Random(19).bytes(3 << 20, false));
  await writeFile(join(src, 'sub', 'empty'), '');
  await writeFile(join(src, 'sub', 'name with spaces.txt'), 'spaces\n');
  await writeFile(Buffer.concat([Buffer.from(join(src, 'sub', 'deep') + '/'), NOT_UTF8]), 'not utf-8\n');
  await writeFile(join(src, 'sub', LONG, `${LONG}.txt`), 'a long path\n');
  await writeFile(join(src, 'sub', 'deep', 'deeper', 'secret'), 'owner only\n');
  await chmod(join(src, 'sub', 'deep', 'deeper', 'secret'), 0o600);
  await chown(join(src, 'sub', 'deep', 'deeper', 'secret'), 1234, 5678);
  await writeFile(join(src, 'sub', 'old.txt'), 'from 2001\n');
  await utimes(join(src, 'sub', 'old.txt'), new Date('2001-02-03T04:05:06.789Z'), new Date('2001-02-03T04:05:06.789Z'));
  const sparse = await open(join(src, 'sub', 'sparse'), 'w');
  await sparse.write('the end\n', 2 << 20);
  await sparse.close();
  await symlink('deep/deeper/secret', join(src, 'sub', 'link'));
  await chmod(join(src, 'sub', 'deep', 'deeper'), 0o700);
  await chmod(join(src, 'sub', 'deep'), 0o2750);
  await chmod(join(src, 'sub'), 0o750);
  // Directory mtimes last: writing into a directory moves its own.
  await utimes(join(src, 'sub', 'deep'), new Date('2010-01-01T00:00:00Z'), new Date('2010-01-01T00:00:00.5Z'));
}

/** One entry as the comparison sees it: everything `tar -x` must bring back from a dump. */
export interface Seen {
  /** Hex of the path's bytes below the root. */
  path: string;
  type: 'dir' | 'file' | 'symlink';
  mode: number;
  uid: number;
  gid: number;
  mtimeNs: string;
  content: string;
  /** The first path (hex) of this walk holding the same inode, for files with more than one link. */
  linkedTo?: string;
}

/** Every entry below `root`, walked with Buffer names in byte order. */
export async function describeBytes(root: string): Promise<Seen[]> {
  const out: Seen[] = [];
  const inodes = new Map<string, string>();
  const walk = async (rel: Buffer): Promise<void> => {
    const dir = rel.length === 0 ? Buffer.from(root) : Buffer.concat([Buffer.from(`${root}/`), rel]);
    const names = (await readdir(dir, { encoding: 'buffer' })).sort((a, b) => Buffer.compare(a, b));
    for (const name of names) {
      const childRel = rel.length === 0 ? name : Buffer.concat([rel, Buffer.from('/'), name]);
      const path = Buffer.concat([dir, Buffer.from('/'), name]);
      const st = await lstat(path, { bigint: true });
      const type = st.isDirectory() ? 'dir' : st.isSymbolicLink() ? 'symlink' : 'file';
      const seen: Seen = {
        path: childRel.toString('hex'),
        type,
        mode: Number(st.mode & 0o7777n),
        uid: Number(st.uid),
        gid: Number(st.gid),
        mtimeNs: st.mtimeNs.toString(),
        content:
          type === 'file'
            ? createHash('sha256')
                .update(await readFile(path))
                .digest('hex')
            : type === 'symlink'
              ? (await readlink(path, { encoding: 'buffer' })).toString('hex')
              : '',
      };
      if (type === 'file' && st.nlink > 1n) {
        const key = `${st.dev}:${st.ino}`;
        seen.linkedTo = inodes.get(key) ?? seen.path;
        inodes.set(key, seen.linkedTo);
      }
      out.push(seen);
      if (type === 'dir') await walk(childRel);
    }
  };
  await walk(Buffer.alloc(0));
  return out;
}
