import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { indexKey, snapshotKey } from '../../../agent/core/layout.ts';
import type { Repository } from '../../../agent/core/repository.ts';
import { runCli } from '../../helpers/cli.ts';
import { PASSPHRASE, fileRepo, initSmallRepo, tempDir } from '../../helpers/repo.ts';

/**
 * Issue 16, item 3 (found again by the hostile-host soak, docs/reliability.md): one junk object under
 * index/ or snapshots/ must not wedge the repository. Junk index files are skipped by readers (backup
 * and restore warn), GC refuses while one is there and `repair index` replaces it; a junk manifest
 * stops GC until it is forgotten by id, which now works.
 */
describe('one junk object does not wedge the repository (issue 16)', () => {
  let work: Awaited<ReturnType<typeof tempDir>>;
  let repoPath: string;
  let env: Record<string, string>;
  let src: string;
  let repo: Repository;
  before(async () => {
    work = await tempDir('junk-wedges');
    repoPath = join(work.path, 'repo');
    repo = await initSmallRepo(fileRepo(repoPath));
    env = { CAIRN_REPOSITORY: repoPath, CAIRN_PASSWORD: PASSPHRASE };
    src = join(work.path, 'src');
    await mkdir(src, { recursive: true });
    await writeFile(join(src, 'a.txt'), randomBytes(50_000));
  });
  after(async () => {
    await work.remove();
  });

  it('junk under index/ (random bytes, and junk sealed with the key): backup and restore go on with a warning, prune refuses naming repair index, repair index clears it', async () => {
    const first = await runCli(['backup', src], env);
    assert.equal(first.code, 0, first.stderr);
    const junk = indexKey(randomBytes(32).toString('hex'));
    await writeFile(join(repoPath, junk), randomBytes(100));
    const sealedJunk = indexKey(randomBytes(32).toString('hex'));
    await writeFile(join(repoPath, sealedJunk), repo.seal('index', sealedJunk, randomBytes(77)));

    await writeFile(join(src, 'b.txt'), 'second\n');
    const second = await runCli(['backup', src], env);
    assert.equal(second.code, 0, second.stderr);
    assert.match(second.stdout + second.stderr, new RegExp(`index file ${junk} cannot be read and is skipped`));
    const restored = join(work.path, 'restored');
    const restore = await runCli(['restore', 'latest', '--target', restored], env);
    assert.equal(restore.code, 0, restore.stderr);
    assert.deepEqual(
      await readFile(join(restored, 'src', 'a.txt')).catch(() => readFile(join(restored, 'a.txt'))),
      await readFile(join(src, 'a.txt')),
    );

    const prune = await runCli(['prune'], env);
    assert.equal(prune.code, 14, prune.stderr);
    assert.match(prune.stderr, /garbage collection deletes nothing while index file\(s\)/);
    assert.match(prune.stderr, /cairn repair index/);
    const verify = await runCli(['verify'], env);
    assert.equal(verify.code, 14, 'verify reports the unreadable index files');
    assert.match(verify.stderr, /repair index/);

    const repair = await runCli(['repair', 'index'], env);
    assert.equal(repair.code, 0, repair.stderr);
    const pruned = await runCli(['prune'], env);
    assert.equal(pruned.code, 0, pruned.stderr);
    const check = await runCli(['check'], env);
    assert.equal(check.code, 0, check.stderr);
  });

  it('junk under snapshots/: prune refuses, forget by that id removes it, prune runs again', async () => {
    const id = randomBytes(32).toString('hex');
    await writeFile(join(repoPath, snapshotKey(id)), randomBytes(100));
    const prune = await runCli(['prune'], env);
    assert.equal(prune.code, 14, prune.stderr);
    const forget = await runCli(['forget', id.slice(0, 12)], env);
    assert.equal(forget.code, 0, forget.stderr);
    assert.match(forget.stdout + forget.stderr, /unreadable manifest|"unreadable":true/);
    const pruned = await runCli(['prune'], env);
    assert.equal(pruned.code, 0, pruned.stderr);
    const snapshots = await runCli(['snapshots', '--json'], env);
    assert.equal(snapshots.code, 0, snapshots.stderr);
    assert.doesNotMatch(snapshots.stdout, new RegExp(id));
  });
});
