import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CairnError } from '../../agent/core/errors.ts';
import { decodeRequest, encodeRequest, parseOrExplain, restoreInputSchema } from '../../agent/core/orchestration.ts';
import { applyPolicy } from '../../agent/core/retention.ts';
import { DEFAULT_RESTORE_BYTES_PER_SECOND, planRestore, type PlannableSnapshot } from '../../agent/core/restore-planning.ts';
import { LEASE_KEY, acquireRunLease, readLease, releaseRunLease } from '../../agent/core/run-lease.ts';
import { FileStorage } from '../../agent/storage/file.ts';
import { Random } from '../helpers/tree.ts';

const snap = (id: string, time: string, totalBytes = 1000): PlannableSnapshot => ({ id: id.padEnd(64, '0'), time, host: 'db1', engine: 'files', totalBytes });
const history = [snap('aaaa1111', '2026-11-20T02:00:00.000Z'), snap('bbbb2222', '2026-11-21T02:00:00.000Z', 5000), snap('cccc3333', '2026-11-22T02:00:00.000Z')];
const ctx = { snapshots: history, throughputs: [], planInstanceIds: ['i-0123456789abcdef0'], instanceOnline: () => true };

describe('restore planning', () => {
  it('resolves latest, an id prefix and a point in time between, before and after the snapshots', () => {
    assert.equal(planRestore({ planId: 'db' }, ctx).snapshot.id.slice(0, 8), 'cccc3333');
    assert.equal(planRestore({ planId: 'db', snapshot: 'bbbb2222' }, ctx).snapshot.id.slice(0, 8), 'bbbb2222');
    const between = planRestore({ planId: 'db', pointInTime: '2026-11-21T12:00:00Z' }, ctx);
    assert.equal(between.snapshot.id.slice(0, 8), 'bbbb2222');
    assert.match(between.warnings.join('\n'), /no log archive/);
    assert.equal(planRestore({ planId: 'db', pointInTime: '2026-11-21T02:00:00.000Z' }, ctx).snapshot.id.slice(0, 8), 'bbbb2222', 'a snapshot taken exactly at the time counts');
    assert.equal(planRestore({ planId: 'db', pointInTime: '2030-01-01T00:00:00Z' }, ctx).snapshot.id.slice(0, 8), 'cccc3333');
    assert.throws(() => planRestore({ planId: 'db', pointInTime: '2026-11-19T00:00:00Z' }, ctx), (e: unknown) => e instanceof CairnError && e.code === 'Cairn.NotFound' && /no snapshot at or before 2026-11-19T00:00:00Z; the oldest is aaaa1111/.test(e.message));
  });

  it('refuses unknown ids, an offline target and a plan with no snapshot, naming what exists', () => {
    assert.throws(() => planRestore({ planId: 'db', snapshot: 'dddd4444' }, ctx), /no good snapshot dddd4444[\s\S]*/);
    assert.throws(() => planRestore({ planId: 'db' }, { ...ctx, instanceOnline: () => false }), /i-0123456789abcdef0 is not online/);
    assert.throws(() => planRestore({ planId: 'db' }, { ...ctx, snapshots: [] }), /has no good snapshot to restore/);
  });

  it('estimates the duration from the median of past restores, else backups, else a stated default', () => {
    const fromRestores = planRestore({ planId: 'db', snapshot: 'bbbb2222' }, { ...ctx, throughputs: [{ kind: 'restore', bytes: 1000, durationMs: 1000 }, { kind: 'restore', bytes: 3000, durationMs: 1000 }, { kind: 'restore', bytes: 2000, durationMs: 1000 }, { kind: 'backup', bytes: 1, durationMs: 1000 }] });
    assert.equal(fromRestores.throughput.bytesPerSecond, 2000);
    assert.equal(fromRestores.estimatedSeconds, 3);
    const fromBackups = planRestore({ planId: 'db' }, { ...ctx, throughputs: [{ kind: 'backup', bytes: 500, durationMs: 1000 }] });
    assert.equal(fromBackups.estimatedSeconds, 2);
    const fallback = planRestore({ planId: 'db' }, ctx);
    assert.equal(fallback.throughput.bytesPerSecond, DEFAULT_RESTORE_BYTES_PER_SECOND);
    assert.match(fallback.warnings.join('\n'), /assumes 50 MiB\/s/);
  });

  it('validates console input with errors that name the field', () => {
    assert.throws(() => parseOrExplain(restoreInputSchema, { planId: 'db', snapshot: 'latest', pointInTime: '2026-11-21T00:00:00Z' }, 'restore input'), /pointInTime: give at most one of snapshot and pointInTime/);
    assert.throws(() => parseOrExplain(restoreInputSchema, { planId: 'db', pointInTime: 'yesterday' }, 'restore input'), /pointInTime: an ISO-8601 time/);
    assert.throws(() => parseOrExplain(restoreInputSchema, { planId: 'db', targetPath: '/srv/../etc' }, 'restore input'), /targetPath: a path without "\.\."/);
    assert.throws(() => parseOrExplain(restoreInputSchema, { planId: 'db', dryrun: true }, 'restore input'), /dryrun/);
    assert.throws(() => parseOrExplain(restoreInputSchema, {}, 'restore input'), /planId/);
  });

  it('round-trips agent requests as base64url and refuses anything else', () => {
    const encoded = encodeRequest({ operation: 'backup', planId: 'orders-db', runId: 'orders-db@x', heartbeatSeconds: 60 });
    assert.match(encoded, /^[A-Za-z0-9_-]+$/);
    assert.deepEqual(decodeRequest(encoded), { operation: 'backup', planId: 'orders-db', runId: 'orders-db@x', heartbeatSeconds: 60 });
    assert.throws(() => decodeRequest('$(reboot)'), /not base64url/);
    assert.throws(() => decodeRequest(Buffer.from('{"operation":"wipe","planId":"x"}').toString('base64url')), /invalid request: operation/);
  });
});

