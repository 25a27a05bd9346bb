import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { CairnError } from '../../../agent/core/errors.ts';
import { lockKey } from '../../../agent/core/layout.ts';
import { ENDED_LOCK_RETENTION_MS, clearEndedLocks } from '../../../agent/core/lock-cleanup.ts';
import { DEFAULT_LEASE_MS, Lease, probeStorageClock, type LockRecord } from '../../../agent/core/locks.ts';
import { Repository, type Who } from '../../../agent/core/repository.ts';
import { MemoryStorage } from '../../helpers/memory-storage.ts';

/**
 * Clearing ended locks (issue 16): by the storage's clock only. The memory storage's clock
 * (`clock.t`) stamps every object's `modified`, standing in for a storage on which a day
 * passes between two lines of the test; the records' own times are written by hosts whose
 * clocks are far off, and must count for nothing.
 */
const HOUR = 60 * 60_000;
const who: Who = { host: 'ops-host', user: 'ops' };

async function setup(): Promise<{ storage: MemoryStorage; repo: Repository; clock: { t: number } }> {
  const clock = { t: Date.parse('2026-06-01T00:00:00Z') };
  const storage = new MemoryStorage({ now: () => clock.t });
  const repo = await Repository.init(storage, 'lock cleanup passphrase', who);
  return { storage, repo, clock };
}

/** A lock record as a host writes it, with its own (possibly wildly wrong) times; stored at the storage's now. */
async function putRecord(repo: Repository, holder: string, seq: number, fields: Partial<LockRecord> = {}): Promise<string> {
  const time = fields.time ?? new Date().toISOString();
  const record: LockRecord = {
    holder,
    seq,
    operation: 'backup',
    exclusive: false,
    host: 'some-host',
    user: 'backup',
    pid: 4242,
    started: time,
    time,
    expires: new Date(Date.parse(time) + DEFAULT_LEASE_MS).toISOString(),
    released: false,
    ...fields,
  };
  const key = lockKey(holder, seq);
  await repo.storage.put(key, repo.seal('lock', key, Buffer.from(JSON.stringify(record))), { ifAbsent: true });
  return key;
}

const lockKeys = (storage: MemoryStorage): string[] => [...storage.objects.keys()].filter((k) => k.startsWith('locks/')).sort();

async function clearNow(repo: Repository, storage: MemoryStorage): Promise<ReturnType<typeof clearEndedLocks>> {
  const probe = await probeStorageClock(repo, who);
  await storage.delete(probe.key);
  return clearEndedLocks(repo, storage, { storageNow: probe.storageNow, assertHeld: () => undefined });
}

