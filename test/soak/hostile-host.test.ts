import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { tempDir } from '../helpers/repo.ts';
import { runHostileHostCampaign } from './hostile-host-campaign.ts';

// The hostile-host soak's small pass (the soak itself: npm run soak:hostile-host): a host with the key
// and create-only rights forges index files, manifests, a key file, a lock and junk; the operator's
// forget and prune never delete what a listed snapshot uses, and the repository opens with the true key.
describe('hostile-host soak, small pass', () => {
  it('forged objects and junk lose nothing and wedge nothing', { timeout: 600_000 }, async () => {
    const work = await tempDir('soak-hostile-small');
    try {
      const seed = Number(process.env.CAIRN_SOAK_SEED ?? 4);
      const report = await runHostileHostCampaign({ seed, work: work.path, rounds: 2, log: () => undefined });
      assert.deepEqual(report.failures, [], `seed ${seed}`);
      assert.ok(report.restoresCompared >= 2, `${report.restoresCompared} restores compared`);
      assert.ok(Object.values(report.forged).reduce((a, b) => a + b, 0) > 10, 'the host forged objects');
    } finally {
      await work.remove();
    }
  });
});
