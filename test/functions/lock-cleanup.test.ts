import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { readdir, utimes } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { LOCKS_PREFIX, lockKey } from '../../agent/core/layout.ts';
import { DEFAULT_LEASE_MS, Lease, readLockTable, type LockRecord } from '../../agent/core/locks.ts';
import { Repository, type Who } from '../../agent/core/repository.ts';
import { controlSealParameterName } from '../../agent/core/run-lease.ts';
import type { DeletableStorage, ObjectInfo, PutOptions } from '../../agent/core/storage.ts';
import { openStorage } from '../../agent/storage/open.ts';
import { handler as applyRetention } from '../../functions/apply-retention.ts';
import { SMALL } from '../helpers/repo.ts';
import { startControlPlane, type ControlPlane } from './control-plane.ts';

/**
 * The control plane clears lock records that ended more than a day ago (issue 16), through the
 * retention function's real handler against s3rver. A day passes for an object the way s3rver
 * sees it: s3rver dates each object by its file's mtime (its LastModified, in listings too), so
 * the test sets that mtime 25 hours back (`age` below), as if the object had been stored then.
 * Storage-now stays s3rver's: the function's clock probe is dated by s3rver when it is stored.
 */
const PASSPHRASE = 'lock cleanup function test passphrase';
const HOUR = 60 * 60_000;
const host: Who = { host: 'i-0123456789abcdef0', user: 'root' };

/** Counts the lock records a repository view reads: what one acquisition costs. */
class CountingStorage implements DeletableStorage {
  readonly location: string;
  readonly atomicCreate: boolean;
  lockReads = 0;
  private readonly inner: DeletableStorage;
  constructor(inner: DeletableStorage) {
    this.inner = inner;
    this.location = inner.location;
    this.atomicCreate = inner.atomicCreate;
  }
  get(key: string): Promise<Buffer> {
    if (key.startsWith(LOCKS_PREFIX)) this.lockReads++;
    return this.inner.get(key);
  }
  getRange(key: string, offset: number, length: number): Promise<Buffer> {
    return this.inner.getRange(key, offset, length);
  }
  put(key: string, data: Buffer, options?: PutOptions): Promise<void> {
    return this.inner.put(key, data, options);
  }
  stat(key: string): Promise<ObjectInfo | undefined> {
    return this.inner.stat(key);
  }
  list(prefix: string): AsyncIterable<ObjectInfo> {
    return this.inner.list(prefix);
  }
  delete(key: string): Promise<void> {
    return this.inner.delete(key);
  }
}