describe('retention with Object Lock', () => {
  it('never removes a locked snapshot nor the newest good one, over random histories', () => {
    const rnd = new Random(7);
    for (let round = 0; round < 300; round++) {
      const n = 1 + rnd.int(30);
      const candidates = Array.from({ length: n }, (_, i) => ({
        id: `s${String(i).padStart(3, '0')}`,
        time: new Date(Date.UTC(2026, 0, 1) + rnd.int(400) * 3_600_000).toISOString(),
        tags: [],
        damaged: rnd.int(10) === 0,
        ...(rnd.int(4) === 0 ? { lockedUntil: '2027-01-01T00:00:00.000Z' } : {}),
      }));
      const result = applyPolicy(candidates, { keepLast: rnd.int(3) });
      const removed = new Set(result.remove.map((d) => d.id));
      for (const c of candidates) if (c.lockedUntil) assert.ok(!removed.has(c.id), `round ${round}: locked ${c.id} removed`);
      const newestGood = candidates.filter((c) => !c.damaged).sort((a, b) => Date.parse(b.time) - Date.parse(a.time) || (a.id < b.id ? 1 : -1))[0];
      if (newestGood) assert.ok(!removed.has(newestGood.id), `round ${round}: newest good removed`);
      assert.equal(result.keep.length + result.remove.length, n);
    }
  });
});

describe('run lease', () => {
  it('skips a second run while one holds the lease, runs each scheduled time once, and takes over an expired lease', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'cairn-lease-'));
    try {
      const storage = new FileStorage(dir);
      const t0 = new Date('2026-11-23T02:00:00Z');
      const first = await acquireRunLease(storage, { planId: 'db', executionId: 'exec-1', scheduledTime: '2026-11-23T02:00:00Z', leaseSeconds: 600, now: t0 });
      assert.equal(first.acquired, true);
      const second = await acquireRunLease(storage, { planId: 'db', executionId: 'exec-2', scheduledTime: '2026-11-23T03:00:00Z', leaseSeconds: 600, now: new Date(t0.getTime() + 60_000) });
      assert.equal(second.acquired, false);
      assert.match(second.acquired ? '' : second.reason, /still running: execution exec-1/);
      const duplicate = await acquireRunLease(storage, { planId: 'db', executionId: 'exec-3', scheduledTime: '2026-11-23T02:00:00Z', leaseSeconds: 600, now: new Date(t0.getTime() + 700_000) });
      assert.match(duplicate.acquired ? '' : duplicate.reason, /already started by execution exec-1/);
      const afterCrash = await acquireRunLease(storage, { planId: 'db', executionId: 'exec-4', scheduledTime: '2026-11-23T04:00:00Z', leaseSeconds: 600, now: new Date(t0.getTime() + 700_000) });
      assert.equal(afterCrash.acquired, true);
      assert.equal(afterCrash.acquired && afterCrash.tookOver?.executionId, 'exec-1');
      assert.equal(await releaseRunLease(storage, 'exec-1'), false, 'a stale holder cannot release the new lease');
      assert.equal(await releaseRunLease(storage, 'exec-4'), true);
      assert.equal(await readLease(storage, LEASE_KEY), undefined);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
