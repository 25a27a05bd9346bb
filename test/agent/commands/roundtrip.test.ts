import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { appendFile, writeFile, open, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { makeRandomTree, describeTree } from '../../helpers/tree.ts';
import { tempDir, initSmallRepo, fileRepo, backupDir, restoreTo } from '../../helpers/repo.ts';

describe('backup and restore on a file:// repository', () => {
  let work: Awaited<ReturnType<typeof tempDir>>;
  before(async () => {
    work = await tempDir('roundtrip');
  });
  after(async () => {
    await work.remove();
  });

  for (const seed of [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]) {
    it(`restores random tree #${seed} byte for byte with its metadata`, async () => {
      const source = join(work.path, `src-${seed}`);
      const target = join(work.path, `dst-${seed}`);
      await makeRandomTree(source, seed);
      const repo = await initSmallRepo(fileRepo(join(work.path, `repo-${seed}`)));
      const snapshot = await backupDir(repo, source);
      assert.equal(snapshot.summary.errors, 0);
      assert.ok(snapshot.summary.piecesAdded > 3, 'the tree spans several pieces');
      const { result } = await restoreTo(repo, snapshot.id, target);
      assert.deepEqual(result.errors, []);
      assert.deepEqual(await describeTree(target), await describeTree(source));
    });
  }

  it('stores identical contents once and a second unchanged backup adds nothing and reads nothing', async () => {
    const source = join(work.path, 'dedupe-src');
    await makeRandomTree(source, 99, { files: 60, maxFileSize: 200_000 });
    const big = Buffer.alloc(400_000, 7);
    await writeFile(join(source, 'copy-a'), big);
    await writeFile(join(source, 'copy-b'), big);
    const repo = await initSmallRepo(fileRepo(join(work.path, 'dedupe-repo')));
    const first = await backupDir(repo, source);
    assert.ok(first.summary.rawBytesAdded < first.summary.totalBytes, 'duplicate contents are stored once');
    const second = await backupDir(repo, source);
    assert.equal(second.parent, first.id);
    assert.equal(second.summary.filesUnchanged, second.summary.totalFiles);
    assert.equal(second.summary.bytesRead, 0);
    assert.equal(second.summary.bytesAdded, 0);
    assert.equal(second.tree, first.tree);
  });

  it('a changed-file incremental reads only changed files, uploads only changed pieces, and both snapshots restore', async () => {
    const source = join(work.path, 'incr-src');
    await makeRandomTree(source, 42, { files: 30, maxFileSize: 100_000 });
    const bigPath = join(source, 'big.bin');
    const { Random } = await import('../../helpers/tree.ts');
    await writeFile(bigPath, new Random(5).bytes(2_000_000, false));
    const repo = await initSmallRepo(fileRepo(join(work.path, 'incr-repo')));
    const first = await backupDir(repo, source);
    const before = await describeTree(source);

    const handle = await open(bigPath, 'r+');
    await handle.write(Buffer.from('CHANGED IN PLACE'), 0, 16, 1_000_000);
    await handle.close();
    await appendFile(join(source, 'appended.txt'), 'more bytes\n');
    await writeFile(join(source, 'brand-new.txt'), 'new file\n');
    await rm(join(source, 'empty-dir'), { recursive: true });

    const second = await backupDir(repo, source);
    const s = second.summary;
    assert.equal(s.filesNew, 2, 'appended.txt and brand-new.txt are new');
    assert.equal(s.filesChanged, 1, 'big.bin changed');
    assert.equal(s.filesUnchanged, first.summary.totalFiles - 1);
    assert.equal(s.bytesRead, 2_000_000 + 11 + 9, 'only the changed and new files were read');
    assert.ok(s.rawBytesAdded < 200_000, `an in-place change uploads a few pieces, not the file (added ${s.rawBytesAdded} bytes)`);

    const restoredNew = join(work.path, 'incr-restored-new');
    const restoredOld = join(work.path, 'incr-restored-old');
    await restoreTo(repo, second.id, restoredNew);
    await restoreTo(repo, first.id, restoredOld);
    assert.deepEqual(await describeTree(restoredNew), await describeTree(source));
    assert.deepEqual(await describeTree(restoredOld), before);
  });
});