describe('the control plane clears ended locks (issue 16)', () => {
  let cp: ControlPlane;
  before(async () => {
    cp = await startControlPlane('locktest');
    cp.ssm.parameters.set(controlSealParameterName('locktest'), randomBytes(32).toString('hex'));
  });
  after(async () => {
    await cp.stop();
  });

  /** The file s3rver keeps `key` of the plan's repository in (its mtime is the object's LastModified). */
  async function s3rverFile(planId: string, key: string): Promise<string> {
    for (const entry of await readdir(tmpdir())) {
      if (!entry.startsWith('cairn-s3rver-')) continue;
      const repository = join(tmpdir(), entry, cp.s3.bucket, 'plans', planId);
      if (!existsSync(repository)) continue;
      const parts = key.split('/');
      const file = join(repository, ...parts.slice(0, -1), `${parts.at(-1)}._S3rver_object`);
      assert.ok(existsSync(file), `s3rver holds ${key} in ${file}`);
      return file;
    }
    throw new Error(`no s3rver directory holds plan ${planId}`);
  }

  async function age(planId: string, keys: readonly string[], ms: number): Promise<void> {
    const then = new Date(Date.now() - ms);
    for (const key of keys) await utimes(await s3rverFile(planId, key), then, then);
  }

  async function lockKeys(storage: DeletableStorage): Promise<string[]> {
    const keys: string[] = [];
    for await (const object of storage.list(LOCKS_PREFIX)) keys.push(object.key);
    return keys.sort();
  }

  /** Lock reads of one shared acquisition and release through a fresh view of the repository. */
  async function acquisitionReads(storage: DeletableStorage): Promise<number> {
    const counting = new CountingStorage(storage);
    const lease = await Lease.acquire(await Repository.open(counting, PASSPHRASE), { operation: 'backup', exclusive: false, who: host });
    const reads = counting.lockReads;
    await lease.release();
    return reads;
  }

  it('deletes the records of locks that ended more than a day ago by the storage clock, never a live or recent one', async () => {
    const planId = `locks-${randomBytes(4).toString('hex')}`;
    const plan = cp.addPlan({ id: planId, engine: 'files', engineOptions: { paths: ['/data'] }, retention: { keepLast: 1 } });
    cp.ssm.parameters.set(`/cairn/locktest/${planId}/passphrase`, PASSPHRASE);
    const storage = await openStorage(plan.repository.url);
    const repo = await Repository.init(storage, PASSPHRASE, host, SMALL);

    // Twenty backups' locks, taken and released a day and more ago.
    for (let i = 0; i < 20; i++) await (await Lease.acquire(repo, { operation: 'backup', exclusive: false, who: host })).release();
    const old = await lockKeys(storage);
    // A lock record that cannot be read, and an object under locks/ that is no lock record, both old.
    const junk = lockKey('0d0d0d0d0d0d0d0d', 0);
    await storage.put(junk, randomBytes(64));
    const stray = `${LOCKS_PREFIX}leftover.txt`;
    await storage.put(stray, Buffer.from('left by a script'));
    await age(planId, [...old, junk, stray], 25 * HOUR);

    // Ended less than a day ago by s3rver's clock: one just released, one whose own times (a host
    // clock three days slow) say it ended three days ago. And junk stored just now.
    await (await Lease.acquire(repo, { operation: 'verify', exclusive: false, who: host })).release();
    const threeDaysAgo = new Date(Date.now() - 72 * HOUR).toISOString();
    const skewed: LockRecord = {
      holder: 'ababababababab00',
      seq: 0,
      operation: 'backup',
      exclusive: false,
      host: 'slow-clock',
      user: 'root',
      pid: 7,
      started: threeDaysAgo,
      time: threeDaysAgo,
      expires: new Date(Date.parse(threeDaysAgo) + DEFAULT_LEASE_MS).toISOString(),
      released: true,
    };
    const skewedKey = lockKey(skewed.holder, 0);
    await storage.put(skewedKey, repo.seal('lock', skewedKey, Buffer.from(JSON.stringify(skewed))), { ifAbsent: true });
    const newJunk = lockKey('0e0e0e0e0e0e0e0e', 0);
    await storage.put(newJunk, randomBytes(64));
    const recent = (await lockKeys(storage)).filter((k) => !old.includes(k) && k !== junk && k !== stray);

    // A live backup holds a shared lock: the run is skipped, and nothing is deleted.
    const live = await Lease.acquire(repo, { operation: 'backup', exclusive: false, who: host });
    const busy = await applyRetention({ planId });
    assert.equal(busy.skipped, true, 'a live lock keeps retention (and so the cleanup) from running');
    for (const key of [...old, junk, stray, ...recent]) assert.ok((await lockKeys(storage)).includes(key), `${key} is still there`);
    await live.release();

    const readsBefore = await acquisitionReads(storage);
    const outcome = await applyRetention({ planId });
    assert.equal(outcome.skipped, false);
    const left = await lockKeys(storage);
    for (const key of [...old, junk, stray]) assert.ok(!left.includes(key), `${key}, ended more than a day ago, was deleted`);
    for (const key of recent) assert.ok(left.includes(key), `${key}, ended less than a day ago by the storage's clock, is kept`);
    const table = await readLockTable(repo);
    assert.ok(
      table.states.some((s) => s.record.operation === 'retention' && s.state === 'released'),
      "the run's own lock records are kept",
    );
    assert.ok(
      table.states.some((s) => s.record.holder === live.holder),
      'the records of the backup that was live a moment ago are kept',
    );

    const readsAfter = await acquisitionReads(storage);
    assert.ok(readsBefore >= 20, `an acquisition read every old holder's latest record before (${readsBefore})`);
    // The twenty old holders and the old junk are no longer read; two holders came since (the measuring acquisition and the run).
    assert.equal(readsAfter, readsBefore - 21 + 2, `fewer lock reads after the cleanup (${readsBefore} → ${readsAfter})`);
  });
});
