import { createHash } from 'node:crypto';
import { lstat, mkdir, open, readdir, readFile, readlink, symlink, link, utimes, chmod, writeFile, lutimes } from 'node:fs/promises';
import { join } from 'node:path';

/** A small deterministic PRNG (xorshift32), so a failing seed can be replayed. */
export class Random {
  private state: number;
  constructor(seed: number) {
    this.state = seed * 2654435761 + 1 || 1;
  }
  next(): number {
    let x = this.state | 0;
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    this.state = x;
    return (x >>> 0) / 4294967296;
  }
  int(max: number): number {
    return Math.floor(this.next() * max);
  }
  pick<T>(items: readonly T[]): T {
    return items[this.int(items.length)] as T;
  }
  bytes(n: number, compressible: boolean): Buffer {
    const out = Buffer.allocUnsafe(n);
    if (compressible) {
      const words = ['alpha ', 'beta ', 'row=', '0001 ', 'NULL ', 'value ', '\n'];
      let at = 0;
      while (at < n) at += out.write(this.pick(words), at);
    } else {
      for (let i = 0; i < n; i += 4) {
        const v = this.int(4294967296);
        for (let j = 0; j < 4 && i + j < n; j++) out[i + j] = (v >>> (8 * j)) & 0xff;
      }
    }
    return out;
  }
}

export interface TreeShape {
  files: number;
  /** Largest regular file, bytes. */
  maxFileSize: number;
}

/**
 * Writes a random tree: nested directories, empty/small/multi-piece files
 * (compressible and not), duplicate contents, symlinks (relative, absolute,
 * dangling), a hard-link pair, a sparse file, odd modes and old mtimes.
 */
export async function makeRandomTree(root: string, seed: number, shape: TreeShape = { files: 40, maxFileSize: 300_000 }): Promise<void> {
  const rnd = new Random(seed);
  await mkdir(root, { recursive: true });
  const dirs = [root];
  for (let i = 0; i < 1 + rnd.int(6); i++) {
    const dir = join(rnd.pick(dirs), `dir-${i}${rnd.int(3) === 0 ? ' with space' : ''}`);
    await mkdir(dir, { recursive: true });
    dirs.push(dir);
  }
  const files: string[] = [];
  let shared: Buffer | undefined;
  for (let i = 0; i < shape.files; i++) {
    const path = join(rnd.pick(dirs), `file-${i}${rnd.pick(['.txt', '.bin', '', '.ünï'])}`);
    const size = rnd.pick([0, 1, 17, 4096, rnd.int(shape.maxFileSize), rnd.int(shape.maxFileSize)]);
    let data = rnd.bytes(size, rnd.int(2) === 0);
    if (i % 7 === 3) data = shared ??= data; // identical contents in several files
    await writeFile(path, data);
    await chmod(path, rnd.pick([0o644, 0o600, 0o755, 0o640, 0o444]));
    const when = new Date(Date.UTC(2020, rnd.int(12), 1 + rnd.int(27), rnd.int(24), rnd.int(60), rnd.int(60), rnd.int(1000)));
    await utimes(path, when, when);
    files.push(path);
  }
  const target = rnd.pick(files);
  await symlink(relativeTo(rnd.pick(dirs), target), join(rnd.pick(dirs), 'link-relative'));
  await symlink('/etc/hostname', join(root, 'link-absolute'));
  await symlink('does/not/exist', join(rnd.pick(dirs), 'link-dangling'));
  const first = rnd.pick(files);
  await link(first, join(rnd.pick(dirs), `hardlink-${seed}`));
  const sparse = join(rnd.pick(dirs), 'sparse.img');
  const handle = await open(sparse, 'w');
  await handle.write(rnd.bytes(5000, false), 0, 5000, 3_000_000);
  await handle.truncate(6_000_000);
  await handle.close();
  await mkdir(join(root, 'empty-dir'));
  await chmod(join(root, 'empty-dir'), 0o750);
  for (const dir of dirs.slice(1).reverse()) {
    const when = new Date(Date.UTC(2021, rnd.int(12), 2, 3, 4, 5));
    await utimes(dir, when, when);
  }
  await lutimes(join(root, 'link-absolute'), new Date(Date.UTC(2019, 1, 1)), new Date(Date.UTC(2019, 1, 1)));
}

function relativeTo(fromDir: string, to: string): string {
  const from = fromDir.split('/');
  const parts = to.split('/');
  let common = 0;
  while (common < from.length && from[common] === parts[common]) common++;
  return [...Array<string>(from.length - common).fill('..'), ...parts.slice(common)].join('/') || '.';
}

export interface Described {
  path: string;
  type: string;
  mode: number;
  mtimeMs: number;
  size?: number;
  sha256?: string;
  target?: string;
  uid: number;
  gid: number;
  /** Index of the first path sharing this inode, for hard links. */
  linkGroup?: string;
}

/** A comparable description of a tree: contents and metadata (mtime to the millisecond). */
export async function describeTree(root: string): Promise<Described[]> {
  const out: Described[] = [];
  const inodes = new Map<string, string>();
  const walk = async (dir: string, rel: string): Promise<void> => {
    for (const name of (await readdir(dir)).sort()) {
      const path = join(dir, name);
      const relPath = rel ? `${rel}/${name}` : name;
      const st = await lstat(path);
      const base = { path: relPath, mode: st.mode & 0o7777, mtimeMs: Math.floor(st.mtimeMs), uid: st.uid, gid: st.gid };
      if (st.isDirectory()) {
        out.push({ ...base, type: 'dir' });
        await walk(path, relPath);
      } else if (st.isSymbolicLink()) {
        out.push({ ...base, type: 'symlink', target: await readlink(path) });
      } else {
        const key = `${st.dev}:${st.ino}`;
        const group = st.nlink > 1 ? (inodes.get(key) ?? (inodes.set(key, relPath), relPath)) : undefined;
        out.push({
          ...base,
          type: 'file',
          size: st.size,
          sha256: createHash('sha256')
            .update(await readFile(path))
            .digest('hex'),
          ...(group ? { linkGroup: group } : {}),
        });
      }
    }
  };
  await walk(root, '');
  return out;
}
