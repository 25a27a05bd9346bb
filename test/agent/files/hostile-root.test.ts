import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { chmod, chown, lstat, mkdir, readFile, stat, symlink, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Repository } from '../../../agent/core/repository.ts';
import { tempDir, initSmallRepo, fileRepo, backupDir, restoreTo } from '../../helpers/repo.ts';
import { craftSnapshot, CONTENT, META } from './craft.ts';

const IS_ROOT = process.getuid?.() === 0;
const OLD = new Date(Date.UTC(2001, 8, 9, 1, 46, 40));

/** `touch -h -d` sets times before 1970 (Node's utimes takes a negative number as "now"). */
function touchOld(path: string, date: string): void {
  execFileSync('touch', ['-h', '-d', date, path]);
}

describe('the root metadata and times a restore applies, from honest and crafted manifests', () => {
  let work: Awaited<ReturnType<typeof tempDir>>;
  let repo: Repository;
  before(async () => {
    work = await tempDir('hostile-root');
    repo = await initSmallRepo(fileRepo(join(work.path, 'repo')));
  });
  after(async () => {
    await work.remove();
  });

  it('times before 1970 (negative mtimeNs) come back on files, directories, symlinks and the root', async () => {
    const src = join(work.path, 'old-src');
    await mkdir(join(src, 'dir'), { recursive: true });
    await writeFile(join(src, 'dir', 'file'), 'old\n');
    await symlink('dir/file', join(src, 'link'));
    for (const path of [join(src, 'dir', 'file'), join(src, 'link'), join(src, 'dir'), src]) touchOld(path, '1960-02-03T04:05:06.5Z');
    const snapshot = await backupDir(repo, src);
    assert.ok(snapshot.root && BigInt(snapshot.root.mtimeNs) < 0n);
    const target = join(work.path, 'old-target');
    await restoreTo(repo, snapshot.id, target);
    for (const rel of ['dir/file', 'link', 'dir', '']) {
      const [before, after] = await Promise.all([lstat(join(src, rel), { bigint: true }), lstat(join(target, rel), { bigint: true })]);
      // Sub-microsecond digits are beyond a double's seconds; the second and millisecond must be exact.
      assert.equal(after.mtimeMs, before.mtimeMs, `mtime of ${rel || 'the root'}`);
    }
  });

  it('a crafted root with an mtime no filesystem holds is a clean error naming the target; --ignore-errors restores the rest', async () => {
    const id = await craftSnapshot(repo, async (_t, f) => [f], { mode: 0o700, uid: 0, gid: 0, mtimeNs: '9'.repeat(30) });
    await assert.rejects(restoreTo(repo, id, join(work.path, 'huge-1')), (error: Error & { code?: string }) => {
      assert.equal(error.code, 'Cairn.Failure');
      assert.match(error.message, /cannot restore \. \(the target's own metadata\)/);
      return true;
    });
    const target = join(work.path, 'huge-2');
    const { result } = await restoreTo(repo, id, target, { ignoreErrors: true });
    assert.equal(result.errors.length, 1);
    assert.deepEqual(await readFile(join(target, 'x')), CONTENT);
  });

  it('a crafted directory entry with an impossible mtime is a clean, named error too', async () => {
    const id = await craftSnapshot(repo, async (t, f) => [
      { ...META, mtimeNs: '9'.repeat(30), name: 'd', type: 'dir', subtree: await t([f]) },
    ]);
    await assert.rejects(restoreTo(repo, id, join(work.path, 'huge-dir')), /cannot restore d: /);
  });

  it('a crafted root with every mode bit and another owner is applied as recorded (as any entry would be)', async () => {
    const id = await craftSnapshot(repo, async (_t, f) => [f], { mode: 0o7777, uid: 4242, gid: 4343, mtimeNs: '-1000000000' });
    const target = join(work.path, 'all-bits');
    await restoreTo(repo, id, target);
    const st = await stat(target);
    assert.equal(st.mode & 0o7777, 0o7777);
    assert.equal(st.mtimeMs, -1000);
    if (IS_ROOT) assert.deepEqual([st.uid, st.gid], [4242, 4343]);
    else assert.equal(st.uid, process.getuid?.());
  });

  it('never follows a symlinked target to give the directory behind it the snapshot root metadata', async () => {
    const behind = join(work.path, 'behind-link');
    await mkdir(behind, { mode: 0o755 });
    await utimes(behind, OLD, OLD);
    const link = join(work.path, 'target-link');
    await symlink(behind, link);
    const id = await craftSnapshot(repo, async (_t, f) => [f], { mode: 0o777, uid: 4242, gid: 4242, mtimeNs: '0' });
    await restoreTo(repo, id, link);
    const st = await stat(behind);
    assert.equal(st.mode & 0o7777, 0o755, 'the directory behind the link keeps its mode');
    assert.equal(st.uid, process.getuid?.());
    assert.equal(st.mtimeMs >= OLD.getTime(), true);
    assert.deepEqual(await readFile(join(behind, 'x')), CONTENT, 'the files still go where the operator pointed');
  });

  it('restore --force into an existing directory that holds data leaves its own owner, mode and times (restore --force --target / must not chown /)', async () => {
    const existing = join(work.path, 'someone-elses');
    await mkdir(existing, { mode: 0o700 });
    await writeFile(join(existing, 'theirs'), 'kept\n');
    // As root, a target another user owns is refused (restore-target-safety.test.ts); root's own keeps its owner.
    if (IS_ROOT) await chown(existing, 0, 0);
    const id = await craftSnapshot(repo, async (_t, f) => [f], { mode: 0o750, uid: 4242, gid: 4343, mtimeNs: '1000000000000000000' });
    const before = await stat(existing);
    await restoreTo(repo, id, existing, { force: true });
    const st = await stat(existing);
    assert.equal(st.mode & 0o7777, 0o700, 'the directory keeps its mode');
    assert.deepEqual([st.uid, st.gid], [before.uid, before.gid], 'and its owner');
    assert.deepEqual(await readFile(join(existing, 'x')), CONTENT, 'the snapshot was written into it');
    assert.equal(await readFile(join(existing, 'theirs'), 'utf8'), 'kept\n', '--force overwrites entries, it does not empty the target');
  });

  it('an old-format snapshot (no root, no nameBytes) restores and leaves the target as it was', async () => {
    const target = join(work.path, 'old-format');
    await mkdir(target);
    await chmod(target, 0o711);
    await utimes(target, OLD, OLD);
    const id = await craftSnapshot(repo, async (t, f) => [
      f,
      { ...META, name: 'sub', type: 'dir', subtree: await t([{ ...f, name: 'y' }]) },
    ]);
    assert.equal((await repo.readSnapshot(id)).root, undefined);
    await restoreTo(repo, id, target);
    const st = await stat(target);
    assert.equal(st.mode & 0o7777, 0o711);
    assert.deepEqual(await readFile(join(target, 'sub', 'y')), CONTENT);
  });
});
