import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { chmod, chown, mkdir, stat, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Repository } from '../../../agent/core/repository.ts';
import { tempDir, initSmallRepo, fileRepo, backupDir, restoreTo } from '../../helpers/repo.ts';

const IS_ROOT = process.getuid?.() === 0;
const OLD = new Date(Date.UTC(2001, 8, 9, 1, 46, 40, 250));

describe('the backed-up directory keeps its own metadata', () => {
  let work: Awaited<ReturnType<typeof tempDir>>;
  let repo: Repository;
  before(async () => {
    work = await tempDir('root-meta');
    repo = await initSmallRepo(fileRepo(join(work.path, 'repo')));
  });
  after(async () => {
    await work.remove();
  });

  it('a 0750 directory owned by another user with 2001 times comes back so at the target', async () => {
    const src = join(work.path, 'src');
    await mkdir(src);
    await writeFile(join(src, 'inside'), 'data\n');
    await chmod(src, 0o750);
    if (IS_ROOT) await chown(src, 12345, 23456);
    await utimes(src, OLD, OLD);

    const snapshot = await backupDir(repo, src);
    assert.deepEqual(snapshot.root, {
      mode: 0o750,
      uid: IS_ROOT ? 12345 : process.getuid?.(),
      gid: IS_ROOT ? 23456 : process.getgid?.(),
      mtimeNs: (BigInt(OLD.getTime()) * 1_000_000n).toString(),
    });
    const stored = await repo.readSnapshot(snapshot.id);
    assert.deepEqual(stored.root, snapshot.root, 'the manifest in the repository holds it');

    const target = join(work.path, 'target');
    await restoreTo(repo, snapshot.id, target);
    const restored = await stat(target);
    assert.equal(restored.mode & 0o7777, 0o750);
    assert.equal(restored.mtime.getTime(), OLD.getTime());
    if (IS_ROOT) {
      assert.equal(restored.uid, 12345);
      assert.equal(restored.gid, 23456);
    }
    assert.equal((await stat(join(target, 'inside'))).size, 5);
  });

  it('several paths or one file have no root metadata, and restore as before', async () => {
    const a = join(work.path, 'multi-a');
    const b = join(work.path, 'multi-b');
    await mkdir(a);
    await writeFile(b, 'b\n');
    const several = await backupDir(repo, a, { paths: [a, b] });
    assert.equal(several.root, undefined);
    const single = await backupDir(repo, b, { paths: [b] });
    assert.equal(single.root, undefined);
    const target = join(work.path, 'target-single');
    await restoreTo(repo, single.id, target);
    assert.equal((await stat(join(target, 'multi-b'))).size, 2);
  });
});
