import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { tempDir } from '../helpers/repo.ts';
import { PHASES } from './kill-switch.ts';
import { runSigkillCampaign } from './sigkill-campaign.ts';

// The SIGKILL soak's small pass (the soak itself: npm run soak:sigkill): real cairn processes
// killed in every phase, then nothing committed missing, nothing uncommitted listed, every kept
// snapshot restoring exactly and verify --read-data passing.
describe('SIGKILL soak, small pass', () => {
  it('kills in every phase lose nothing committed and list nothing uncommitted', { timeout: 900_000 }, async () => {
    const work = await tempDir('soak-sigkill-small');
    try {
      const seed = Number(process.env.CAIRN_SOAK_SEED ?? 20261204);
      const report = await runSigkillCampaign({
        seed,
        work: work.path,
        kills: 4,
        perPhase: 1,
        maxOps: 40,
        operations: ['backup', 'copy', 'forget', 'prune'],
        fullCheckEvery: 1000,
        log: () => undefined,
      });
      assert.deepEqual(report.failures, [], `seed ${seed}`);
      for (const phase of PHASES)
        assert.ok((report.byPhase[phase] ?? 0) >= 1, `no kill landed in ${phase} (seed ${seed}): ${JSON.stringify(report.byPhase)}`);
      assert.ok(report.committed >= 3, `${report.committed} snapshots committed`);
      assert.ok(report.verifyRuns >= 2);
    } finally {
      await work.remove();
    }
  });
});
