import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describeReplay, measuredThroughputs, planPointInTime } from '../../agent/core/pitr-planning.ts';
import { CairnError } from '../../agent/core/errors.ts';
import { walName } from '../../agent/core/log-chain.ts';
import { parsePlan, type Plan } from '../../agent/core/plan.ts';
import type { Repository } from '../../agent/core/repository.ts';
import { planRestoreFor } from '../../functions/plan-restore.ts';
import { fileRepo, initSmallRepo, tempDir } from '../helpers/repo.ts';
import { SEGMENT_BYTES, STREAM, at, seedPostgresArchive, type PgArchiveFixture } from '../helpers/pitr-fixture.ts';
import { decodeRequest, encodeRequest, parseOrExplain, restoreInputSchema } from '../../agent/core/orchestration.ts';
import { applyPolicy } from '../../agent/core/retention.ts';
import { DEFAULT_RESTORE_BYTES_PER_SECOND, planRestore, type PlannableSnapshot } from '../../agent/core/restore-planning.ts';
import { LEASE_KEY } from '../../agent/core/layout.ts';
import { acquireRunLease, hmacSeal, readLease, releaseRunLease, runKey } from '../../agent/core/run-lease.ts';
import { FileStorage } from '../../agent/storage/file.ts';
import { Random } from '../helpers/tree.ts';

const snap = (id: string, time: string, totalBytes = 1000): PlannableSnapshot => ({
  id: id.padEnd(64, '0'),
  time,
  host: 'db1',
  engine: 'files',
  totalBytes,
});
const history = [
  snap('aaaa1111', '2026-11-20T02:00:00.000Z'),
  snap('bbbb2222', '2026-11-21T02:00:00.000Z', 5000),
  snap('cccc3333', '2026-11-22T02:00:00.000Z'),
];
const ctx = { snapshots: history, throughputs: [], planInstanceIds: ['i-0123456789abcdef0'], instanceOnline: () => true };

