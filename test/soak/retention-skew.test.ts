import assert from 'node:assert/strict';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { Repository } from '../../agent/core/repository.ts';
import { FileStorage } from '../../agent/storage/file.ts';
import { tempDir } from '../helpers/repo.ts';
import { faketimeWorks, runSkewedCli } from './skewed-cli.ts';

/**
 * Reproduction of the clock-skew soak's open finding (docs/reliability.md, "Clock skew"):
 * retention orders snapshots by their manifests' times, which are the backing-up host's
 * clock. Three backups by a host 10 minutes fast, then one by a host on time: by storage
 * time the on-time backup is the newest, yet `forget --keep-last 3` keeps the three fast
 * ones and removes it. Marked todo until retention orders by the storage's clock (the
 * manifests' modification times); it then passes and the mark goes.
 */
describe('retention under clock skew', () => {
  it('forget --keep-last 3 keeps the snapshot stored last even when other hosts’ clocks are fast', { timeout: 300_000 }, async (t) => {
    if (!(await faketimeWorks())) {
      t.skip('needs libfaketime (apt-get install faketime)');
      return;
    }
    const work = await tempDir('retention-skew');
    try {
      const repoPath = join(work.path, 'repo');
      await Repository.init(new FileStorage(repoPath), 'skew', { host: 'test', user: 'test' });
      const env = { CAIRN_REPOSITORY: repoPath, CAIRN_PASSWORD: 'skew' };
      const src = join(work.path, 'src');
      await mkdir(src);
      const backup = async (skew: string, n: number): Promise<string> => {
        await writeFile(join(src, 'file'), `backup ${n}`);
        const result = await runSkewedCli(skew, ['backup', '--host', 'db', src], env);
        assert.equal(result.code, 0, result.stderr);
        return result.lines.find((l) => l.type === 'summary')?.snapshotId as string;
      };
      for (let n = 1; n <= 3; n++) await backup('+10m', n);
      const newest = await backup('', 4);
      const forget = await runSkewedCli('', ['forget', '--keep-last', '3', '--group-by', 'host'], env);
      assert.equal(forget.code, 0, forget.stderr);
      const listing = await runSkewedCli('', ['snapshots'], env);
      const ids = (listing.lines.find((l) => l.type === 'snapshots') as { snapshots: Array<{ id: string }> }).snapshots.map((s) => s.id);
      assert.ok(ids.includes(newest), `the snapshot stored last (${newest.slice(0, 8)}) was forgotten; kept ${ids.join(', ')}`);
    } finally {
      await work.remove();
    }
  });
});
