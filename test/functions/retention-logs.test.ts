import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { planPointInTime } from '../../agent/core/pitr-planning.ts';
import { readHistory } from '../../agent/core/history.ts';
import { fileObjectKey } from '../../agent/core/log-archive.ts';
import { walName } from '../../agent/core/log-chain.ts';
import { Repository } from '../../agent/core/repository.ts';
import { openStorage } from '../../agent/storage/open.ts';
import { applyRetention } from '../../functions/apply-retention.ts';
import { startControlPlane, type ControlPlane } from './control-plane.ts';
import { STREAM, at, seedPostgresArchive } from '../helpers/pitr-fixture.ts';

const PASSPHRASE = 'retention of logs test passphrase';

/**
 * apply-retention (the control plane may delete, hosts may not) removes the
 * archived log files the forgotten snapshots alone needed, and never one a
 * kept snapshot's window needs.
 */
describe('apply-retention and the log archive', () => {
  let cp: ControlPlane;
  before(async () => {
    cp = await startControlPlane('ret');
  });
  after(() => cp.stop());

  it("deletes the WAL only the forgotten base needed, keeps the kept base's window whole, and records it", async () => {
    const plan = cp.addPlan({ id: 'pg-main', engine: 'postgres', retention: { keepLast: 1 }, pitr: { enabled: true } });
    cp.ssm.parameters.set('/cairn/ret/pg-main/passphrase', PASSPHRASE);
    const storage = await openStorage(plan.repository.url);
    const repo = await Repository.init(storage, PASSPHRASE, { host: 'test', user: 'test' });
    const fixture = await seedPostgresArchive(repo, {
      planId: 'pg-main',
      segments: [3, 4, 5, 6, 7, 8],
      bases: [
        { segment: 3, minute: 3.2 },
        { segment: 6, minute: 6.2 },
      ],
    });

    const outcome = await applyRetention({ planId: 'pg-main' });
    assert.deepEqual(
      outcome.forgotten.map((f) => f.id),
      [fixture.bases[0]?.id],
    );
    assert.deepEqual(outcome.logs, [{ stream: STREAM, filesRemoved: 3, bytesRemoved: 3 * 4096 }]);
    for (const n of [3, 4, 5]) assert.equal(await storage.stat(fileObjectKey(STREAM, walName(1, n))), undefined, `segment ${n} deleted`);
    for (const n of [6, 7, 8]) assert.ok(await storage.stat(fileObjectKey(STREAM, walName(1, n))), `segment ${n} kept`);

    const reopened = await Repository.open(storage, PASSPHRASE);
    const { plan: replay } = await planPointInTime(reopened, { target: { time: at(8.5) } });
    assert.equal(replay.window.snapshot.id, fixture.bases[1]?.id, 'the kept base still replays to the end of its window');
    await assert.rejects(planPointInTime(reopened, { target: { time: at(4.5) } }), /cannot recover/);
    const events = (await readHistory(reopened)).map((e) => e.event);
    assert.ok(events.includes('logs.collected'), events.join(', '));

    const again = await applyRetention({ planId: 'pg-main' });
    assert.deepEqual(again.logs, [{ stream: STREAM, filesRemoved: 0, bytesRemoved: 0 }], 'a rerun finds nothing more to delete');
  });
});
