import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { chmod, chown, mkdir, readFile, stat, utimes } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { Repository } from '../../../agent/core/repository.ts';
import { tempDir, initSmallRepo, fileRepo } from '../../helpers/repo.ts';
import { craftSnapshot, CONTENT } from './craft.ts';

const run = promisify(execFile);
const IS_ROOT = process.getuid?.() === 0;
/** nobody: a user that owns nothing here. */
const USER = 65534;
const OLD = new Date(Date.UTC(2001, 8, 9, 1, 46, 40));

/**
 * The root metadata as an unprivileged user meets it: a crafted `root` naming
 * uid 0, and a --force restore into a directory the user may write into but
 * does not own. Needs root to start the child as another user.
 */
describe(
  'root metadata restored by a user who is not root',
  { skip: IS_ROOT ? false : 'needs root to start a child as another user' },
  () => {
    let work: Awaited<ReturnType<typeof tempDir>>;
    let repo: Repository;
    let repoPath: string;
    before(async () => {
      work = await tempDir('root-user');
      repoPath = join(work.path, 'repo');
      repo = await initSmallRepo(fileRepo(repoPath));
    });
    after(async () => {
      await work.remove();
    });

    async function restoreAsUser(
      id: string,
      target: string,
      force: boolean,
    ): Promise<{ ok: boolean; code?: string; message?: string; errors?: unknown[] }> {
      // The user needs the repository (it takes a lock) and the work directory.
      await run('chown', ['-R', `${USER}:${USER}`, repoPath]);
      await chmod(work.path, 0o755);
      const { stdout } = await run(
        process.execPath,
        [join(import.meta.dirname, 'restore-as-user.ts'), repoPath, id, target, force ? 'force' : ''],
        {
          uid: USER,
          gid: USER,
          env: { ...process.env, HOME: work.path },
        },
      );
      return JSON.parse(stdout) as { ok: boolean };
    }

    it('a crafted root naming uid 0 gives the new target its mode and times, never its owner', async () => {
      const id = await craftSnapshot(repo, async (_t, f) => [f], { mode: 0o750, uid: 0, gid: 0, mtimeNs: '1000000000000000000' });
      const mine = join(work.path, 'mine');
      await mkdir(mine);
      await chown(mine, USER, USER);
      const target = join(mine, 'fresh');
      const outcome = await restoreAsUser(id, target, false);
      assert.equal(outcome.ok, true, JSON.stringify(outcome));
      const st = await stat(target);
      assert.deepEqual([st.uid, st.gid], [USER, USER]);
      assert.equal(st.mode & 0o7777, 0o750);
      assert.equal(st.mtimeMs, 1e12);
      assert.deepEqual(await readFile(join(target, 'x')), CONTENT);
    });

    it('--force into a directory owned by someone else: the files are written and the metadata it may not change is a clean, named error', async () => {
      const id = await craftSnapshot(repo, async (_t, f) => [f], { mode: 0o700, uid: USER, gid: USER, mtimeNs: '1000000000000000000' });
      const theirs = join(work.path, 'theirs');
      await mkdir(theirs);
      await chown(theirs, 0, 0);
      await chmod(theirs, 0o777);
      await utimes(theirs, OLD, OLD);
      const outcome = await restoreAsUser(id, theirs, true);
      assert.equal(outcome.ok, false);
      assert.equal(outcome.code, 'Cairn.Failure');
      assert.match(outcome.message ?? '', /cannot restore \. \(the target's own metadata\): EPERM/);
      const st = await stat(theirs);
      assert.equal(st.mode & 0o7777, 0o777, 'the owner keeps their mode');
      assert.deepEqual([st.uid, st.gid], [0, 0]);
      assert.deepEqual(await readFile(join(theirs, 'x')), CONTENT, 'everything else was restored');
    });
  },
);