describe('restore planning', () => {
  it('resolves latest, an id prefix and a point in time between, before and after the snapshots', () => {
    assert.equal(planRestore({ planId: 'db' }, ctx).snapshot.id.slice(0, 8), 'cccc3333');
    assert.equal(planRestore({ planId: 'db', snapshot: 'bbbb2222' }, ctx).snapshot.id.slice(0, 8), 'bbbb2222');
    const between = planRestore({ planId: 'db', pointInTime: '2026-11-21T12:00:00Z' }, ctx);
    assert.equal(between.snapshot.id.slice(0, 8), 'bbbb2222');
    assert.match(between.warnings.join('\n'), /no log archive/);
    assert.equal(
      planRestore({ planId: 'db', pointInTime: '2026-11-21T02:00:00.000Z' }, ctx).snapshot.id.slice(0, 8),
      'bbbb2222',
      'a snapshot taken exactly at the time counts',
    );
    assert.equal(planRestore({ planId: 'db', pointInTime: '2030-01-01T00:00:00Z' }, ctx).snapshot.id.slice(0, 8), 'cccc3333');
    assert.throws(
      () => planRestore({ planId: 'db', pointInTime: '2026-11-19T00:00:00Z' }, ctx),
      (e: unknown) =>
        e instanceof CairnError &&
        e.code === 'Cairn.NotFound' &&
        /no snapshot at or before 2026-11-19T00:00:00Z; the oldest is aaaa1111/.test(e.message),
    );
  });

  it('refuses unknown ids, an offline target and a plan with no snapshot, naming what exists', () => {
    assert.throws(() => planRestore({ planId: 'db', snapshot: 'dddd4444' }, ctx), /^CairnError: no snapshot dddd4444 of plan db$/);
    assert.throws(() => planRestore({ planId: 'db' }, { ...ctx, instanceOnline: () => false }), /i-0123456789abcdef0 is not online/);
    assert.throws(() => planRestore({ planId: 'db' }, { ...ctx, snapshots: [] }), /no snapshot of plan db yet/);
  });

  it("reads a reference by the CLI's rules (core/snapshot-choice.ts): prefix length, ambiguity, damaged snapshots passed over by name", () => {
    const twins = [...history, snap('cccc3399', '2026-11-22T03:00:00.000Z')];
    const refused = (snapshot: string, snapshots = history) => {
      try {
        planRestore({ planId: 'db', snapshot }, { ...ctx, snapshots });
      } catch (error) {
        return error as CairnError;
      }
      assert.fail(`${snapshot} was accepted`);
    };
    assert.deepEqual(
      [refused('ccc').code, refused('ccc').message],
      ['Cairn.Usage', 'invalid snapshot id "ccc"'],
      'as `cairn restore ccc` says',
    );
    assert.deepEqual([refused('CCCC3333').code, refused('latest!').code], ['Cairn.Usage', 'Cairn.Usage']);
    const ambiguous = refused('cccc33', twins);
    assert.equal(ambiguous.code, 'Cairn.Usage');
    assert.equal(ambiguous.message, 'snapshot id prefix cccc33 is ambiguous (2 snapshots of plan db)');

    // The newest is named by a damage marker: latest passes over it, saying why; its id still restores it, with a warning.
    const marked = [...history.slice(0, 2), { ...snap('cccc3333', '2026-11-22T02:00:00.000Z'), damaged: 'a damage marker names it' }];
    const latest = planRestore({ planId: 'db' }, { ...ctx, snapshots: marked });
    assert.equal(latest.snapshot.id.slice(0, 8), 'bbbb2222');
    assert.match(
      latest.warnings.join('\n'),
      /latest passes over snapshot cccc3333\S* \(2026-11-22T02:00:00.000Z\): a damage marker names it/,
    );
    const byId = planRestore({ planId: 'db', snapshot: 'cccc' }, { ...ctx, snapshots: marked });
    assert.equal(byId.snapshot.id.slice(0, 8), 'cccc3333');
    assert.match(byId.warnings.join('\n'), /is damaged \(a damage marker names it\): restoring it as requested/);
    const allMarked = marked.map((s) => ({ ...s, damaged: 'it is tagged damaged' }));
    assert.throws(
      () => planRestore({ planId: 'db' }, { ...ctx, snapshots: allMarked }),
      /no good snapshot of plan db: every one "latest" could mean is damaged/,
    );
  });

  it('estimates the duration from the median of past restores, else backups, else a stated default', () => {
    const fromRestores = planRestore(
      { planId: 'db', snapshot: 'bbbb2222' },
      {
        ...ctx,
        throughputs: [
          { kind: 'restore', bytes: 1000, durationMs: 1000 },
          { kind: 'restore', bytes: 3000, durationMs: 1000 },
          { kind: 'restore', bytes: 2000, durationMs: 1000 },
          { kind: 'backup', bytes: 1, durationMs: 1000 },
        ],
      },
    );
    assert.equal(fromRestores.throughput.bytesPerSecond, 2000);
    assert.equal(fromRestores.estimatedSeconds, 3);
    const fromBackups = planRestore({ planId: 'db' }, { ...ctx, throughputs: [{ kind: 'backup', bytes: 500, durationMs: 1000 }] });
    assert.equal(fromBackups.estimatedSeconds, 2);
    const fallback = planRestore({ planId: 'db' }, ctx);
    assert.equal(fallback.throughput.bytesPerSecond, DEFAULT_RESTORE_BYTES_PER_SECOND);
    assert.match(fallback.warnings.join('\n'), /assumes 50 MiB\/s/);
  });

  it('validates console input with errors that name the field', () => {
    assert.throws(
      () => parseOrExplain(restoreInputSchema, { planId: 'db', snapshot: 'latest', pointInTime: '2026-11-21T00:00:00Z' }, 'restore input'),
      /pointInTime: give at most one of snapshot and pointInTime/,
    );
    assert.throws(
      () => parseOrExplain(restoreInputSchema, { planId: 'db', pointInTime: 'yesterday' }, 'restore input'),
      /pointInTime: an ISO-8601 time/,
    );
    assert.throws(
      () => parseOrExplain(restoreInputSchema, { planId: 'db', targetPath: '/srv/../etc' }, 'restore input'),
      /targetPath: a path without "\.\."/,
    );
    assert.throws(
      () => parseOrExplain(restoreInputSchema, { planId: 'db', sourceHost: '../etc' }, 'restore input'),
      /sourceHost: a host name as the plan's snapshots record it/,
    );
    assert.equal(restoreInputSchema.parse({ planId: 'db', sourceHost: 'ip-10-0-1-17' }).sourceHost, 'ip-10-0-1-17');
    assert.throws(() => parseOrExplain(restoreInputSchema, { planId: 'db', dryrun: true }, 'restore input'), /dryrun/);
    assert.throws(() => parseOrExplain(restoreInputSchema, {}, 'restore input'), /planId/);
  });

  it('round-trips agent requests as base64url and refuses anything else', () => {
    const encoded = encodeRequest({ operation: 'backup', planId: 'orders-db', runId: 'orders-db@x', heartbeatSeconds: 60 });
    assert.match(encoded, /^[A-Za-z0-9_-]+$/);
    assert.deepEqual(decodeRequest(encoded), { operation: 'backup', planId: 'orders-db', runId: 'orders-db@x', heartbeatSeconds: 60 });
    assert.throws(() => decodeRequest('$(reboot)'), /not base64url/);
    assert.throws(
      () => decodeRequest(Buffer.from('{"operation":"wipe","planId":"x"}').toString('base64url')),
      /invalid request: operation/,
    );
  });
});

