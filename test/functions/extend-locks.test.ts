import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { PutObjectRetentionCommand, S3Client } from '@aws-sdk/client-s3';
import { backup } from '../../agent/commands/backup.ts';
import { CONFIG_KEY, PACKS_PREFIX, SNAPSHOTS_PREFIX } from '../../agent/core/layout.ts';
import { Repository, type Who } from '../../agent/core/repository.ts';
import type { Snapshot } from '../../agent/core/snapshot.ts';
import type { DeletableStorage } from '../../agent/core/storage.ts';
import { silentProgress } from '../../agent/progress/progress.ts';
import { openStorage } from '../../agent/storage/open.ts';
import { handler, type LocksExtended } from '../../functions/extend-locks.ts';
import { ObjectRetention } from '../../functions/object-retention.ts';
import { parsePlan } from '../../agent/core/plan.ts';
import { SMALL, restoreTo, tempDir } from '../helpers/repo.ts';
import { s3rverEnv } from '../helpers/s3rver.ts';
import { describeTree } from '../helpers/tree.ts';
import { startControlPlane, type ControlPlane } from './control-plane.ts';
import { startObjectLockStandIn, type ObjectLockStandIn } from './object-lock-standin.ts';

/**
 * Object Lock kept on what recent snapshots use (issue 17, point 7): the real extend-locks
 * handler (the Backup machine's ExtendLocks state) against s3rver behind the Object Lock STAND-IN
 * (./object-lock-standin.ts; s3rver has no Object Lock, and the stand-in does not model
 * versioning, delete markers or the refusal to delete a locked version: see its comment). The
 * repository is aged by setting every lock to end in two days, as if its objects were uploaded
 * 33 days ago under a 35-day default; then a new snapshot reuses old packs.
 */
const PASSPHRASE = 'object lock test passphrase, long enough';
const DAY_MS = 86_400_000;
const host: Who = { host: 'i-0123456789abcdef0', user: 'root' };

