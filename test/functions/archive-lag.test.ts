import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { LogArchive, type LogFileRecord } from '../../agent/core/log-archive.ts';
import type { Plan } from '../../agent/core/plan.ts';
import { Repository } from '../../agent/core/repository.ts';
import type { Storage } from '../../agent/core/storage.ts';
import { openStorage } from '../../agent/storage/open.ts';
import { archiveLag, lagOf } from '../../functions/archive-lag.ts';
import { startControlPlane, type ControlPlane } from './control-plane.ts';
import { captureMetrics } from '../helpers/emf.ts';

/**
 * functions/archive-lag against s3rver (a real S3 API) with the SSM stand-in
 * for Parameter Store: the lag comes from the meta objects' names alone.
 */
const PASSPHRASE = 'archive lag test passphrase';
const NOW = new Date('2026-11-23T12:00:00.000Z');
const minutesAgo = (m: number): string => new Date(NOW.getTime() - m * 60_000).toISOString();

function record(name: string, lastEventTime: string | null, archivedAt: string): LogFileRecord {
  return {
    name,
    key: name,
    kind: 'wal',
    size: 1,
    hash: '0'.repeat(64),
    archivedAt,
    host: 'db1',
    firstEventTime: lastEventTime,
    lastEventTime,
    wal: { timeline: 1, segment: 1 },
  };
}

/** Records every call the function makes on the storage: it may list, and nothing else. */
function recording(storage: Storage): { storage: Storage; calls: string[] } {
  const calls: string[] = [];
  const wrapped = new Proxy(storage, {
    get(target, prop, receiver) {
      const value: unknown = Reflect.get(target, prop, receiver);
      if (typeof value !== 'function') return value;
      return (...args: unknown[]) => {
        calls.push(`${String(prop)} ${String(args[0])}`);
        return (value as (...a: unknown[]) => unknown).apply(target, args);
      };
    },
  });
  return { storage: wrapped, calls };
}

describe('archive-lag function', () => {
  let cp: ControlPlane;
  const plans: Record<string, Plan> = {};

  before(async () => {
    cp = await startControlPlane('lag');
    plans.pg = cp.addPlan({ id: 'pg-main', engine: 'postgres', pitr: { enabled: true } });
    plans.named = cp.addPlan({ id: 'pg-named', engine: 'postgres', pitr: { enabled: true, archiveStream: 'pg-2' } });
    plans.quiet = cp.addPlan({ id: 'maria-quiet', engine: 'mariadb', pitr: { enabled: true } });
    plans.off = cp.addPlan({ id: 'dump-only', engine: 'pgdump' });

    // pg-main: two PostgreSQL streams (the older server's is stale) and a MariaDB stream, which is not this engine's.
    const pgRepo = await Repository.init(await openStorage(plans.pg.repository.url), PASSPHRASE, { host: 'test', user: 'test' });
    await new LogArchive(pgRepo, 'pg-1').writeRecords([record('a', minutesAgo(600), minutesAgo(599))]);
    await new LogArchive(pgRepo, 'pg-2').writeRecords([record('b', minutesAgo(30), minutesAgo(29))]);
    // A file without events counts by its archive time; the batch is named by its newest.
    await new LogArchive(pgRepo, 'pg-2').writeRecords([record('c', minutesAgo(7), minutesAgo(6)), record('d', null, minutesAgo(40))]);
    await new LogArchive(pgRepo, 'mariadb-default').writeRecords([record('e', minutesAgo(1), minutesAgo(1))]);
    // pg-named: its named stream is older than another one in the same repository.
    const namedRepo = await Repository.init(await openStorage(plans.named.repository.url), PASSPHRASE, { host: 'test', user: 'test' });
    await new LogArchive(namedRepo, 'pg-2').writeRecords([record('f', minutesAgo(45), minutesAgo(44))]);
    await new LogArchive(namedRepo, 'pg-3').writeRecords([record('g', minutesAgo(2), minutesAgo(2))]);
    // maria-quiet: nothing archived yet.
    await Repository.init(await openStorage(plans.quiet.repository.url), PASSPHRASE, { host: 'test', user: 'test' });
  });
  after(() => cp.stop());

  it("takes the newest event of the plan's engine's newest stream, listing logs/ and reading nothing", async () => {
    const { storage, calls } = recording(await openStorage(plans.pg!.repository.url));
    const lag = await lagOf(plans.pg!, storage, () => NOW);
    assert.deepEqual(lag, { planId: 'pg-main', stream: 'pg-2', newestEvent: minutesAgo(7).replace('.000Z', 'Z'), lagSeconds: 420 });
    assert.deepEqual(calls, ['list logs/'], 'one listing of the archive; no get, no stat: no key needed');
  });

  it("with pitr.archiveStream it lists that stream's meta objects only, and measures that stream", async () => {
    const { storage, calls } = recording(await openStorage(plans.named!.repository.url));
    const lag = await lagOf(plans.named!, storage, () => NOW);
    assert.equal(lag.stream, 'pg-2');
    assert.equal(lag.lagSeconds, 45 * 60);
    assert.deepEqual(calls, ['list logs/pg-2/meta/']);
  });

  it('publishes ArchiveLagSeconds per plan with the PlanId dimension alone, and nothing for a plan with no archive or no pitr', async () => {
    const {
      value,
      error,
      metrics: emf,
    } = await captureMetrics(() => archiveLag({ planIds: ['pg-main', 'pg-named', 'maria-quiet', 'dump-only', 'no-such-plan'] }, () => NOW));
    assert.equal(error, undefined);
    const results = value ?? [];
    assert.deepEqual(
      results.map((r) => [r.planId, r.lagSeconds]),
      [
        ['pg-main', 420],
        ['pg-named', 2700],
        ['maria-quiet', undefined],
        ['dump-only', undefined],
        ['no-such-plan', undefined],
      ],
    );
    assert.match(results[2]?.problem ?? '', /nothing is archived .* for mariadb yet/);
    assert.match(results[3]?.problem ?? '', /does not have pitr\.enabled/);
    assert.match(results[4]?.problem ?? '', /no plan "no-such-plan"/);
    assert.deepEqual(
      emf.map((e) => [e.PlanId, e.ArchiveLagSeconds]),
      [
        ['pg-main', 420],
        ['pg-named', 2700],
      ],
    );
    for (const e of emf) {
      assert.deepEqual(e._aws.CloudWatchMetrics[0]?.Dimensions, [['PlanId']], 'the alarms watch {PlanId}: no other dimension may be added');
      assert.equal(e._aws.CloudWatchMetrics[0]?.Namespace, 'Cairn');
      assert.deepEqual(e._aws.CloudWatchMetrics[0]?.Metrics, [{ Name: 'ArchiveLagSeconds', Unit: 'Seconds' }]);
    }
  });

  it('refuses an event without plan ids', async () => {
    await assert.rejects(archiveLag({}), /planIds: a list of plan ids is required/);
  });
});
