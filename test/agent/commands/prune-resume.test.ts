import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdir, writeFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { DEFAULT_LEASE_MS, Lease } from '../../../agent/core/locks.ts';
import { Repository } from '../../../agent/core/repository.ts';
import { forget } from '../../../agent/commands/forget.ts';
import { prune } from '../../../agent/commands/prune.ts';
import { verify } from '../../../agent/commands/verify.ts';
import { silentProgress } from '../../../agent/progress/progress.ts';
import { FaultyStorage } from '../../helpers/faulty-storage.ts';
import { tempDir, initSmallRepo, fileRepo, backupDir, restoreTo, PASSPHRASE, ageLockRecords, graceWaiter } from '../../helpers/repo.ts';
import { describeTree } from '../../helpers/tree.ts';

const who = { host: 'test-host', user: 'tester' };

describe('prune', () => {
  let work: Awaited<ReturnType<typeof tempDir>>;
  before(async () => {
    work = await tempDir('prune');
  });
  after(async () => {
    await work.remove();
  });

  for (const [label, failAfter] of [
    ['while deleting old index files', { delete: 1 }],
    ['while deleting packs', { delete: 4 }],
    ['while writing repacked data', { put: 2 }],
  ] as const) {
    it(`killed ${label}, loses nothing, and a rerun finishes the job`, async () => {
      const path = join(work.path, `repo-${failAfter.delete ?? 'p'}-${failAfter.put ?? 'd'}`);
      const storage = fileRepo(path);
      const repo = await initSmallRepo(storage);
      const src = join(work.path, `src-${label.length}`);
      await mkdir(src, { recursive: true });
      const kept: string[] = [];
      for (let i = 0; i < 4; i++) {
        await writeFile(join(src, `shared.bin`), randomBytes(200_000)); // changes each round: partly dead packs
        await writeFile(join(src, `keep-${i}.bin`), randomBytes(300_000));
        await backupDir(repo, src);
        await rm(join(src, `keep-${i}.bin`));
      }
      await writeFile(join(src, 'final.bin'), randomBytes(50_000));
      const last = await backupDir(repo, src);
      kept.push(last.id);
      const expected = await describeTree(src);
      await forget(repo, storage, { policy: { keepLast: 1 }, groupBy: ['host', 'paths'], dryRun: false, who, progress: silentProgress });

      const faulty = new FaultyStorage(storage);
      faulty.failAfter = failAfter;
      const crashing = await Repository.open(faulty, PASSPHRASE);
      await assert.rejects(
        prune(crashing, faulty, { who, progress: silentProgress, concurrency: 2, dryRun: false, maxUnused: 0.05, wait: graceWaiter(path) }),
        /injected failure/,
      );

      // The crashed run may have left its lock (its release failed too): once the storage's clock says
      // that lease (the default length) is over, the next operation closes it as a dead holder's; the
      // kept snapshot's data is intact meanwhile.
      await ageLockRecords(path, DEFAULT_LEASE_MS + 60_000);
      const next = await Lease.acquire(repo, { operation: 'test', exclusive: true, who });
      await next.release();
      const report = await verify(repo, { readData: 1, concurrency: 2, progress: silentProgress, who });
      assert.equal(report.ok, true, JSON.stringify(report.problems));
      const second = await prune(repo, storage, {
        who,
        progress: silentProgress,
        concurrency: 2,
        dryRun: false,
        maxUnused: 0.05,
        wait: graceWaiter(path),
      });
      assert.ok(second.bytesAfter < 900_000, `after the rerun the repository holds about the kept data (${second.bytesAfter} bytes)`);
      const target = join(work.path, `restore-${label.length}`);
      await restoreTo(repo, kept[0]!, target);
      assert.deepEqual(await describeTree(target), expected);
      assert.equal((await verify(repo, { readData: 1, concurrency: 2, progress: silentProgress, who })).ok, true);
    });
  }
});
