import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { CairnError } from '../../../agent/core/errors.ts';
import { Repository } from '../../../agent/core/repository.ts';
import { MemoryStorage } from '../../helpers/memory-storage.ts';
import { PASSPHRASE, SMALL, backupDir, restoreTo, tempDir } from '../../helpers/repo.ts';

/**
 * A restore whose target cannot be written says why and what to do. Node's recursive mkdir
 * reports ENOENT on a read-only file system, and a file that failed for the whole target (read-only,
 * full) pointed at --ignore-errors, which would only repeat the error for every file. Real tmpfs
 * mounts (the suite runs as root).
 */
describe('restore targets that cannot be written', () => {
  let work: { path: string; remove: () => Promise<void> };
  let repo: Repository;
  let snapshotId: string;
  const mounts: string[] = [];

  const mountTmpfs = async (name: string, options: string): Promise<string> => {
    const dir = join(work.path, name);
    await mkdir(dir);
    const mount = spawnSync('mount', ['-t', 'tmpfs', '-o', options, 'tmpfs', dir], { encoding: 'utf8' });
    assert.equal(mount.status, 0, `mount a tmpfs: ${mount.stderr}`);
    mounts.push(dir);
    return dir;
  };

  const failsWith = (message: RegExp, hint: RegExp) => (error: unknown) => {
    assert.ok(error instanceof CairnError, String(error));
    assert.match(error.message, message);
    assert.match(error.hint ?? '', hint);
    assert.doesNotMatch(error.hint ?? '', /--ignore-errors/);
    return true;
  };

  before(async () => {
    work = await tempDir('target-errors');
    const src = join(work.path, 'src');
    await mkdir(join(src, 'd'), { recursive: true });
    await writeFile(join(src, 'd', 'big'), randomBytes(300_000));
    await writeFile(join(src, 'small'), 'small file\n');
    repo = await Repository.init(new MemoryStorage(), PASSPHRASE, { host: 'h', user: 'u' }, SMALL);
    snapshotId = (await backupDir(repo, src)).id;
  });
  after(async () => {
    for (const dir of mounts.reverse()) spawnSync('umount', [dir]);
    await work.remove();
  });

  it('a new target on a read-only file system: the system reason (EROFS), not ENOENT, and nothing made', async () => {
    const ro = await mountTmpfs('ro', 'ro,size=1m,mode=0755');
    await assert.rejects(
      restoreTo(repo, snapshotId, join(ro, 'new', 'deeper')),
      failsWith(/cannot create the restore target .*new\/deeper: EROFS.*nothing was written/, /mounted read-only/),
    );
    // An existing, empty target there: the first file's failure names the file system, not --ignore-errors.
    await assert.rejects(restoreTo(repo, snapshotId, ro), failsWith(/EROFS/, /mounted read-only/));
    assert.deepEqual(await readdir(ro), []);
  });

  it('a target under a file: the reason, and nothing made', async () => {
    const file = join(work.path, 'a-file');
    await writeFile(file, 'in the way\n');
    await assert.rejects(
      restoreTo(repo, snapshotId, join(file, 'x', 'y')),
      failsWith(/cannot use the restore target .*ENOTDIR/, /choose another target/),
    );
  });

  it('a full file system: the hint says so', async () => {
    const tiny = await mountTmpfs('tiny', 'size=128k,mode=0755');
    const target = join(tiny, 'restore');
    await assert.rejects(restoreTo(repo, snapshotId, target), failsWith(/cannot restore d\/big: ENOSPC/, /file system is full/));
    assert.deepEqual(await readdir(join(target, 'd')), [], 'the file cut short is removed');
  });
});