describe('extend-locks (Object Lock on reused packs)', () => {
  let cp: ControlPlane;
  let lock: ObjectLockStandIn;
  let work: Awaited<ReturnType<typeof tempDir>>;
  before(async () => {
    cp = await startControlPlane('olk');
    lock = await startObjectLockStandIn(cp.s3.endpoint, { mode: 'COMPLIANCE', days: 35 });
    // Every S3 client of the functions and of this test goes through the stand-in.
    Object.assign(process.env, {
      CAIRN_S3_ENDPOINT: lock.endpoint,
      BUCKET_NAME: cp.s3.bucket,
      OBJECT_LOCK_DAYS: '35',
      OBJECT_LOCK_MODE: 'COMPLIANCE',
    });
    work = await tempDir('extend-locks');
  });
  after(async () => {
    delete process.env.OBJECT_LOCK_DAYS;
    delete process.env.OBJECT_LOCK_MODE;
    delete process.env.OBJECT_LOCK_BATCH_OBJECTS;
    delete process.env.BUCKET_NAME;
    await lock.stop();
    await cp.stop();
    await work.remove();
  });

  async function writeFiles(dir: string, files: Record<string, Buffer>): Promise<string> {
    const path = join(work.path, dir);
    await mkdir(path, { recursive: true });
    for (const [name, data] of Object.entries(files)) await writeFile(join(path, name), data);
    return path;
  }

  async function planRepo(id: string): Promise<{ storage: DeletableStorage; repo: Repository; name: (key: string) => string }> {
    const plan = cp.addPlan({ id, engine: 'files', engineOptions: { paths: ['/data'] } });
    cp.ssm.parameters.set(`/cairn/olk/${id}/passphrase`, PASSPHRASE);
    const storage = await openStorage(plan.repository.url);
    const repo = await Repository.init(storage, PASSPHRASE, host, SMALL);
    return { storage, repo, name: (key) => `${cp.s3.bucket}/plans/${id}/${key}` };
  }

  const backupOf = (repo: Repository, path: string, planId: string): Promise<Snapshot> =>
    backup(repo, { paths: [path], excludes: [], tags: [], who: host, concurrency: 2, progress: silentProgress, plan: planId });

  /** Every lock of the plan's objects ends in two days: the repository was written 33 days ago. */
  function age(prefix: string): Date {
    const soon = new Date(Date.now() + 2 * DAY_MS);
    for (const n of lock.names()) if (n.startsWith(prefix)) lock.setRetention(n, 'COMPLIANCE', soon);
    return soon;
  }

  /** Runs ExtendLocks as the Backup machine does: again with its own result until done. */
  async function extendAll(planId: string, snapshotId: string): Promise<{ result: LocksExtended; invocations: number }> {
    let locks: unknown = {};
    for (let invocations = 1; ; invocations++) {
      const result: LocksExtended = await handler({ planId, snapshotId, locks });
      if (result.done) return { result, invocations };
      assert.ok(invocations < 100, 'the loop ends');
      locks = result;
    }
  }

  /**
   * What a delete of every object whose lock has ended by `when` leaves (what an operator with
   * version-delete rights, or the lifecycle, could remove then): deleted here through s3rver.
   */
  async function purgeUnlockedBy(storage: DeletableStorage, prefix: string, when: Date): Promise<string[]> {
    const purged: string[] = [];
    for (const area of [CONFIG_KEY, 'keys/', PACKS_PREFIX]) {
      for await (const o of storage.list(area === CONFIG_KEY ? '' : area)) {
        if (area === CONFIG_KEY && o.key !== CONFIG_KEY) continue;
        const held = lock.retention(`${prefix}${o.key}`);
        if (held === undefined || held.retainUntil.getTime() < when.getTime()) {
          await storage.delete(o.key);
          purged.push(o.key);
        }
      }
    }
    return purged;
  }

  it('keeps every object a new snapshot reuses locked for the lock period, and only those', async () => {
    const { storage, repo, name } = await planRepo('reuse');
    const a = randomBytes(600_000);
    const onlyOld = await backupOf(repo, await writeFiles('old', { 'c.bin': randomBytes(600_000) }), 'reuse');
    await backupOf(repo, await writeFiles('first', { 'a.bin': a }), 'reuse');
    const soon = age(name(''));
    const packsBefore = new Set<string>();
    for await (const o of storage.list(PACKS_PREFIX)) packsBefore.add(o.key);

    const latest = await backupOf(repo, await writeFiles('second', { 'a.bin': a, 'b.bin': randomBytes(300_000) }), 'reuse');
    const { result } = await extendAll('reuse', latest.id);
    const target = Date.parse(result.requiredUntil);
    assert.ok(target >= Date.now() + 35 * DAY_MS - 60_000, `locked for 35 days from now: ${result.requiredUntil}`);
    assert.equal(Date.parse(result.retainUntil) - target, 7 * DAY_MS, 'renewed with a slack of a fifth of the period');
    assert.equal(result.mode, 'COMPLIANCE');
    assert.ok(result.extended >= 3, `config, key file and at least one reused pack extended: ${result.extended}`);

    // The config and key files, and the old packs the new snapshot reads, are locked to the target.
    assert.ok(lock.retention(name(CONFIG_KEY))!.retainUntil.getTime() >= target);
    const extendedPacks = [...packsBefore].filter((k) => lock.retention(name(k))!.retainUntil.getTime() >= target);
    assert.ok(extendedPacks.length >= 1, 'an old pack the new snapshot reuses is extended');
    assert.ok(extendedPacks.length < packsBefore.size, 'the pack only the oldest snapshot uses keeps its old lock');
    assert.equal(lock.refused, 0, 'no lock was ever shortened');

    // Three days on, everything whose lock has ended is gone: the new snapshot still restores whole.
    const purged = await purgeUnlockedBy(storage, name(''), new Date(soon.getTime() + DAY_MS));
    assert.ok(purged.length >= 1, 'the old snapshot lost a pack (its lock was not extended)');
    assert.ok(
      purged.every((k) => k.startsWith(PACKS_PREFIX)),
      `only packs no recent snapshot uses: ${purged.join(', ')}`,
    );
    const reopened = await Repository.open(storage, PASSPHRASE);
    const restored = join(work.path, 'restored');
    await restoreTo(reopened, latest.id, restored);
    assert.deepEqual(await describeTree(restored), await describeTree(join(work.path, 'second')));
    await assert.rejects(() => restoreTo(reopened, onlyOld.id, join(work.path, 'restored-old')), 'the unlocked old snapshot did lose data');
  });

  it('works in bounded batches, never shortens a longer lock, and a second run extends nothing', async () => {
    const { storage, repo, name } = await planRepo('batches');
    const a = randomBytes(2_500_000);
    await backupOf(repo, await writeFiles('b1', { 'a.bin': a }), 'batches');
    age(name(''));
    const far = new Date(Date.now() + 400 * DAY_MS);
    lock.setRetention(name(CONFIG_KEY), 'COMPLIANCE', far);
    const latest = await backupOf(repo, await writeFiles('b2', { 'a.bin': a, 'n.bin': randomBytes(100_000) }), 'batches');

    process.env.OBJECT_LOCK_BATCH_OBJECTS = '2';
    try {
      const putsBefore = new Map(lock.puts);
      const first = await extendAll('batches', latest.id);
      assert.ok(first.invocations >= 3, `more objects than one batch of 2: ${first.invocations} invocations`);
      assert.ok(first.result.checked >= 5, `checked ${first.result.checked}`);
      assert.equal(lock.retention(name(CONFIG_KEY))!.retainUntil.getTime(), far.getTime(), 'a longer lock is left as it is');
      assert.equal(lock.puts.get(name(CONFIG_KEY)) ?? 0, putsBefore.get(name(CONFIG_KEY)) ?? 0, 'no request for it');
      // This snapshot's own new objects got the bucket's default at upload: nothing to extend there.
      for await (const o of storage.list(SNAPSHOTS_PREFIX)) assert.equal(lock.puts.get(name(o.key)) ?? 0, 0, `manifest ${o.key} untouched`);

      const second = await extendAll('batches', latest.id);
      assert.equal(second.result.extended, 0, 'a second run finds every lock long enough');
      assert.equal(second.result.checked, first.result.checked);
    } finally {
      delete process.env.OBJECT_LOCK_BATCH_OBJECTS;
    }
  });

  it('names a pack the snapshot uses that is gone (Cairn.Damaged) and refuses to run without the lock settings', async () => {
    const { storage, repo } = await planRepo('gone');
    const latest = await backupOf(repo, await writeFiles('g', { 'x.bin': randomBytes(200_000) }), 'gone');
    const packs: string[] = [];
    for await (const o of storage.list(PACKS_PREFIX)) packs.push(o.key);
    assert.ok(packs.length >= 1);
    await storage.delete(packs[0]!);
    await assert.rejects(
      () => handler({ planId: 'gone', snapshotId: latest.id, locks: {} }),
      // Named by the tree walk when the pack held a tree, else by the retention check.
      (e: unknown) => e instanceof Error && e.name === 'Cairn.Damaged' && e.message.includes(packs[0]!.split('/').at(-1)!),
    );

    delete process.env.OBJECT_LOCK_DAYS;
    try {
      await assert.rejects(
        () => handler({ planId: 'gone', snapshotId: latest.id }),
        (e: unknown) => e instanceof Error && e.name === 'Cairn.Config' && /OBJECT_LOCK_DAYS/.test(e.message),
      );
    } finally {
      process.env.OBJECT_LOCK_DAYS = '35';
    }
  });

  it("leaves a plan in another bucket alone: Object Lock is the environment bucket's", async () => {
    const { repo, name } = await planRepo('elsewhere');
    const latest = await backupOf(repo, await writeFiles('e', { 'e.bin': randomBytes(100_000) }), 'elsewhere');
    age(name(''));
    process.env.BUCKET_NAME = 'another-bucket';
    try {
      const { result } = await extendAll('elsewhere', latest.id);
      assert.deepEqual([result.done, result.checked, result.extended], [true, 0, 0]);
    } finally {
      process.env.BUCKET_NAME = cp.s3.bucket;
    }
    assert.ok(lock.retention(name(CONFIG_KEY))!.retainUntil.getTime() < Date.now() + 3 * DAY_MS, 'nothing extended');
  });

  it("leaves a plan at an S3-compatible endpoint alone, even in a bucket named like the environment's: its retention is its operator's", async () => {
    const id = 'at-endpoint';
    // The same bucket name as the environment's, at an endpoint: only the plan's endpoint tells them apart.
    const url = `s3://${cp.s3.bucket}/plans/${id}/?endpoint=${lock.endpoint}&path-style=true&region=us-east-1`;
    const keyParameter = `/cairn/olk/${id}/endpoint-key`;
    cp.addPlan({
      id,
      engine: 'files',
      engineOptions: { paths: ['/data'] },
      repository: { url, credentialsParameter: keyParameter, controlCredentialsParameter: `${keyParameter}-control` },
    });
    cp.ssm.parameters.set(`/cairn/olk/${id}/passphrase`, PASSPHRASE);
    cp.ssm.parameters.set(keyParameter, JSON.stringify({ accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' }));
    const repo = await Repository.init(await openStorage(url), PASSPHRASE, host, SMALL);
    const latest = await backupOf(repo, await writeFiles('ep', { 'ep.bin': randomBytes(100_000) }), id);
    const name = (key: string): string => `${cp.s3.bucket}/plans/${id}/${key}`;
    age(name(''));
    const { result } = await extendAll(id, latest.id);
    assert.deepEqual([result.done, result.checked, result.extended], [true, 0, 0]);
    assert.ok(lock.retention(name(CONFIG_KEY))!.retainUntil.getTime() < Date.now() + 3 * DAY_MS, 'nothing extended');
    // The retention client itself refuses such a plan, naming why.
    assert.throws(
      () => new ObjectRetention(parsePlan(JSON.parse(cp.ssm.parameters.get(`/cairn/olk/plans/${id}`)!), 'test')),
      /Object Lock retention is kept on AWS S3 repositories only; an S3-compatible endpoint's or GCS's retention is its operator's/,
    );
  });

  it('the stand-in refuses to shorten a COMPLIANCE lock, as S3 does', async () => {
    const { name } = await planRepo('standin');
    const key = 'plans/standin/config';
    const held = lock.retention(name(CONFIG_KEY))!;
    assert.equal(held.mode, 'COMPLIANCE', 'the default retention was applied at upload');
    const client = new S3Client({
      region: 'us-east-1',
      endpoint: lock.endpoint,
      forcePathStyle: true,
      credentials: { accessKeyId: s3rverEnv().AWS_ACCESS_KEY_ID, secretAccessKey: s3rverEnv().AWS_SECRET_ACCESS_KEY },
    });
    try {
      await assert.rejects(
        () =>
          client.send(
            new PutObjectRetentionCommand({
              Bucket: cp.s3.bucket,
              Key: key,
              Retention: { Mode: 'COMPLIANCE', RetainUntilDate: new Date(Date.now() + DAY_MS) },
            }),
          ),
        (e: unknown) => e instanceof Error && e.name === 'AccessDenied',
      );
      assert.equal(lock.retention(name(CONFIG_KEY))!.retainUntil.getTime(), held.retainUntil.getTime());
    } finally {
      client.destroy();
    }
  });
});
