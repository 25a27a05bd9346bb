import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { backup } from '../../agent/commands/backup.ts';
import { Repository, type Who } from '../../agent/core/repository.ts';
import { openStorage } from '../../agent/storage/open.ts';
import { silentProgress } from '../../agent/progress/progress.ts';
import { Lease } from '../../agent/core/locks.ts';
import { applyRetention, handler } from '../../functions/apply-retention.ts';
import { captureMetrics } from '../helpers/emf.ts';
import { SMALL, tempDir } from '../helpers/repo.ts';
import { startControlPlane, type ControlPlane } from './control-plane.ts';

/**
 * The control plane's retention counts only good snapshots (issue 16), as `cairn forget` does:
 * a snapshot tagged damaged (or named by a damage marker, the same candidate path) or partial is
 * kept but never fills a keep slot, so the good one before it survives keepLast 1.
 */
const PASSPHRASE = 'retention damage test passphrase';
const host: Who = { host: 'i-0fedcba9876543210', user: 'root' };

describe('control-plane retention and damaged snapshots (issue 16)', () => {
  let cp: ControlPlane;
  let work: Awaited<ReturnType<typeof tempDir>>;
  before(async () => {
    cp = await startControlPlane('rdtest');
    work = await tempDir('cp-retention-damage');
    process.env.GC_GRACE_SECONDS = '1';
  });
  after(async () => {
    delete process.env.GC_GRACE_SECONDS;
    await cp.stop();
    await work.remove();
  });

  it('keepLast 1 with a damaged newest keeps the older good snapshot and forgets neither', async () => {
    const plan = cp.addPlan({ id: 'rd', engine: 'files', engineOptions: { paths: ['/data'] }, retention: { keepLast: 1 } });
    cp.ssm.parameters.set('/cairn/rdtest/rd/passphrase', PASSPHRASE);
    const repo = await Repository.init(await openStorage(plan.repository.url), PASSPHRASE, host, SMALL);
    const src = join(work.path, 'src');
    await mkdir(src, { recursive: true });
    const run = async (tags: string[]) => {
      await writeFile(join(src, 'f.txt'), `${tags.join(',')} ${Date.now()}\n`);
      return backup(repo, { paths: [src], excludes: [], tags, who: host, concurrency: 2, progress: silentProgress, plan: 'rd' });
    };
    const older = await run([]);
    const good = await run([]);
    const damaged = await run(['damaged']);
    const outcome = await applyRetention({ planId: 'rd' });
    assert.deepEqual(
      outcome.forgotten.map((f) => f.id),
      [older.id],
      'only the snapshot before the newest good one is forgotten',
    );
    const kept = new Set(outcome.kept.map((k) => k.id));
    assert.ok(kept.has(good.id), 'the newest good snapshot fills keepLast 1');
    assert.ok(kept.has(damaged.id), 'the damaged one is kept (an operator decides), not counted');
  });

  it('a run skipped because the repository is locked emits RetentionSkipped for its plan (the alarm has a datum)', async () => {
    const plan = cp.addPlan({ id: 'rd-busy', engine: 'files', engineOptions: { paths: ['/data'] }, retention: { keepLast: 1 } });
    cp.ssm.parameters.set('/cairn/rdtest/rd-busy/passphrase', PASSPHRASE);
    const repo = await Repository.init(await openStorage(plan.repository.url), PASSPHRASE, host, SMALL);
    const held = await Lease.acquire(repo, { operation: 'prune', exclusive: true, who: host });
    try {
      const { value, error, metrics } = await captureMetrics(() => handler({ planId: 'rd-busy' }));
      assert.equal(error, undefined);
      assert.equal((value as { skipped?: boolean } | undefined)?.skipped, true);
      assert.deepEqual(
        metrics.filter((m) => 'RetentionSkipped' in m).map((m) => [m.PlanId, m.RetentionSkipped]),
        [['rd-busy', 1]],
      );
    } finally {
      await held.release();
    }
  });
});
