import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { openStorage } from '../../agent/storage/open.ts';
import { freshness, NEWEST_GOOD_BACKUP_AGE } from '../../functions/freshness.ts';
import { recordResult } from '../../functions/record-result.ts';
import { planRestoreHandler } from '../../functions/plan-restore.ts';
import { controlSeal } from '../../functions/runtime.ts';
import { attestSnapshot } from '../../functions/snapshot-attestations.ts';
import { CairnError } from '../../agent/core/errors.ts';
import { captureMetrics } from '../helpers/emf.ts';
import { PASSPHRASE, backupDir, initSmallRepo, tempDir } from '../helpers/repo.ts';
import { startControlPlane, type ControlPlane } from './control-plane.ts';

/**
 * The freshness function (what the freshness alarm watches) against s3rver and the SSM stand-in:
 * the newest good snapshot's age per plan, published as NewestGoodBackupAgeSeconds; nothing for a
 * plan it cannot measure, which the alarm counts as breaching. And record-result's DrillFailed for
 * a drill whose run summary says drill.ok false.
 */
describe('freshness', () => {
  let cp: ControlPlane;
  let dir: { path: string; remove: () => Promise<void> };
  before(async () => {
    cp = await startControlPlane('fresh');
    dir = await tempDir('cairn-freshness-');
  });
  after(async () => {
    await cp.stop();
    await dir.remove();
  });

  it("publishes each plan's newest good backup age, and nothing for a plan without one", async () => {
    const plan = cp.addPlan({ id: 'has-backups', engine: 'files', engineOptions: { paths: ['/srv'] } });
    cp.addPlan({ id: 'no-backups', engine: 'files', engineOptions: { paths: ['/srv'] } });
    cp.ssm.parameters.set('/cairn/fresh/has-backups/passphrase', PASSPHRASE);
    cp.ssm.parameters.set('/cairn/fresh/no-backups/passphrase', PASSPHRASE);
    const repo = await initSmallRepo(await openStorage(plan.repository.url, process.env));
    await initSmallRepo(await openStorage(`s3://${cp.s3.bucket}/plans/no-backups/`, process.env));
    const data = join(dir.path, 'data');
    await mkdir(data, { recursive: true });
    await writeFile(join(data, 'a'), 'one');
    await backupDir(repo, data);
    await writeFile(join(data, 'a'), 'two');
    const newest = await backupDir(repo, data);

    const at = new Date(Date.parse(newest.time) + 3_600_000);
    const { value, error, metrics } = await captureMetrics(() =>
      freshness({ planIds: ['has-backups', 'no-backups', 'no-such-plan'] }, () => at),
    );
    assert.equal(error, undefined);
    const [has, none, unknown] = value!;
    assert.equal(has?.newest?.id, newest.id, 'the newest of two snapshots');
    assert.equal(has?.ageSeconds, 3600);
    assert.match(none?.problem ?? '', /no good snapshot yet/);
    assert.match(unknown?.problem ?? '', /no plan "no-such-plan"/);
    const published = metrics.filter((m) => NEWEST_GOOD_BACKUP_AGE in m);
    assert.deepEqual(
      published.map((m) => [m.PlanId, m[NEWEST_GOOD_BACKUP_AGE]]),
      [['has-backups', 3600]],
      'one datum, for the plan it could measure; silence for the others',
    );
  });

  it('records a drill whose summary says drill.ok false as DrillFailed, and a good drill as DrillSucceeded only', async () => {
    const summary = (ok: boolean) => ({
      operation: 'drill',
      planId: 'has-backups',
      host: 'h',
      startedAt: '2026-11-23T02:00:00.000Z',
      finishedAt: '2026-11-23T02:10:00.000Z',
      drill: { ok, thorough: false },
    });
    const bad = await recordResult({ planId: 'has-backups', operation: 'drill', executionId: 'x', summary: summary(false) });
    assert.deepEqual(bad.metrics, ['DrillSucceeded', 'DrillFailed']);
    const good = await recordResult({ planId: 'has-backups', operation: 'drill', executionId: 'y', summary: summary(true) });
    assert.deepEqual(good.metrics, ['DrillSucceeded']);
  });

  it('PlanRestore refuses a files plan restore without targetPath (a dry run too), naming the field, before opening anything', async () => {
    cp.addPlan({ id: 'files-target', engine: 'files', engineOptions: { paths: ['/srv'] } });
    for (const input of [{ planId: 'files-target' }, { planId: 'files-target', dryRun: true }]) {
      await assert.rejects(
        () => planRestoreHandler(input),
        (e: unknown) =>
          e instanceof CairnError &&
          e.code === 'Cairn.InvalidInput' &&
          /^targetPath: required, plan files-target \(files\)/.test(e.message),
      );
    }
  });

  it("an each plan: each host's age with the Host dimension, the plan's is the oldest host's; a host with none good silences the plan", async () => {
    const targets = { tag: { key: 'cairn:fleet', value: 'shards' }, mode: 'each' };
    const plan = cp.addPlan({ id: 'shards', engine: 'files', engineOptions: { paths: ['/srv'] }, targets });
    cp.ssm.parameters.set('/cairn/fresh/shards/passphrase', PASSPHRASE);
    const repo = await initSmallRepo(await openStorage(plan.repository.url, process.env));
    const data = join(dir.path, 'shards');
    await mkdir(data, { recursive: true });
    await writeFile(join(data, 'a'), 'one');
    const who = (host: string) => ({ who: { host, user: 'tester' }, plan: 'shards' });
    const oldA = await backupDir(repo, data, who('shard-a'));
    const b = await backupDir(repo, data, who('shard-b'));
    await writeFile(join(data, 'a'), 'two');
    const newA = await backupDir(repo, data, who('shard-a'));

    const at = new Date(Date.parse(newA.time) + 3_600_000);
    const { value, metrics } = await captureMetrics(() => freshness({ planIds: ['shards'] }, () => at));
    const [result] = value!;
    const ageOf = (time: string): number => (at.getTime() - Date.parse(time)) / 1000;
    assert.deepEqual(
      result?.hosts?.map((h) => [h.host, h.newest?.id]),
      [
        ['shard-a', newA.id],
        ['shard-b', b.id],
      ],
      "each host's own newest, not the plan's",
    );
    assert.notEqual(oldA.id, newA.id);
    assert.equal(result?.newest?.id, b.id, "the plan's age is the oldest host's: shard-b has not backed up since");
    assert.equal(result?.ageSeconds, ageOf(b.time));
    const published = metrics.filter((m) => NEWEST_GOOD_BACKUP_AGE in m);
    assert.deepEqual(
      published.map((m) => [m._aws.CloudWatchMetrics[0]?.Dimensions, m.Host, m[NEWEST_GOOD_BACKUP_AGE]]),
      [
        [[['PlanId', 'Host']], 'shard-a', ageOf(newA.time)],
        [[['PlanId', 'Host']], 'shard-b', ageOf(b.time)],
        [[['PlanId']], undefined, ageOf(b.time)],
      ],
    );

    // shard-c's only snapshot is tagged damaged: no good snapshot, so the plan publishes no age of its own (the alarm fires).
    await backupDir(repo, data, { ...who('shard-c'), tags: ['damaged'] });
    const later = await captureMetrics(() => freshness({ planIds: ['shards'] }, () => at));
    const [again] = later.value!;
    assert.match(again?.problem ?? '', /host shard-c of plan shards has no good snapshot/);
    assert.deepEqual(
      later.metrics.filter((m) => NEWEST_GOOD_BACKUP_AGE in m).map((m) => m.Host),
      ['shard-a', 'shard-b'],
      'the hosts it could measure, and nothing for the plan',
    );
  });

  it('an each plan whose instances share a host name: one age per instance, and the stale one is the plan’s', async () => {
    const targets = { tag: { key: 'cairn:fleet', value: 'twins' }, mode: 'each' };
    const plan = cp.addPlan({ id: 'twins', engine: 'files', engineOptions: { paths: ['/srv'] }, targets });
    cp.ssm.parameters.set('/cairn/fresh/twins/passphrase', PASSPHRASE);
    const repo = await initSmallRepo(await openStorage(plan.repository.url, process.env));
    const data = join(dir.path, 'twins');
    await mkdir(data, { recursive: true });
    await writeFile(join(data, 'a'), 'one');
    const as = (instance: string) => ({ who: { host: 'ip-10-0-1-17', user: 'tester' }, plan: 'twins', tags: [`instance:${instance}`] });
    const stale = await backupDir(repo, data, as('i-0aaaaaaaaaaaaaaaa'));
    await writeFile(join(data, 'a'), 'two');
    const fresh = await backupDir(repo, data, as('i-0bbbbbbbbbbbbbbbb'));
    // finalize-backup's records that each instance's run made its snapshot.
    await attestSnapshot(repo.storage, await controlSeal(), 'i-0aaaaaaaaaaaaaaaa', stale.id);
    await attestSnapshot(repo.storage, await controlSeal(), 'i-0bbbbbbbbbbbbbbbb', fresh.id);
    // Another host, with the key, claims to be the stale one and backs up "for" it: no sign of its freshness.
    await writeFile(join(data, 'a'), 'three');
    await backupDir(repo, data, as('i-0aaaaaaaaaaaaaaaa'));
    const at = new Date(Date.parse(fresh.time) + 3_600_000);
    const { value, metrics } = await captureMetrics(() => freshness({ planIds: ['twins'] }, () => at));
    const [result] = value!;
    assert.deepEqual(
      result?.hosts?.map((h) => [h.host, h.instanceId, h.newest?.id]),
      [
        ['ip-10-0-1-17', 'i-0aaaaaaaaaaaaaaaa', stale.id],
        ['ip-10-0-1-17', 'i-0bbbbbbbbbbbbbbbb', fresh.id],
      ],
      'one group per instance, not one per name (where the fresh twin hid the stale one)',
    );
    assert.equal(result?.newest?.id, stale.id, 'the plan’s age is the stale instance’s');
    assert.deepEqual(
      metrics.filter((m) => NEWEST_GOOD_BACKUP_AGE in m).map((m) => m.Host),
      ['i-0aaaaaaaaaaaaaaaa', 'i-0bbbbbbbbbbbbbbbb', undefined],
    );
    // An instance whose only snapshot is unconfirmed (tagged before the records existed) is still watched: it has none good.
    await backupDir(repo, data, as('i-0cccccccccccccccc'));
    const watched = await freshness({ planIds: ['twins'] }, () => at);
    assert.match(watched[0]?.problem ?? '', /\(i-0cccccccccccccccc\) of plan twins has no good snapshot/);
  });
});
