import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { chmod, chown, lchown, lstat, mkdir, readFile, readdir, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { CairnError } from '../../../agent/core/errors.ts';
import { Repository } from '../../../agent/core/repository.ts';
import { MemoryStorage } from '../../helpers/memory-storage.ts';
import { PASSPHRASE, SMALL, backupDir, restoreTo, tempDir } from '../../helpers/repo.ts';

/**
 * Issue 16: restoring as root into a target another user controls lets that user swap a
 * directory for a symlink mid-restore. As root the restore refuses such targets (owned by another
 * user, or under a directory another user can write without the sticky bit) and never follows a
 * symlink at or below the target. These tests run as root, as the suite does.
 */
const NOBODY = 65534;

describe('restore targets another user controls (issue 16)', () => {
  let work: { path: string; remove: () => Promise<void> };
  let repo: Repository;
  let snapshotId: string;

  before(async () => {
    assert.equal(process.getuid?.(), 0, 'these tests run as root (the checks apply to root only)');
    work = await tempDir('target-safety');
    const src = join(work.path, 'src');
    await mkdir(join(src, 'd'), { recursive: true });
    await writeFile(join(src, 'd', 'f'), 'inside d\n');
    await writeFile(join(src, 'top'), 'top file\n');
    repo = await Repository.init(new MemoryStorage(), PASSPHRASE, { host: 'h', user: 'u' }, SMALL);
    snapshotId = (await backupDir(repo, src)).id;
  });
  after(async () => {
    await work.remove();
  });

  const refused = (fragment: string) => (error: unknown) =>
    error instanceof CairnError &&
    error.code === 'Cairn.Usage' &&
    error.message.includes('refusing to restore as root') &&
    error.message.includes(fragment);

  it('refuses a target owned by nobody, writing nothing', async () => {
    const target = join(work.path, 'owned-by-nobody');
    await mkdir(target, { mode: 0o755 });
    await chown(target, NOBODY, NOBODY);
    await assert.rejects(restoreTo(repo, snapshotId, target), refused(`uid ${NOBODY}`));
    assert.deepEqual(await readdir(target), []);
  });

  it('refuses a target under a 0777 directory without the sticky bit, naming it and the fix', async () => {
    const open = join(work.path, 'open');
    await mkdir(open);
    await chmod(open, 0o777);
    const target = join(open, 'restore-here');
    await assert.rejects(restoreTo(repo, snapshotId, target), (error: unknown) => {
      assert.ok(refused(open)(error), String(error));
      assert.match((error as CairnError).hint ?? '', /chmod go-w|chmod \+t/);
      return true;
    });
    await assert.rejects(lstat(target), { code: 'ENOENT' }, 'nothing was created');
  });

  it('refuses a target whose path goes through a symlink another user owns', async () => {
    const real = join(work.path, 'real-dir');
    await mkdir(real, { mode: 0o700 });
    const link = join(work.path, 'link-by-nobody');
    await symlink(real, link);
    await lchown(link, NOBODY, NOBODY);
    await assert.rejects(restoreTo(repo, snapshotId, link), refused('symlink owned by uid'));
    assert.deepEqual(await readdir(real), []);
  });

  it('accepts a root-only target under a sticky world-writable directory (like /tmp)', async () => {
    const sticky = join(work.path, 'sticky');
    await mkdir(sticky);
    await chmod(sticky, 0o1777);
    const target = join(sticky, 'restore-here');
    await restoreTo(repo, snapshotId, target);
    assert.equal(await readFile(join(target, 'd', 'f'), 'utf8'), 'inside d\n');
  });

  it('never writes through a symlink planted inside the target (--force): the file outside stays as it was', async () => {
    const outside = join(work.path, 'etc-like');
    await mkdir(outside, { mode: 0o700 });
    await writeFile(join(outside, 'f'), 'precious\n');
    await writeFile(join(outside, 'passwd'), 'root:x:0:0\n');
    const target = join(work.path, 'planted');
    await mkdir(target, { mode: 0o700 });
    await symlink(outside, join(target, 'd')); // where the snapshot has directory d
    await symlink(join(outside, 'passwd'), join(target, 'top')); // where it has file top
    await restoreTo(repo, snapshotId, target, { force: true });
    assert.equal(await readFile(join(outside, 'f'), 'utf8'), 'precious\n');
    assert.equal(await readFile(join(outside, 'passwd'), 'utf8'), 'root:x:0:0\n');
    assert.ok((await lstat(join(target, 'd'))).isDirectory(), 'd is a real directory now');
    assert.ok((await lstat(join(target, 'top'))).isFile(), 'top is a regular file now');
    assert.equal(await readFile(join(target, 'd', 'f'), 'utf8'), 'inside d\n');
    assert.equal(await readFile(join(target, 'top'), 'utf8'), 'top file\n');
  });
});
