import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { chmod, chown, lchown, lstat, mkdir, readFile, readdir, symlink, writeFile } from 'node:fs/promises';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { join } from 'node:path';
import { CairnError } from '../../../agent/core/errors.ts';
import { Repository } from '../../../agent/core/repository.ts';
import { MemoryStorage } from '../../helpers/memory-storage.ts';
import { PASSPHRASE, SMALL, backupDir, restoreTo, tempDir } from '../../helpers/repo.ts';
import { craftSnapshot, META } from './craft.ts';

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

  it('refuses a target that group bits let others write, group 0 included (an access control list shows its mask there)', async () => {
    const target = join(work.path, 'group-bits');
    await mkdir(target);
    await chmod(target, 0o775);
    await assert.rejects(restoreTo(repo, snapshotId, target), refused('writable through its group bits'));
    assert.deepEqual(await readdir(target), []);
  });

  it('--force takes over a directory another user owns inside the target, so they cannot swap what root makes in it; it is theirs again at the end', async () => {
    const src = join(work.path, 'home-src');
    await mkdir(join(src, 'alice', 'sub'), { recursive: true });
    for (let i = 0; i < 400; i++) await writeFile(join(src, 'alice', 'sub', `f${i}`), `file ${i}\n`);
    await chown(join(src, 'alice'), NOBODY, NOBODY);
    await chmod(join(src, 'alice'), 0o750);
    const id = (await backupDir(repo, src)).id;
    const target = join(work.path, 'home');
    await mkdir(join(target, 'alice'), { recursive: true, mode: 0o755 });
    await chown(join(target, 'alice'), NOBODY, NOBODY);
    const outside = join(work.path, 'root-only');
    await mkdir(outside, { mode: 0o700 });
    // The user must reach their directory: through the work directory (root's, 0755 as /home is).
    await chmod(work.path, 0o755);
    // The user's own process, running through the whole restore: as soon as root has made alice/sub, it moves it
    // away and puts a symlink to the root-only directory in its place (it may: alice/ is theirs).
    const racer = spawn(process.execPath, ['-e', RACER, join(target, 'alice', 'sub'), outside], { uid: NOBODY, gid: NOBODY });
    const exited = once(racer, 'exit');
    let said = '';
    racer.stdout.setEncoding('utf8').on('data', (text: string) => (said += text));
    await once(racer.stdout, 'data');
    try {
      await restoreTo(repo, id, target, { force: true });
    } finally {
      racer.kill();
      await exited;
    }
    assert.deepEqual(await readdir(outside), [], `nothing was written outside the target (racer: ${said.trim()})`);
    // Once the restore has given alice/ back, the racer may swap at last: the files are then in sub.old.
    const restored = said.includes('swapped') ? 'sub.old' : 'sub';
    assert.equal((await readdir(join(target, 'alice', restored))).length, 400);
    const alice = await lstat(join(target, 'alice'));
    assert.deepEqual([alice.uid, alice.gid, alice.mode & 0o7777], [NOBODY, NOBODY, 0o750], "the snapshot's owner and mode, at the end");
  });

  it('a --force restore that fails gives the directories it took over back their owner and mode', async () => {
    const id = await craftSnapshot(repo, async (t, f) => [
      {
        ...META,
        name: 'alice',
        type: 'dir',
        // A file, then a directory no Linux file system takes (its mkdir fails): the restore stops there.
        subtree: await t([
          { ...f, name: 'a-file' },
          { ...META, name: 'd'.repeat(256), type: 'dir', subtree: await t([f]) },
        ]),
      },
    ]);
    const target = join(work.path, 'failing-home');
    await mkdir(join(target, 'alice'), { recursive: true });
    await chown(join(target, 'alice'), NOBODY, NOBODY);
    await chmod(join(target, 'alice'), 0o2755);
    await assert.rejects(restoreTo(repo, id, target, { force: true }), /name too long/);
    const alice = await lstat(join(target, 'alice'));
    assert.deepEqual([alice.uid, alice.gid, alice.mode & 0o7777], [NOBODY, NOBODY, 0o2755], 'alice/ is as it was');
  });

  it('--force removes a directory another user owns where the snapshot has a file, never following what is inside it', async () => {
    const outside = join(work.path, 'kept-outside');
    await mkdir(outside, { mode: 0o700 });
    await writeFile(join(outside, 'precious'), 'precious\n');
    const target = join(work.path, 'dir-for-file');
    await mkdir(join(target, 'top', 'inner'), { recursive: true });
    await symlink(outside, join(target, 'top', 'inner', 'link'));
    for (const path of [join(target, 'top'), join(target, 'top', 'inner')]) await chown(path, NOBODY, NOBODY);
    await restoreTo(repo, snapshotId, target, { force: true });
    assert.equal(await readFile(join(target, 'top'), 'utf8'), 'top file\n');
    assert.deepEqual(await readdir(outside), ['precious']);
    assert.equal(await readFile(join(outside, 'precious'), 'utf8'), 'precious\n');
  });
});

/** The other user's racer (argv: the directory root will make, where to point the symlink); says "ready", then polls. */
const RACER = `
const fs = require('node:fs');
const [dir, outside] = process.argv.slice(1);
process.stdout.write('ready\\n');
const poll = () => {
  try {
    if (fs.lstatSync(dir).isDirectory()) {
      fs.renameSync(dir, dir + '.old');
      fs.symlinkSync(outside, dir);
      process.stdout.write('swapped\\n');
      return;
    }
  } catch {}
  setImmediate(poll);
};
poll();
`;