describe('clearing ended locks by the storage clock (issue 16)', () => {
  it('deletes holders that released or expired more than a day of storage time ago, and nothing live or recent', async () => {
    const { storage, repo, clock } = await setup();
    const longAgo = new Date(clock.t - 3 * 24 * HOUR).toISOString();
    const farAhead = new Date(clock.t + 365 * 24 * HOUR).toISOString();
    // Stored 25 h before the cleanup (storage time): a released holder, one that died (expired), and
    // one that died but whose record claims a lease a year long (its own times; capped at 30 min).
    const released = [await putRecord(repo, 'a0a0a0a0a0a0a0a0', 0), await putRecord(repo, 'a0a0a0a0a0a0a0a0', 1, { released: true })];
    const expired = [await putRecord(repo, 'b0b0b0b0b0b0b0b0', 0)];
    const claimsLong = [await putRecord(repo, 'c0c0c0c0c0c0c0c0', 0, { expires: farAhead })];
    const oldJunk = 'locks/d0d0d0d0d0d0d0d0-00000000';
    await storage.put(oldJunk, Buffer.from('not a lock record'));
    const oldStray = 'locks/notes.txt';
    await storage.put(oldStray, Buffer.from('left by a script'));
    // Live: a holder that has held its lock for a day, refreshing (its first record is old, its latest fresh).
    const live = [await putRecord(repo, '1111111111111111', 0, { exclusive: true })];
    clock.t += 25 * HOUR;
    // Stored an hour before the cleanup: ended recently by the storage's clock, though its own times say three days ago.
    const recent = await putRecord(repo, 'e0e0e0e0e0e0e0e0', 0, { time: longAgo, started: longAgo, released: true });
    const newJunk = 'locks/f0f0f0f0f0f0f0f0-00000000';
    await storage.put(newJunk, Buffer.from('junk, but new'));
    clock.t += HOUR;
    live.push(await putRecord(repo, '1111111111111111', 300, { exclusive: true }));

    const before = lockKeys(storage);
    const cleared = await clearNow(repo, storage);
    const after = lockKeys(storage);
    assert.deepEqual(
      before.filter((k) => !after.includes(k)),
      [...released, ...expired, ...claimsLong, oldJunk, oldStray].sort(),
      'exactly the holders that ended more than a day ago, the old unreadable record and the old stray object went',
    );
    assert.equal(cleared.holders, 3);
    assert.equal(cleared.objects, 6);
    for (const key of [...live, recent, newJunk]) assert.ok(after.includes(key), `${key} is kept`);
  });

  it('keeps what ended less than a day ago by the storage clock, whatever the records say', async () => {
    const { storage, repo, clock } = await setup();
    const yearAgo = new Date(clock.t - 365 * 24 * HOUR).toISOString();
    const keys = [
      await putRecord(repo, '2222222222222222', 0, { time: yearAgo, started: yearAgo, expires: yearAgo, released: true }),
      await putRecord(repo, '3333333333333333', 0, { time: yearAgo, started: yearAgo }),
    ];
    // Its 5-minute lease plus just under a day: the died holder's lease ended just under a day ago.
    clock.t += DEFAULT_LEASE_MS + ENDED_LOCK_RETENTION_MS - 1000;
    const cleared = await clearNow(repo, storage);
    assert.equal(cleared.objects, 1, 'only the released one, stored more than a day ago, went');
    assert.deepEqual(lockKeys(storage), [keys[1]], 'the died holder, ended (lease out) less than a day ago, stays');
    clock.t += 1000;
    await clearNow(repo, storage);
    assert.deepEqual(lockKeys(storage), []);
  });

  it('a holder with junk stored above its old released record keeps both until the junk is a day old', async () => {
    const { storage, repo, clock } = await setup();
    const released = await putRecord(repo, '4444444444444444', 0, { released: true });
    clock.t += 25 * HOUR;
    const junk = lockKey('4444444444444444', 1);
    await storage.put(junk, Buffer.from('junk above a released record'));
    await clearNow(repo, storage);
    assert.deepEqual(lockKeys(storage), [released, junk].sort());
    clock.t += 24 * HOUR;
    await clearNow(repo, storage);
    assert.deepEqual(lockKeys(storage), []);
  });

  it('stops before the next deletion once the caller has lost its lock', async () => {
    const { storage, repo, clock } = await setup();
    await putRecord(repo, '5555555555555555', 0, { released: true });
    await putRecord(repo, '6666666666666666', 0, { released: true });
    clock.t += 25 * HOUR;
    const probe = await probeStorageClock(repo, who);
    await storage.delete(probe.key);
    const lost = new CairnError('Cairn.Locked', 'lost the repository lock');
    await assert.rejects(
      clearEndedLocks(repo, storage, {
        storageNow: probe.storageNow,
        assertHeld: () => {
          throw lost;
        },
      }),
      (error) => error === lost,
    );
    assert.equal(lockKeys(storage).length, 2, 'nothing was deleted');
  });

  it('a holder stalled past its lease by more than the longest lease cannot revive it by refreshing', async () => {
    const { storage, repo, clock } = await setup();
    const stalled = await Lease.acquire(repo, { operation: 'backup', exclusive: false, who, now: () => clock.t });
    // Its records cleared meanwhile (a day later, or by `cairn unlock`): the name of its next record is free.
    clock.t += 25 * HOUR;
    for (const key of lockKeys(storage)) await storage.delete(key);
    await stalled.refresh();
    assert.deepEqual(lockKeys(storage), [], 'the refresh wrote nothing');
    assert.throws(
      () => stalled.assertHeld(),
      (error: unknown) => error instanceof CairnError && error.code === 'Cairn.Locked' && /ran out \d+ minutes ago/.test(error.message),
    );
    await assert.rejects(stalled.release(), (error: unknown) => error instanceof CairnError && error.code === 'Cairn.Locked');
  });
});
