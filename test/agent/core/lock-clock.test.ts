import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { CairnError } from '../../../agent/core/errors.ts';
import { lockKey } from '../../../agent/core/layout.ts';
import { DEFAULT_LEASE_MS, Lease, MAX_LEASE_MS, type LockRecord } from '../../../agent/core/locks.ts';
import { Repository, type Who } from '../../../agent/core/repository.ts';
import { removeLocks } from '../../../agent/commands/unlock.ts';
import { silentProgress } from '../../../agent/progress/progress.ts';
import { MemoryStorage } from '../../helpers/memory-storage.ts';

/**
 * Issue 16, item 1: leases are judged by the storage's clock. The memory
 * storage's clock (`storageTime`) stamps every object's `modified`; each host
 * has its own clock (AcquireOptions.now), off by minutes from the storage's.
 */
const MINUTE = 60_000;
const hostA: Who = { host: 'slow-host', user: 'backup' };
const hostB: Who = { host: 'prune-host', user: 'ops' };

async function setup(): Promise<{ storage: MemoryStorage; repo: Repository; clock: { t: number } }> {
  const clock = { t: Date.parse('2026-06-01T00:00:00Z') };
  const storage = new MemoryStorage({ now: () => clock.t });
  const repo = await Repository.init(storage, 'lock clock passphrase', hostA);
  return { storage, repo, clock };
}

function isLocked(pattern?: RegExp): (error: unknown) => boolean {
  return (error) => {
    assert.ok(error instanceof CairnError, `a CairnError, got ${String(error)}`);
    assert.equal(error.code, 'Cairn.Locked', error.message);
    if (pattern) assert.match(error.message, pattern);
    return true;
  };
}

/** A lock record as a host with a wrong clock (or a forger) writes it: its own times, stored at the storage's now. */
async function putRecord(repo: Repository, holder: string, fields: Partial<LockRecord>): Promise<string> {
  const time = fields.time ?? new Date().toISOString();
  const record: LockRecord = {
    holder,
    seq: 0,
    operation: 'backup',
    exclusive: false,
    host: 'skewed',
    user: 'someone',
    pid: 4242,
    started: time,
    time,
    expires: new Date(Date.parse(time) + DEFAULT_LEASE_MS).toISOString(),
    released: false,
    ...fields,
  };
  const key = lockKey(holder, record.seq);
  await repo.storage.put(key, repo.seal('lock', key, Buffer.from(JSON.stringify(record))), { ifAbsent: true });
  return key;
}

describe('lease age by the storage clock (issue 16)', () => {
  it('a holder whose clock is 10 minutes slow keeps its lease while the storage says it is fresh; a takeover after that makes its release fail', async () => {
    const { repo, clock } = await setup();
    const slow = await Lease.acquire(repo, { operation: 'backup', exclusive: false, who: hostA, now: () => clock.t - 10 * MINUTE });
    const takeovers: string[] = [];
    const prune = (): Promise<Lease> =>
      Lease.acquire(repo, {
        operation: 'prune',
        exclusive: true,
        who: hostB,
        now: () => clock.t,
        onTakeover: (stale) => void takeovers.push(stale.holder),
      });

    // Its record says it ended 5 minutes ago by its own times; the storage stored it just now.
    await assert.rejects(prune(), isLocked(/shared lock for backup by backup@slow-host/));
    clock.t += 4 * MINUTE;
    await assert.rejects(prune(), isLocked());
    assert.deepEqual(takeovers, []);
    await slow.confirmHeld(); // nothing closed it

    // One lease of storage time without a refresh: the holder is presumed dead and taken over.
    clock.t += 2 * MINUTE;
    const lease = await prune();
    assert.deepEqual(takeovers, [slow.holder]);
    await assert.rejects(slow.confirmHeld(), isLocked(/taken over/));
    await assert.rejects(slow.release(), isLocked(/taken over/));
    await lease.release();
  });

  it('a holder whose clock is 10 minutes fast blocks others for one lease of storage time, no longer', async () => {
    const { repo, clock } = await setup();
    const fast = await Lease.acquire(repo, { operation: 'backup', exclusive: false, who: hostA, now: () => clock.t + 10 * MINUTE });
    const prune = (): Promise<Lease> => Lease.acquire(repo, { operation: 'prune', exclusive: true, who: hostB, now: () => clock.t });
    clock.t += DEFAULT_LEASE_MS - 1000;
    await assert.rejects(prune(), isLocked());
    clock.t += 2000;
    const lease = await prune();
    await assert.rejects(fast.release(), isLocked(/taken over/));
    await lease.release();
  });

  it('a refresh that finds its lease taken over is a lost lease, and the release then fails', async () => {
    const { repo, clock } = await setup();
    const stalled = await Lease.acquire(repo, { operation: 'backup', exclusive: false, who: hostA, now: () => clock.t });
    clock.t += DEFAULT_LEASE_MS + 1000;
    const lease = await Lease.acquire(repo, { operation: 'prune', exclusive: true, who: hostB, now: () => clock.t });
    await stalled.refresh();
    assert.throws(() => stalled.assertHeld(), isLocked(/taken over/));
    await assert.rejects(stalled.release(), isLocked(/taken over/));
    await lease.release();
  });

  it('a record whose own times say a year ahead blocks for one lease of storage time, and plain unlock then clears it', async () => {
    const { storage, repo, clock } = await setup();
    const yearAhead = new Date(clock.t + 365 * 24 * 60 * MINUTE).toISOString();
    const key = await putRecord(repo, 'aaaaaaaaaaaaaaaa', { time: yearAhead, started: yearAhead, exclusive: true });
    const backup = (): Promise<Lease> => Lease.acquire(repo, { operation: 'backup', exclusive: false, who: hostB, now: () => clock.t });

    await assert.rejects(backup(), isLocked(/exclusive lock for backup by someone@skewed/));
    clock.t += DEFAULT_LEASE_MS + 1000;
    const report = await removeLocks(repo, storage, { who: hostB, progress: silentProgress, all: false });
    assert.equal(report.stillActive, 0);
    assert.ok(report.removed >= 1);
    assert.equal(storage.objects.has(key), false, 'plain unlock removed the future-dated record');
    assert.deepEqual(
      [...storage.objects.keys()].filter((k) => k.startsWith('locks/')),
      [],
      'unlock leaves no lock record behind (its own clock probe included)',
    );
    await (await backup()).release();
  });

  it('a record claiming a lease of ten years blocks no longer than the maximum lease of storage time', async () => {
    const { repo, clock } = await setup();
    const time = new Date(clock.t).toISOString();
    await putRecord(repo, 'bbbbbbbbbbbbbbbb', {
      time,
      exclusive: true,
      expires: new Date(clock.t + 10 * 365 * 24 * 60 * MINUTE).toISOString(),
    });
    const backup = (): Promise<Lease> => Lease.acquire(repo, { operation: 'backup', exclusive: false, who: hostB, now: () => clock.t });
    clock.t += MAX_LEASE_MS - 1000;
    await assert.rejects(backup(), isLocked());
    clock.t += 2000;
    await (await backup()).release();
  });

  it('plain unlock leaves a live holder whose clock is 10 minutes slow', async () => {
    const { storage, repo, clock } = await setup();
    const slow = await Lease.acquire(repo, { operation: 'backup', exclusive: false, who: hostA, now: () => clock.t - 10 * MINUTE });
    const report = await removeLocks(repo, storage, { who: hostB, progress: silentProgress, all: false });
    assert.deepEqual(report, { removed: 0, stillActive: 1 });
    await slow.confirmHeld();
    await slow.release();
  });
});