const INSTANCE_ID = 'i-0123456789abcdef0';
const pgPlan = (pitr: boolean): Plan =>
  parsePlan(
    {
      id: 'pg-main',
      targets: { instanceIds: [INSTANCE_ID] },
      engine: 'postgres',
      engineOptions: {},
      schedule: { expression: 'rate(1 day)', timeZone: 'UTC' },
      retention: { keepLast: 3 },
      keySource: { passphraseParameter: '/cairn/test/pg-main/passphrase' },
      rpo: '26h',
      repository: { url: 's3://unused-bucket/plans/pg-main/' },
      ...(pitr ? { pitr: { enabled: true } } : {}),
    },
    'test',
  );
const hosts = { planInstanceIds: [INSTANCE_ID], online: true };

describe('point-in-time restore planning against a repository with a log archive', () => {
  let dir: { path: string; remove: () => Promise<void> };
  let repo: Repository;
  let fixture: PgArchiveFixture;
  // Segments 3-8 archived; bases start in segments 3 and 6 (windows from minute 3.3 and 6.3 to 8.9).
  before(async () => {
    dir = await tempDir('pitr-plan');
    repo = await initSmallRepo(fileRepo(dir.path));
    fixture = await seedPostgresArchive(repo, {
      planId: 'pg-main',
      segments: [3, 4, 5, 6, 7, 8],
      bases: [
        { segment: 3, minute: 3.2 },
        { segment: 6, minute: 6.2 },
      ],
    });
  });
  after(() => dir.remove());

  it('plans the newest base whose window reaches the time, then the log up to it: the same plan as restore --to-time --dry-run', async () => {
    const input = { planId: 'pg-main', pointInTime: at(7.5), targetPath: '/var/lib/postgresql/restored', dryRun: true };
    const planned = await planRestoreFor(input, pgPlan(true), repo, hosts);
    const [, newer] = fixture.bases;
    assert.equal(planned.snapshot.id, newer?.id);
    assert.deepEqual(planned.logRange, {
      stream: STREAM,
      target: `time ${at(7.5)}`,
      firstFile: walName(1, 6),
      lastFile: walName(1, 7),
      files: 2,
      bytes: 2 * SEGMENT_BYTES,
      window: { from: at(6.3), to: at(8.9) },
    });
    assert.equal(planned.bytes, 1_000_000 + 2 * SEGMENT_BYTES, 'bytes include the logs');
    assert.match(
      planned.steps.join('\n'),
      new RegExp(
        `restore base snapshot ${newer?.id.slice(0, 8)} .* onto ${INSTANCE_ID}, into /var/lib/postgresql/restored, then replay logs to time ${at(7.5).replace(/\./g, '\\.')}`,
      ),
    );
    assert.match(planned.steps.join('\n'), /fetches 2 archived WAL file\(s\) through wal-fetch/);
    assert.equal(planned.request, undefined, 'a dry run builds no request');

    // What the CLI's dry run prints, from the same repository.
    const cli = describeReplay(
      ...((r) => [r.plan, r.snapshot] as const)(await planPointInTime(repo, { target: { time: at(7.5) } })),
      await measuredThroughputs(repo),
    );
    assert.equal(planned.snapshot.id, cli.snapshot.id);
    assert.deepEqual(planned.logRange, cli.logRange);
    assert.equal(planned.bytes, cli.bytes);
    assert.equal(planned.estimatedSeconds, cli.estimatedSeconds);
    assert.deepEqual(planned.throughput, cli.throughput);
  });

  it('an earlier time replays from the older base; the agent request carries the base, the time and the stream', async () => {
    const planned = await planRestoreFor(
      { planId: 'pg-main', pointInTime: '2026-11-23T11:04:30+01:00', targetPath: '/srv/restored' },
      pgPlan(true),
      repo,
      hosts,
    );
    assert.equal(planned.snapshot.id, fixture.bases[0]?.id);
    assert.equal(planned.logRange?.firstFile, walName(1, 3));
    assert.equal(planned.logRange?.lastFile, walName(1, 4));
    assert.deepEqual(decodeRequest(planned.request ?? ''), {
      operation: 'restore',
      planId: 'pg-main',
      snapshotId: fixture.bases[0]?.id,
      targetPath: '/srv/restored',
      pointInTime: at(4.5),
      stream: STREAM,
      heartbeatSeconds: 300,
    });
  });

  it('refuses a time past the archive, naming the last recoverable time and the way to restore a snapshot instead', async () => {
    await assert.rejects(
      planRestoreFor({ planId: 'pg-main', pointInTime: at(20), targetPath: '/srv/r' }, pgPlan(true), repo, hosts),
      (error: unknown) => {
        assert.ok(error instanceof CairnError);
        assert.equal(error.code, 'Cairn.NotFound');
        assert.match(
          error.message,
          new RegExp(
            `plan pg-main: cannot recover ${STREAM} to time ${at(20).replace(/\./g, '\\.')}: nothing has been archived after ${at(8.9).replace(/\./g, '\\.')}`,
          ),
        );
        assert.match(error.hint ?? '', /nearest recoverable times are .*\(the last event before it\)/);
        assert.match(error.hint ?? '', /give "snapshot" in place of "pointInTime"/);
        return true;
      },
    );
  });

  it('a point-in-time restore needs a target directory: refused for a run, a warning in a dry run', async () => {
    await assert.rejects(planRestoreFor({ planId: 'pg-main', pointInTime: at(7.5) }, pgPlan(true), repo, hosts), /Cairn|targetPath/);
    await assert.rejects(
      planRestoreFor({ planId: 'pg-main', pointInTime: at(7.5) }, pgPlan(true), repo, hosts),
      (e: unknown) => e instanceof CairnError && e.code === 'Cairn.InvalidInput',
    );
    const dry = await planRestoreFor({ planId: 'pg-main', pointInTime: at(7.5), dryRun: true }, pgPlan(true), repo, hosts);
    assert.match(dry.warnings.join('\n'), /needs targetPath/);
  });

  it('a plan without pitr keeps restoring the newest snapshot at or before the time, with no log range', async () => {
    const planned = await planRestoreFor({ planId: 'pg-main', pointInTime: at(7.5), targetPath: '/srv/r' }, pgPlan(false), repo, hosts);
    assert.equal(planned.snapshot.id, fixture.bases[1]?.id);
    assert.equal(planned.logRange, null);
    assert.equal(planned.bytes, 1_000_000);
    assert.match(planned.warnings.join('\n'), /has no log archive: this restores the snapshot taken at/);
    assert.equal(decodeRequest(planned.request ?? '').operation, 'restore');
    assert.ok(!('pointInTime' in decodeRequest(planned.request ?? '')));
  });
});

