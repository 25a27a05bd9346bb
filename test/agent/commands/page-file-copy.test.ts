import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { copy, type CopyOptions } from '../../../agent/commands/copy.ts';
import { verify } from '../../../agent/commands/verify.ts';
import { CairnError } from '../../../agent/core/errors.ts';
import { Repository } from '../../../agent/core/repository.ts';
import type { Snapshot } from '../../../agent/core/snapshot.ts';
import type { Storage } from '../../../agent/core/storage.ts';
import { silentProgress } from '../../../agent/progress/progress.ts';
import { tempDir, initSmallRepo, fileRepo, backupDir, restoreTo, SMALL } from '../../helpers/repo.ts';
import { postgresFile, rootEntries, withChangedPages } from './page-file-fixture.ts';

const who = { host: 'test-host', user: 'tester' };
const TARGET_PASSPHRASE = 'the off-site copy has its own passphrase';

function copyOptions(extra: Partial<CopyOptions> = {}): CopyOptions {
  return { snapshots: [], hosts: [], tags: [], who, concurrency: 2, progress: silentProgress, ...extra };
}

async function allKeys(storage: Storage): Promise<string[]> {
  const out: string[] = [];
  for await (const object of storage.list('')) out.push(`${object.key}:${object.size}`);
  return out.sort();
}

/** Copies of page files: extents re-keyed, page hashes left out, and no copy into a format-1 repository. */
describe('page files: copy', () => {
  let work: Awaited<ReturnType<typeof tempDir>>;
  let source: Repository;
  let src: string;
  const files: Record<string, Buffer> = {};
  const snapshots: Snapshot[] = [];

  before(async () => {
    work = await tempDir('page-file-copy');
    source = await initSmallRepo(fileRepo(join(work.path, 'source')));
    src = join(work.path, 'src');
    await mkdir(src);
    const first = postgresFile(144);
    await writeFile(join(src, 'rel.db'), first);
    await writeFile(join(src, 'readme.txt'), 'not a database\n');
    snapshots.push(await backupDir(source, src));
    files[snapshots[0]!.id] = first;
    const second = withChangedPages(first, [0, 1, 50, 143]);
    await writeFile(join(src, 'rel.db'), second);
    snapshots.push(await backupDir(source, src));
    files[snapshots[1]!.id] = second;
    for (const s of snapshots) assert.ok((await rootEntries(source, s)).find((e) => e.name === 'rel.db')?.extentLists);
  });
  after(async () => {
    await work.remove();
  });

  it('into a format-2 repository: extents re-keyed, page hashes left out; restores are exact and the next backup there works', async () => {
    const target = await Repository.init(fileRepo(join(work.path, 'target-2')), TARGET_PASSPHRASE, who, SMALL);
    assert.equal(target.pageFiles, true);
    const report = await copy(source, target, copyOptions());
    assert.deepEqual([...report.copied].sort(), snapshots.map((s) => s.id).sort());

    for (const s of snapshots) {
      const copied = await target.readSnapshot(s.id);
      const entry = (await rootEntries(target, copied)).find((e) => e.name === 'rel.db');
      assert.ok(entry?.extentLists, 'still a page file');
      assert.equal(entry.pageSize, 8192);
      assert.equal(entry.pageHashes, undefined, "the source's keyed page hashes are not carried over");
      const out = join(work.path, `restore-${s.id.slice(0, 8)}`);
      await restoreTo(target, s.id, out);
      assert.ok((await readFile(join(out, 'rel.db'))).equals(files[s.id] as Buffer), 'byte for byte');
      assert.equal(await readFile(join(out, 'readme.txt'), 'utf8'), 'not a database\n');
    }
    const verified = await verify(target, { readData: 1, concurrency: 2, progress: silentProgress, who });
    assert.deepEqual([verified.problems, verified.affected], [[], []]);

    // The copies are parents of a backup straight into the target: the file is stored whole once, then by pages.
    const changed = withChangedPages(files[snapshots[1]!.id] as Buffer, [9]);
    await writeFile(join(src, 'rel.db'), changed);
    const own = await backupDir(target, src);
    const entry = (await rootEntries(target, own)).find((e) => e.name === 'rel.db');
    assert.ok(entry?.extentLists && entry.pageHashes, 'a backup in the target writes its own page hashes');
    const out = join(work.path, 'restore-own');
    await restoreTo(target, own.id, out);
    assert.ok((await readFile(join(out, 'rel.db'))).equals(changed));
  });

  it('into a format-1 repository: refused before anything is written, naming the problem and the fix', async () => {
    const storage = fileRepo(join(work.path, 'target-1'));
    const target = await Repository.init(storage, TARGET_PASSPHRASE, who, { ...SMALL, formatVersion: 1 });
    assert.equal(target.pageFiles, false);
    const before = await allKeys(storage);
    await assert.rejects(copy(source, target, copyOptions()), (error) => {
      assert.ok(error instanceof CairnError);
      assert.equal(error.code, 'Cairn.Usage');
      assert.match(error.message, /holds page files \("rel\.db"/);
      assert.match(error.message, /format 1/);
      assert.match(error.hint ?? '', /format-2 repository/);
      return true;
    });
    assert.deepEqual(await allKeys(storage), before, 'no pack, index, manifest, lock or history object');
    assert.deepEqual(await target.listSnapshotIds(), []);
  });
});
