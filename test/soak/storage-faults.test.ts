import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { tempDir } from '../helpers/repo.ts';
import { runStorageFaultsCampaign } from './storage-faults-campaign.ts';

// The storage-faults soak's small pass (the soak itself: npm run soak:storage-faults): s3rver and
// the GCS test server behind a proxy failing a share of the requests.
describe('storage-faults soak, small pass', () => {
  it('every run ends cleanly, no restore is wrong, nothing committed is lost', { timeout: 600_000 }, async () => {
    const work = await tempDir('soak-faults-small');
    try {
      const seed = Number(process.env.CAIRN_SOAK_SEED ?? 20261204);
      const report = await runStorageFaultsCampaign({
        seed,
        work: work.path,
        steps: 2,
        rate: 0.1,
        backends: ['s3', 'gcs'],
        log: () => undefined,
      });
      assert.deepEqual(report.failures, [], `seed ${seed}`);
      for (const [name, b] of Object.entries(report.backends)) {
        assert.ok(b.faulted > 0, `${name}: no request was faulted`);
        assert.ok(b.restoresCompared >= 2, `${name}: ${b.restoresCompared} restores compared`);
      }
    } finally {
      await work.remove();
    }
  });
});
