import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { tempDir } from '../helpers/repo.ts';
import { runClockSkewCampaign } from './clock-skew-campaign.ts';
import { faketimeWorks } from './skewed-cli.ts';

// The clock-skew soak's small pass (the soak itself: npm run soak:clock-skew): cairn processes
// under libfaketime, 10 minutes slow and fast, backing up, forgetting and pruning together.
describe('clock-skew soak, small pass', () => {
  it(
    'hosts 10 minutes slow and fast lose nothing and a dead skewed holder blocks no longer than one lease',
    { timeout: 900_000 },
    async (t) => {
      if (!(await faketimeWorks())) {
        t.skip('needs libfaketime (apt-get install faketime)');
        return;
      }
      const work = await tempDir('soak-skew-small');
      try {
        const seed = Number(process.env.CAIRN_SOAK_SEED ?? 20261204);
        const report = await runClockSkewCampaign({
          seed,
          work: work.path,
          rounds: 2,
          leaseSeconds: 10,
          deadSkews: ['+1y'],
          log: () => undefined,
        });
        // The open retention finding (a fast host's older backups outrank the one stored last) has its own
        // reproduction, marked todo: test/soak/retention-skew.test.ts. Everything else must pass.
        const failures = report.failures.filter((f) => !f.includes('removed the newest committed snapshot'));
        assert.deepEqual(failures, [], `seed ${seed}`);
        assert.ok(report.committed >= 3, `${report.committed} backups committed`);
        assert.ok(report.restoresCompared >= 3);
        assert.equal(report.takeovers.length, 1);
        assert.equal(report.takeovers[0]?.exit, 0);
      } finally {
        await work.remove();
      }
    },
  );
});