describe('point-in-time restore planning with a gap or no archive', () => {
  it('refuses a time behind a gap in the WAL, naming the missing segment and the nearest recoverable time', async () => {
    const dir = await tempDir('pitr-gap');
    try {
      const repo = await initSmallRepo(fileRepo(dir.path));
      await seedPostgresArchive(repo, { planId: 'pg-main', segments: [3, 4, 6, 7, 8], bases: [{ segment: 3, minute: 3.2 }] });
      await assert.rejects(
        planRestoreFor({ planId: 'pg-main', pointInTime: at(6.5), targetPath: '/srv/r' }, pgPlan(true), repo, hosts),
        (error: unknown) => {
          assert.ok(error instanceof CairnError);
          assert.equal(error.code, 'Cairn.NotFound');
          assert.match(
            error.message,
            /the log has a gap there: WAL segment 000000010000000000000005 is missing after 000000010000000000000004 \(never archived/,
          );
          assert.match(error.hint ?? '', new RegExp(`${at(4.9).replace(/\./g, '\\.')} \\(the last event before it\\)`));
          return true;
        },
      );
      const before = await planRestoreFor({ planId: 'pg-main', pointInTime: at(4.5), targetPath: '/srv/r' }, pgPlan(true), repo, hosts);
      assert.equal(before.logRange?.lastFile, walName(1, 4));
    } finally {
      await dir.remove();
    }
  });

  it('a pitr plan whose repository has no archive yet is refused with the reason, not silently restored to the snapshot', async () => {
    const dir = await tempDir('pitr-none');
    try {
      const repo = await initSmallRepo(fileRepo(dir.path));
      await assert.rejects(
        planRestoreFor({ planId: 'pg-main', pointInTime: at(6.5), targetPath: '/srv/r' }, pgPlan(true), repo, hosts),
        (error: unknown) => {
          assert.ok(error instanceof CairnError);
          assert.equal(error.code, 'Cairn.NotFound');
          assert.match(error.message, /has no log archive for postgres: point-in-time recovery needs one/);
          return true;
        },
      );
    } finally {
      await dir.remove();
    }
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
      const newestGood = candidates
        .filter((c) => !c.damaged)
        .sort((a, b) => Date.parse(b.time) - Date.parse(a.time) || (a.id < b.id ? 1 : -1))[0];
      if (newestGood) assert.ok(!removed.has(newestGood.id), `round ${round}: newest good removed`);
      assert.equal(result.keep.length + result.remove.length, n);
    }
  });
});

