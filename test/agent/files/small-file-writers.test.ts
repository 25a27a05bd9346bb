import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { chmod, link, lstat, mkdir, readFile, readdir, symlink, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Repository } from '../../../agent/core/repository.ts';
import { SmallFileWriters } from '../../../agent/files/small-file-writers.ts';
import { tempDir, initSmallRepo, fileRepo, backupDir, restoreTo } from '../../helpers/repo.ts';
import { Prng } from '../../bench/prng.ts';
import { walkBytes } from './tree-compare.ts';

const KiB = 1024;
// Around the restorer's small-file limit (256 KiB), so both write paths and the switch between them are exercised.
const SIZES = [0, 1, 4095, 4096, 4097, 65 * KiB, 255 * KiB, 256 * KiB, 256 * KiB + 1, 300 * KiB];
const MODES = [0o644, 0o600, 0o444, 0o755, 0o4755, 0o2750, 0o000];

/** A random tree: files of the sizes above, some with all-zero blocks (holes when restored), modes, old and new mtimes, hard links. */
async function randomTree(root: string, seed: number): Promise<void> {
  const prng = new Prng(seed, 'small-file-writers');
  const pick = <T>(list: T[]): T => list[prng.u32() % list.length] as T;
  const dirs = [root];
  for (let d = 0; d < 4; d++) {
    const dir = join(pick(dirs), `d${d}`);
    await mkdir(dir);
    dirs.push(dir);
  }
  const files: string[] = [];
  for (let f = 0; f < 40; f++) {
    const path = join(pick(dirs), `f${f}`);
    const size = pick(SIZES);
    const content = prng.bytes(size);
    // Every third file: a run of 8 KiB of zeros in the middle, which the restore leaves as a hole.
    if (f % 3 === 0 && size > 16 * KiB) content.fill(0, 4 * KiB, 12 * KiB);
    await writeFile(path, content);
    if (f % 7 === 0 && files.length > 0) {
      await link(pick(files), `${path}.link`);
    }
    const mtime = f % 5 === 0 ? new Date(Date.UTC(1965, 0, 2, 3, 4, 5)) : new Date(Date.UTC(2024, 5, f % 28, 12, 0, 0));
    await utimes(path, mtime, mtime);
    files.push(path);
  }
  // Modes last, so that writing the files above was never refused.
  for (const path of files) await chmod(path, pick(MODES));
}

describe('restore through the small-file writer threads', () => {
  let work: Awaited<ReturnType<typeof tempDir>>;
  let repo: Repository;
  before(async () => {
    work = await tempDir('small-file-writers');
    repo = await initSmallRepo(fileRepo(join(work.path, 'repo')));
  });
  after(async () => {
    await work.remove();
  });

  for (const seed of [1, 2, 3]) {
    it(`a random tree of small and large files (seed ${seed}) restores byte for byte with its modes, times and hard links`, async () => {
      const src = join(work.path, `src${seed}`);
      await mkdir(src);
      await randomTree(src, seed);
      const snapshot = await backupDir(repo, src);
      const target = join(work.path, `target${seed}`);
      const { result } = await restoreTo(repo, snapshot.id, target);
      assert.deepEqual(result.errors, []);
      assert.deepEqual(await walkBytes(Buffer.from(target)), await walkBytes(Buffer.from(src)));
      // The bytes it reports: every file's once (a hard link to one already written adds none), even
      // with many small files finishing at once on the writer thread.
      const sizes = new Map<number, number>();
      for (const name of await readdir(src, { recursive: true })) {
        const st = await lstat(join(src, name));
        if (st.isFile()) sizes.set(st.ino, st.size);
      }
      assert.equal(
        result.bytes,
        [...sizes.values()].reduce((a, b) => a + b, 0),
      );
      const links = (await readdir(target, { recursive: true })).filter((name) => name.endsWith('.link'));
      for (const name of links) assert.equal((await lstat(join(target, name))).nlink >= 2, true, `${name} is a hard link`);
    });
  }
});

describe('SmallFileWriters', () => {
  let work: Awaited<ReturnType<typeof tempDir>>;
  const writers = new SmallFileWriters(2);
  const entry = { mode: 0o640, uid: process.getuid?.() ?? 0, gid: process.getgid?.() ?? 0, mtimeNs: '946684799000000000' };
  before(async () => {
    work = await tempDir('small-file-writers-unit');
  });
  after(async () => {
    await writers.close();
    await work.remove();
  });

  it('writes the pieces in order, leaves an all-zero block as a hole and sets size, mode and mtime', async () => {
    const path = join(work.path, 'holes');
    const pieces = [Buffer.from('head'), Buffer.alloc(64 * KiB), Buffer.from('tail')];
    await writers.write({ path: Buffer.from(path), pieces, entry });
    assert.deepEqual(await readFile(path), Buffer.concat(pieces));
    const st = await lstat(path);
    assert.equal(st.mode & 0o7777, 0o640);
    assert.equal(st.mtimeMs, 946684799000);
    assert.ok(st.blocks * 512 < 64 * KiB, `the zero block is a hole (${st.blocks} blocks allocated)`);
  });

  it('never replaces or writes through what is already at the path: a file or a symlink stays as it was', async () => {
    const existing = join(work.path, 'existing');
    await writeFile(existing, 'keep me');
    await assert.rejects(writers.write({ path: Buffer.from(existing), pieces: [Buffer.from('new')], entry }), { code: 'EEXIST' });
    assert.equal(await readFile(existing, 'utf8'), 'keep me');
    const elsewhere = join(work.path, 'elsewhere');
    await writeFile(elsewhere, 'outside');
    await symlink(elsewhere, join(work.path, 'trap'));
    await assert.rejects(writers.write({ path: Buffer.from(join(work.path, 'trap')), pieces: [Buffer.from('new')], entry }), {
      code: 'EEXIST',
    });
    assert.equal(await readFile(elsewhere, 'utf8'), 'outside');
  });

  it('a file it cannot finish is removed, and the error keeps its code for the restorer', async () => {
    const gone = join(work.path, 'gone', 'file');
    await assert.rejects(writers.write({ path: Buffer.from(gone), pieces: [Buffer.from('x')], entry }), { code: 'ENOENT' });
    // A mode fchmod refuses: the worker fails after creating and writing the file.
    const bad = join(work.path, 'bad-mode');
    await assert.rejects(writers.write({ path: Buffer.from(bad), pieces: [Buffer.from('x')], entry: { ...entry, mode: -1 } }), {
      code: 'ERR_OUT_OF_RANGE',
    });
    await assert.rejects(lstat(bad), { code: 'ENOENT' }, 'the half-finished file was unlinked');
  });
});
