import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { link, mkdir, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Repository } from '../../../agent/core/repository.ts';
import { scan, type ScanTotals } from '../../../agent/files/scanner.ts';
import type { WalkLimitOptions } from '../../../agent/files/walk-limits.ts';
import { FileStorage } from '../../../agent/storage/file.ts';
import { PASSPHRASE, SMALL, backupDir, tempDir } from '../../helpers/repo.ts';

/**
 * The scan beside a backup (issue 19) gives the progress line its total: it must count what the
 * backup's walk stores, under the same limits, or the ETA lies.
 */
describe('scan', () => {
  let work: Awaited<ReturnType<typeof tempDir>>;
  let repo: Repository;
  let src: string;
  before(async () => {
    work = await tempDir('scanner');
    repo = await Repository.init(new FileStorage(join(work.path, 'repo')), PASSPHRASE, { host: 'test-host', user: 'tester' }, SMALL);
    src = join(work.path, 'src');
    await mkdir(join(src, 'a', 'b'), { recursive: true });
    await mkdir(join(src, 'cache'));
    await mkdir(join(src, 'marked'));
    await writeFile(join(src, 'a', 'one.txt'), 'one');
    await writeFile(join(src, 'a', 'b', 'two.bin'), Buffer.alloc(70_000, 2));
    await writeFile(join(src, 'a', 'skip.tmp'), 'excluded by pattern');
    await writeFile(join(src, 'cache', 'big'), Buffer.alloc(50_000, 1));
    await writeFile(join(src, 'marked', '.nobackup'), '');
    await writeFile(join(src, 'marked', 'inside'), 'left out with its directory');
    await writeFile(Buffer.concat([Buffer.from(`${src}/name-`), Buffer.from([0xe9])]), 'a name that is not UTF-8');
    await link(join(src, 'a', 'one.txt'), join(src, 'one-again.txt'));
    await symlink('a/one.txt', join(src, 'link'));
  });
  after(async () => {
    await work.remove();
  });

  async function both(paths: string[], excludes: string[], limits: WalkLimitOptions = {}): Promise<void> {
    const totals: ScanTotals = { files: 0, bytes: 0, done: false };
    await scan(paths, excludes, totals, limits);
    assert.equal(totals.done, true);
    const snapshot = await backupDir(repo, paths[0] as string, { paths, excludes, ...limits });
    assert.deepEqual(
      { files: totals.files, bytes: totals.bytes },
      { files: snapshot.summary.totalFiles, bytes: snapshot.summary.totalBytes },
      `scan of ${paths.join(' ')} excluding ${excludes.join(' ')} ${JSON.stringify(limits)}`,
    );
  }

  it('counts the files and bytes the backup stores: links, odd names, excludes and markers as the walk takes them', async () => {
    await both([src], []);
    await both([src], ['*.tmp', '/cache'], { excludeIfPresent: ['.nobackup'] });
    // Several paths sit side by side under their names: an anchored pattern names them.
    await both([join(src, 'a'), join(src, 'cache')], ['a/b']);
    await both([join(src, 'a', 'one.txt')], []);
  });

  it(
    'leaves out what lies beyond a mount point under --one-file-system',
    { skip: process.getuid?.() === 0 ? undefined : 'needs root (mounts a tmpfs inside the tree)' },
    async () => {
      const mnt = join(src, 'mnt');
      await mkdir(mnt);
      const mount = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=4m', 'tmpfs', mnt], { encoding: 'utf8' });
      assert.equal(mount.status, 0, `mount a tmpfs: ${mount.stderr}`);
      try {
        await writeFile(join(mnt, 'on-the-tmpfs'), Buffer.alloc(10_000, 3));
        await both([src], [], { oneFileSystem: true });
        await both([src], []);
      } finally {
        spawnSync('umount', [mnt]);
      }
    },
  );
});