describe('run lease', () => {
  const seal = hmacSeal(Buffer.alloc(32, 7));
  it('skips a second run while one holds the lease, runs each scheduled time once, and takes over an expired lease', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'cairn-lease-'));
    try {
      const storage = new FileStorage(dir);
      const t0 = new Date('2026-11-23T02:00:00Z');
      const first = await acquireRunLease(
        storage,
        {
          planId: 'db',
          executionId: 'exec-1',
          scheduledTime: '2026-11-23T02:00:00Z',
          leaseSeconds: 600,
          now: t0,
        },
        seal,
      );
      assert.equal(first.acquired, true);
      const second = await acquireRunLease(
        storage,
        {
          planId: 'db',
          executionId: 'exec-2',
          scheduledTime: '2026-11-23T03:00:00Z',
          leaseSeconds: 600,
          now: new Date(t0.getTime() + 60_000),
        },
        seal,
      );
      assert.equal(second.acquired, false);
      assert.match(second.acquired ? '' : second.reason, /still running: execution exec-1/);
      const duplicate = await acquireRunLease(
        storage,
        {
          planId: 'db',
          executionId: 'exec-3',
          scheduledTime: '2026-11-23T02:00:00Z',
          leaseSeconds: 600,
          now: new Date(t0.getTime() + 700_000),
        },
        seal,
      );
      assert.match(duplicate.acquired ? '' : duplicate.reason, /already started by execution exec-1/);
      const afterCrash = await acquireRunLease(
        storage,
        {
          planId: 'db',
          executionId: 'exec-4',
          scheduledTime: '2026-11-23T04:00:00Z',
          leaseSeconds: 600,
          now: new Date(t0.getTime() + 700_000),
        },
        seal,
      );
      assert.equal(afterCrash.acquired, true);
      assert.equal(afterCrash.acquired && afterCrash.tookOver?.executionId, 'exec-1');
      assert.equal(await releaseRunLease(storage, 'exec-1', seal), false, 'a stale holder cannot release the new lease');
      assert.equal(await releaseRunLease(storage, 'exec-4', seal), true);
      assert.equal(await readLease(storage, LEASE_KEY, seal), undefined);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('ignores a lease and a run record the control plane did not seal (a host forging them): the run goes ahead', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'cairn-lease-forged-'));
    try {
      const storage = new FileStorage(dir);
      const now = new Date('2026-11-23T02:00:00Z');
      const forgedLease = {
        planId: 'db',
        executionId: 'forger',
        runId: 'db@forger',
        acquired: now.toISOString(),
        expires: '2099-01-01T00:00:00.000Z',
      };
      // Plain JSON (what a lease was before sealing), and one sealed under another key (a host's guess).
      await storage.put(LEASE_KEY, Buffer.from(JSON.stringify(forgedLease)));
      const scheduledTime = '2026-11-23T02:00:00Z';
      const other = hmacSeal(Buffer.alloc(32, 9));
      const json = JSON.stringify({ ...forgedLease, scheduledTime });
      await storage.put(runKey(scheduledTime), Buffer.from(`${other.sign(runKey(scheduledTime), json)}\n${json}`));
      assert.equal(await readLease(storage, LEASE_KEY, seal), undefined, 'a forged lease reads as no lease');

      const decision = await acquireRunLease(storage, { planId: 'db', executionId: 'exec-1', scheduledTime, leaseSeconds: 600, now }, seal);
      assert.equal(decision.acquired, true, decision.acquired ? '' : decision.reason);
      assert.deepEqual(decision.forged, [`${runKey(scheduledTime)}: its seal does not verify`, 'orchestration/lease: it carries no seal']);
      assert.equal((await readLease(storage, LEASE_KEY, seal))?.executionId, 'exec-1');
      assert.equal((await readLease(storage, runKey(scheduledTime), seal))?.executionId, 'exec-1');
      // The genuine record holds: a second fire for the same time is still skipped.
      const again = await acquireRunLease(storage, { planId: 'db', executionId: 'exec-2', scheduledTime, leaseSeconds: 600, now }, seal);
      assert.match(again.acquired ? '' : again.reason, /already started by execution exec-1/);
      // A record copied under another name does not verify there (the name is sealed too).
      await storage.put('orchestration/runs/copy', await storage.get(LEASE_KEY));
      assert.equal(await readLease(storage, 'orchestration/runs/copy', seal), undefined);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
