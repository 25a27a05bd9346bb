import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import { syncBuiltinESMExports } from 'node:module';
import { join } from 'node:path';
import { Repository } from '../../../agent/core/repository.ts';
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

  for (const size of [SECRET.length, 300 << 10]) {
    it(`a directory on the way swapped for a symlink: root's file is not stored as the user's (${size} bytes, ${size < 256 << 10 ? 'read at once' : 'streamed'})`, async () => {
      const root = join(work.path, `swap-${size}`);
      const secret = join(root, 'secret');
      fs.mkdirSync(secret, { recursive: true, mode: 0o700 });
      const content = SECRET.padEnd(size, '#');
      fs.writeFileSync(join(secret, 'shadow'), content, { mode: 0o600 });
      // The user's own file of that name, size and mtime, in a directory they own.
      const d = join(root, 'home', 'u', 'd');
      fs.mkdirSync(d, { recursive: true });
      fs.writeFileSync(join(d, 'shadow'), 'x'.repeat(size), { mode: 0o644 });
      const repo = await Repository.init(new MemoryStorage(), PASSPHRASE, { host: 'h', user: 'u' }, SMALL);
      const snapshot = await withSwapAtOpen(
        '/d/shadow',
        () => {
          fs.renameSync(d, `${d}.real`);
          fs.symlinkSync(secret, d);
        },
        () => backupDir(repo, join(root, 'home')),
      );
      assert.equal(snapshot.partial, true, 'the file that changed is reported');
      const target = join(work.path, `restored-${size}`);
      await restoreTo(repo, snapshot.id, target);
      assert.equal(
        fs.existsSync(join(target, 'home', 'u', 'd', 'shadow')),
        false,
        'the swapped-in file was not stored under the user path',
      );
    });
  }

  it('a file swapped for a FIFO when it is opened is skipped; the backup does not wait for a writer', { timeout: 30_000 }, async () => {
    const root = join(work.path, 'fifo');
    fs.mkdirSync(join(root, 'src'), { recursive: true });
    fs.writeFileSync(join(root, 'src', 'a'), 'a file\n');
    fs.writeFileSync(join(root, 'src', 'b'), 'then a FIFO\n');
    const repo = await Repository.init(new MemoryStorage(), PASSPHRASE, { host: 'h', user: 'u' }, SMALL);
    const snapshot = await withSwapAtOpen(
      '/src/b',
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
