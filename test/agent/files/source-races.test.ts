import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import { syncBuiltinESMExports } from 'node:module';
import { join } from 'node:path';
import { Repository } from '../../../agent/core/repository.ts';
import { silentProgress } from '../../../agent/progress/progress.ts';
import { MemoryStorage } from '../../helpers/memory-storage.ts';
import { PASSPHRASE, SMALL, backupDir, restoreTo, tempDir } from '../../helpers/repo.ts';

/**
 * A user racing root's backup of a tree they own part of. The swaps are made at the instant the
 * backup opens a file (through wrappers of the fs functions the archiver calls: the kernel's
 * scheduling, made deterministic), as a racer watching with inotify would make them.
 */
const SECRET = 'root:$6$SECRETHASH:19000:0:99999:7:::\n';

describe('backup sources changed between listing and reading', () => {
  let work: { path: string; remove: () => Promise<void> };
  before(async () => {
    work = await tempDir('source-races');
  });
  after(() => work.remove());

  /** Runs `fn` with `swap(path)` called just before the archiver opens any file whose path ends with `suffix`. */
  async function withSwapAtOpen<T>(suffix: string, swap: () => void, fn: () => Promise<T>): Promise<T> {
    const real = { openSync: fs.openSync, open: fsp.open };
    let done = false;
    const maybeSwap = (path: unknown): void => {
      if (
        !done &&
        Buffer.from(path as string)
          .toString()
          .endsWith(suffix)
      ) {
        done = true;
        swap();
      }
    };
    fs.openSync = (path: fs.PathLike, ...rest: unknown[]) => {
      maybeSwap(path);
      return (real.openSync as (...args: unknown[]) => number)(path, ...rest);
    };
    fsp.open = async (path: fs.PathLike, ...rest: unknown[]) => {
      maybeSwap(path);
      return (real.open as (...args: unknown[]) => Promise<fsp.FileHandle>)(path, ...rest);
    };
    syncBuiltinESMExports();
    try {
      return await fn();
    } finally {
      fs.openSync = real.openSync;
      fsp.open = real.open;
      syncBuiltinESMExports();
    }
  }

  /** A root-only directory holding a secret of `size` bytes, and a user's directory d with their own file of that name and size. */
  function layout(name: string, size: number): { root: string; secret: string; d: string; content: string } {
    const root = join(work.path, name);
    const secret = join(root, 'secret');
    fs.mkdirSync(secret, { recursive: true, mode: 0o700 });
    const content = SECRET.padEnd(size, '#');
    fs.writeFileSync(join(secret, 'shadow'), content, { mode: 0o600 });
    const d = join(root, 'home', 'u', 'd');
    fs.mkdirSync(d, { recursive: true });
    fs.writeFileSync(join(d, 'shadow'), 'x'.repeat(size), { mode: 0o644 });
    return { root, secret, d, content };
  }

  async function backUpAndRestore(
    root: string,
    name: string,
    suffix: string,
    swap: () => void,
  ): Promise<{ partial: boolean; restored: string; warnings: string[] }> {
    const repo = await Repository.init(new MemoryStorage(), PASSPHRASE, { host: 'h', user: 'u' }, SMALL);
    const warnings: string[] = [];
    const progress = { ...silentProgress, warn: (message: string) => void warnings.push(message) };
    const snapshot = await withSwapAtOpen(suffix, swap, () => backupDir(repo, join(root, 'home'), { progress }));
    const restored = join(work.path, `restored-${name}`);
    await restoreTo(repo, snapshot.id, restored);
    return { partial: snapshot.partial === true, restored: join(restored, 'u', 'd'), warnings };
  }

  for (const size of [SECRET.length, 300 << 10]) {
    it(`d swapped for a symlink as its file is opened: the file read is still d's (${size} bytes, ${size < 256 << 10 ? 'read at once' : 'streamed'})`, async () => {
      const { root, secret, d } = layout(`file-open-${size}`, size);
      const { restored } = await backUpAndRestore(root, `file-open-${size}`, '/shadow', () => {
        fs.renameSync(d, `${d}.real`);
        fs.symlinkSync(secret, d);
      });
      assert.equal(fs.readFileSync(join(restored, 'shadow'), 'utf8'), 'x'.repeat(size), "the user's own file, never root's");
    });
  }

  it('d swapped for a symlink as the walk opens it: reported and left out, the other tree is not walked', async () => {
    const { root, secret, d } = layout('dir-open', SECRET.length);
    const { partial, restored, warnings } = await backUpAndRestore(root, 'dir-open', '/d', () => {
      fs.renameSync(d, `${d}.real`);
      fs.symlinkSync(secret, d);
    });
    assert.equal(partial, true);
    // The message names the directory by its path, not by the descriptor it was looked up through.
    assert.ok(
      warnings.some((w) => w.startsWith('cannot back up u/d: ') && w.includes(`'${d}'`) && !w.includes('/proc/self/fd')),
      warnings.join('\n'),
    );
    assert.equal(fs.existsSync(join(restored, 'shadow')), false, "root's file is not stored under the user's path");
  });

  it("the file replaced, as it is opened, by a hard link to root's file (fs.protected_hardlinks off): reported and skipped", async () => {
    const { root, secret, d } = layout('hard-link', SECRET.length);
    const { partial, restored } = await backUpAndRestore(root, 'hard-link', '/shadow', () => {
      fs.unlinkSync(join(d, 'shadow'));
      fs.linkSync(join(secret, 'shadow'), join(d, 'shadow'));
    });
    assert.equal(partial, true, 'the file that changed is reported');
    assert.equal(fs.existsSync(join(restored, 'shadow')), false, "root's file is not stored with the user's owner and mode");
  });

  it('a directory that cannot be listed once opened is reported by its path, not by its descriptor', async () => {
    const { root, d } = layout('unlistable', SECRET.length);
    const repo = await Repository.init(new MemoryStorage(), PASSPHRASE, { host: 'h', user: 'u' }, SMALL);
    const warnings: string[] = [];
    const progress = { ...silentProgress, warn: (message: string) => void warnings.push(message) };
    // The listing fails as a chmod between the open and the listing, or running out of descriptors, would make it.
    const real = fs.readdirSync;
    let failed = false;
    fs.readdirSync = ((path: fs.PathLike, options?: unknown) => {
      const names = (real as (...args: unknown[]) => unknown)(path, options);
      // Only d: the one directory listed through its descriptor that holds `shadow`.
      if (!failed && String(path).startsWith('/proc/self/fd/') && (names as Buffer[]).some((n) => String(n) === 'shadow')) {
        failed = true;
        throw Object.assign(new Error(`EMFILE: too many open files, scandir '${String(path)}'`), { code: 'EMFILE', syscall: 'scandir' });
      }
      return names;
    }) as typeof fs.readdirSync;
    syncBuiltinESMExports();
    try {
      const snapshot = await backupDir(repo, join(root, 'home'), { progress });
      assert.equal(snapshot.partial, true);
    } finally {
      fs.readdirSync = real;
      syncBuiltinESMExports();
    }
    assert.ok(
      warnings.some((w) => w.startsWith('cannot back up u/d: EMFILE') && w.includes(`'${d}'`)),
      warnings.join('\n'),
    );
  });

  it('an entry whose path is longer than a restore could create is reported and left out; the snapshot restores', async () => {
    const top = join(work.path, 'deep');
    fs.mkdirSync(top);
    fs.writeFileSync(join(top, 'shallow'), 'kept\n');
    // 22 levels of 200-byte names: past PATH_MAX. Made through descriptors, as no path to them can be given.
    const fds: number[] = [];
    let at = top;
    for (let level = 0; level < 22; level++) {
      const fd = fs.openSync(at, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY);
      fds.push(fd);
      const name = `${String(level).padStart(2, '0')}${'n'.repeat(198)}`;
      fs.mkdirSync(`/proc/self/fd/${fd}/${name}`);
      at = `/proc/self/fd/${fd}/${name}`;
    }
    fs.writeFileSync(`${at}/too-deep`, 'x\n');
    for (const fd of fds) fs.closeSync(fd);
    try {
      const repo = await Repository.init(new MemoryStorage(), PASSPHRASE, { host: 'h', user: 'u' }, SMALL);
      const warnings: string[] = [];
      const progress = { ...silentProgress, warn: (message: string) => void warnings.push(message) };
      const snapshot = await backupDir(repo, top, { progress });
      assert.equal(snapshot.partial, true);
      assert.ok(
        warnings.some((w) => /cannot back up .*: its path is longer than the 4095 bytes a restore could create/.test(w)),
        warnings.join('\n'),
      );
      const target = join(work.path, 'restored-deep');
      await restoreTo(repo, snapshot.id, target);
      assert.equal(fs.readFileSync(join(target, 'shallow'), 'utf8'), 'kept\n');
    } finally {
      // GNU rm walks by descriptor: Node's recursive rm works by path and cannot remove this tree.
      execFileSync('rm', ['-rf', top, join(work.path, 'restored-deep')]);
    }
  });

  it('a file swapped for a FIFO when it is opened is skipped; the backup does not wait for a writer', { timeout: 30_000 }, async () => {
    const root = join(work.path, 'fifo');
    fs.mkdirSync(join(root, 'src'), { recursive: true });
    fs.writeFileSync(join(root, 'src', 'a'), 'a file\n');
    fs.writeFileSync(join(root, 'src', 'b'), 'then a FIFO\n');
    const repo = await Repository.init(new MemoryStorage(), PASSPHRASE, { host: 'h', user: 'u' }, SMALL);
    const snapshot = await withSwapAtOpen(
      '/b',
      () => {
        fs.unlinkSync(join(root, 'src', 'b'));
        execFileSync('mkfifo', [join(root, 'src', 'b')]);
      },
      () => backupDir(repo, join(root, 'src')),
    );
    assert.equal(snapshot.partial, true);
    const target = join(work.path, 'restored-fifo');
    await restoreTo(repo, snapshot.id, target);
    assert.deepEqual(fs.readdirSync(target), ['a']);
  });
});
