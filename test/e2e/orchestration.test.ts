import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { readWorkList } from '../../agent/core/gc-work-list.ts';
import { LEASE_KEY } from '../../agent/core/layout.ts';
import { acquireRunLease, runKey } from '../../agent/core/run-lease.ts';
import { openStorage } from '../../agent/storage/open.ts';
import { runCli } from '../helpers/cli.ts';
import { captureMetrics } from '../helpers/emf.ts';
import { SEGMENT_BYTES, STREAM, at, seedPostgresArchive } from '../helpers/pitr-fixture.ts';
import { walName } from '../../agent/core/log-chain.ts';
import { Repository } from '../../agent/core/repository.ts';
import { ExitCode } from '../../agent/core/errors.ts';
import { describeTree, makeRandomTree } from '../helpers/tree.ts';
import { INSTANCE, PASSPHRASE_PARAMETER, resolveIntrinsics, startSystem, type AgentRun, type System } from './harness.ts';
import { LogArchive } from '../../agent/core/log-archive.ts';
import { archiveLag } from '../../functions/archive-lag.ts';
import { missingMariadb, startMariadb } from '../helpers/mariadb.ts';

/**
 * End to end (docs/architecture.md, "Tests"): the
 * synthesized state machines run by aws-local-stepfunctions, the real handler
 * modules, the real SSM document script running the real bundled agent against
 * s3rver. STAND-INS: SSM Parameter Store/inventory and the Step Functions
 * callback API (./standins.ts), behind the real SDK clients.
 */
const PASSPHRASE = 'e2e passphrase that is long enough';
const plan = (id: string, paths: string[], extra: Record<string, unknown> = {}): Record<string, unknown> => ({
  id,
  targets: { instanceIds: [INSTANCE] },
  engine: 'files',
  engineOptions: { paths },
  schedule: { expression: 'rate(1 day)' },
  retention: { keepLast: 2 },
  keySource: { passphraseParameter: PASSPHRASE_PARAMETER },
  rpo: '26h',
  timeouts: { heartbeatSeconds: 30, timeoutSeconds: 900 },
  ...extra,
});

// A PostgreSQL plan with PITR: its repository gets archived WAL and base snapshots written directly (../helpers/pitr-fixture.ts).
const pgPitrPlan = { ...plan('pg-pitr', []), engine: 'postgres', engineOptions: {}, pitr: { enabled: true } };
// A MariaDB plan with PITR: its binlog-push schedule runs the document; the server's port is known once it runs, so the test
// rewrites the plan's parameter then (as an operator's change to the plan would).
const MARIA_PASSWORD_PARAMETER = '/cairn/e2e/maria-pitr/db-password';
const mariaPitrPlan = {
  ...plan('maria-pitr', []),
  engine: 'mariadb',
  engineOptions: { connection: { host: '127.0.0.1', port: 3306, user: 'cairn' }, passwordParameter: MARIA_PASSWORD_PARAMETER },
  pitr: { enabled: true },
};

describe('orchestration end to end', { timeout: 600_000 }, () => {
  let system: System;
  let work: string;
  let data: string;
  const cliEnv = (): Record<string, string> => ({ ...(system.env as Record<string, string>), CAIRN_PASSWORD: PASSPHRASE });

  before(async () => {
    work = await mkdtemp(join(tmpdir(), 'cairn-e2e-data-'));
    data = join(work, 'data');
    await makeRandomTree(data, 11, { files: 20, maxFileSize: 200_000 });
    system = await startSystem([
      plan('files-plan', [data]) as never,
      plan('broken-plan', ['/nonexistent/cairn-e2e-path']) as never,
      pgPitrPlan as never,
      mariaPitrPlan as never,
    ]);
    system.ssm.parameters.set(PASSPHRASE_PARAMETER, PASSPHRASE);
    // files-plan gets no `cairn init`: its first scheduled backup makes the repository (EnsureRepository).
    for (const id of ['broken-plan', 'pg-pitr', 'maria-pitr']) {
      const init = await runCli(['init', '--repo', system.repoUrl(id)], cliEnv());
      assert.equal(init.code, 0, init.stderr);
    }
  });
  after(async () => {
    await system.stop();
    await rm(work, { recursive: true, force: true });
  });

  const snapshots = async (planId: string): Promise<Array<{ id: string; time: string; plan?: string }>> => {
    const r = await runCli(['snapshots', '--json', '--repo', system.repoUrl(planId)], cliEnv());
    assert.equal(r.code, 0, r.stderr);
    const line = r.stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { type: string; snapshots?: Array<{ id: string; time: string; plan?: string }> })
      .find((l) => l.type === 'snapshots');
    return line?.snapshots ?? [];
  };
  it('three scheduled backups, then retention forgets by policy and GC frees the forgotten unique chunks', async () => {
    const outputs: Array<Record<string, unknown>> = [];
    for (let i = 0; i < 3; i++) {
      // Each backup brings 18 MB only it holds: incompressible, so at least one 8 MiB pack holds nothing else.
      await writeFile(join(data, `unique-${i}.bin`), randomBytes(18_000_000));
      if (i > 0) await rm(join(data, `unique-${i - 1}.bin`));
      outputs.push(
        (await system.run('Backup', { planId: 'files-plan', scheduledTime: `2026-11-2${i}T02:00:00Z` })) as Record<string, unknown>,
      );
    }
    const made = outputs.map((o) => (o as { repository: { created: boolean; repositoryId: string } }).repository);
    assert.equal(made[0]?.created, true, 'the first scheduled backup of a fresh deployment made the repository');
    assert.deepEqual(
      made.slice(1).map((r) => r.created),
      [false, false],
    );
    assert.ok(made.every((r) => r.repositoryId === made[0]?.repositoryId));
    const third = outputs[2] as {
      agent: { snapshotId: string; bytesAdded: number };
      finalized: { snapshotId: string };
      retention: {
        forgotten: Array<{ id: string }>;
        kept: unknown[];
        gc: { generation: string; packs: number; bytes: number; prefixes: string[] };
      };
    };
    assert.equal(third.finalized.snapshotId, third.agent.snapshotId, 'finalize confirmed the manifest the agent reported');
    assert.equal(third.retention.forgotten.length, 1, 'keepLast 2 forgets the oldest of three');
    const first = (outputs[0] as { agent: { snapshotId: string } }).agent.snapshotId;
    assert.equal(third.retention.forgotten[0]?.id, first);
    assert.ok(
      third.retention.gc.packs >= 1 && third.retention.gc.bytes >= 4_000_000,
      `GC marked the first backup's unique data: ${JSON.stringify(third.retention.gc)}`,
    );
    const storage = await openStorage(system.repoUrl('files-plan'), system.env);
    const collection = await readWorkList(storage, system.seal, third.retention.gc.generation);
    for (const pack of collection.packs)
      assert.equal(await storage.stat(`packs/${pack.slice(0, 2)}/${pack}`), undefined, `the sweep deleted pack ${pack}`);
    const left = await snapshots('files-plan');
    assert.deepEqual(
      left.map((s) => s.id).sort(),
      outputs
        .slice(1)
        .map((o) => (o as { agent: { snapshotId: string } }).agent.snapshotId)
        .sort(),
    );
    assert.ok(
      left.every((s) => s.plan === 'files-plan'),
      'manifests carry the plan id',
    );
    const check = await runCli(['check', '--repo', system.repoUrl('files-plan')], cliEnv());
    assert.equal(check.code, 0, `the repository is consistent after the sweep: ${check.stdout}${check.stderr}`);
  });

  it('a console restore: the dry run returns a plan, then a real restore yields byte-identical data', async () => {
    const dry = (await system.run('Restore', { planId: 'files-plan', targetPath: join(work, 'restored'), dryRun: true })) as {
      snapshot: { id: string };
      steps: string[];
      estimatedSeconds: number;
      targetInstanceId: string;
      dryRun: boolean;
    };
    assert.equal(dry.dryRun, true);
    assert.equal(dry.targetInstanceId, INSTANCE);
    assert.ok(dry.estimatedSeconds >= 1 && dry.steps.length > 0);
    const latest = (await snapshots('files-plan')).at(-1);
    assert.equal(dry.snapshot.id, latest?.id, 'latest is the newest good snapshot');

    const target = join(work, 'restored');
    const out = (await system.run('Restore', { planId: 'files-plan', snapshot: 'latest', targetPath: target })) as {
      agent: { snapshotId: string };
      recorded: { outcome: string };
    };
    assert.equal(out.agent.snapshotId, latest?.id);
    assert.equal(out.recorded.outcome, 'success');
    assert.deepEqual(await describeTree(target), await describeTree(data));
  });

  it("an agent failure fails the execution with the agent's error, records it in history and emits the failure metric", async () => {
    const { error: failure, metrics } = await captureMetrics(() =>
      system.run('Backup', { planId: 'broken-plan', scheduledTime: '2026-11-23T02:00:00Z' }),
    );
    assert.ok(failure instanceof Error, 'the execution failed');
    const text = `${failure.name} ${failure.message} ${JSON.stringify((failure as { cause?: unknown }).cause ?? '')}`;
    assert.match(text, /nonexistent\/cairn-e2e-path/, `the agent's own message reaches the execution: ${text}`);
    const history = await runCli(['history', '--json', '--repo', system.repoUrl('broken-plan')], cliEnv());
    assert.match(history.stdout, /orchestration\.backup\.failed/);
    const emf = metrics.filter((m) => 'BackupFailed' in m);
    assert.ok(emf.length > 0, 'record-failure emitted BackupFailed in CloudWatch embedded metric format');
    assert.deepEqual(emf[0]?._aws.CloudWatchMetrics[0]?.Dimensions, [['PlanId']], 'the dimensions the alarms watch, and no other');
    assert.equal((await snapshots('broken-plan')).length, 0, 'no snapshot was committed');
  });

  it('a second schedule fire while a backup runs is skipped with the reason; a stale lease from a crashed run does not block the next backup', async () => {
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    let entered!: () => void;
    const inAgent = new Promise<void>((resolve) => (entered = resolve));
    const running = system.run(
      'Backup',
      { planId: 'files-plan', scheduledTime: '2026-11-24T02:00:00Z' },
      {
        beforeAgent: async () => {
          entered();
          await gate;
        },
      },
    );
    await inAgent;
    const second = (await system.run('Backup', { planId: 'files-plan', scheduledTime: '2026-11-24T03:00:00Z' })) as {
      plan: { skip: boolean; reason: string };
    };
    assert.equal(second.plan.skip, true);
    assert.match(second.plan.reason, /still running: execution .*run-/);
    release();
    const first = (await running) as { finalized: { snapshotId: string } };
    assert.match(first.finalized.snapshotId, /^[0-9a-f]{64}$/);

    // A crashed run: its lease was taken long ago and never given back.
    const storage = await openStorage(system.repoUrl('files-plan'), system.env);
    const crashed = await acquireRunLease(
      storage,
      {
        planId: 'files-plan',
        executionId: 'crashed-run',
        scheduledTime: '2026-11-01T02:00:00Z',
        leaseSeconds: 60,
        now: new Date(Date.now() - 3_600_000),
      },
      system.seal,
    );
    assert.equal(crashed.acquired, true);
    const next = (await system.run('Backup', { planId: 'files-plan', scheduledTime: '2026-11-25T02:00:00Z' })) as {
      plan: { skip: boolean };
      finalized: { snapshotId: string };
    };
    assert.equal(next.plan.skip, false);
    assert.match(next.finalized.snapshotId, /^[0-9a-f]{64}$/);
  });

  it("a lease and a run record forged with a host's rights (not sealed by the control plane) do not skip a backup", async () => {
    // What a host can write under its plan's prefix if the explicit deny on orchestration/* were missing
    // (the stand-in enforces no IAM): a lease that holds for decades, and the run record of the next fire.
    const storage = await openStorage(system.repoUrl('files-plan'), system.env);
    const scheduledTime = '2026-11-28T02:00:00Z'; // its own time: the genuine run's record would make a later test's fire a duplicate
    const forged = {
      planId: 'files-plan',
      executionId: 'arn:aws:states:eu-central-1:123456789012:execution:cairn-e2e-backup:forged',
      runId: `files-plan@${scheduledTime}`,
      scheduledTime,
      acquired: new Date().toISOString(),
      expires: '2099-01-01T00:00:00.000Z',
    };
    await storage.put(LEASE_KEY, Buffer.from(JSON.stringify(forged)));
    await storage.put(runKey(scheduledTime), Buffer.from(`${'0'.repeat(64)}\n${JSON.stringify(forged)}`));
    const before = (await snapshots('files-plan')).length;
    // Judged by the backup's own steps (PlanBackup not skipping, FinalizeBackup confirming a new snapshot); the
    // retention tail after them is the first test's subject.
    const { metrics } = await captureMetrics(() => system.run('Backup', { planId: 'files-plan', scheduledTime }));
    const sum = (name: string): number => metrics.filter((m) => name in m).reduce((total, m) => total + Number(m[name]), 0);
    assert.equal(sum('BackupSkipped'), 0, 'the forged lease and run record did not skip the scheduled backup');
    assert.equal(sum('BackupSucceeded'), 1, 'finalize confirmed the new snapshot');
    assert.equal(sum('ForgedControlRecord'), 2, 'both forgeries are reported (ForgedControlRecord)');
    assert.ok((await snapshots('files-plan')).length >= Math.min(before + 1, 2));
    assert.equal(await storage.stat(LEASE_KEY), undefined, 'the lease was released at finalize');
  });

  it('invalid restore input fails at the first state with a readable error naming the field', async () => {
    await assert.rejects(
      system.run('Restore', { planId: 'files-plan', snapshot: 'latest', pointInTime: 'yesterday' }),
      (error: unknown) => {
        const e = error as Error & { cause?: unknown };
        const text = `${e.name} ${e.message} ${JSON.stringify(e.cause ?? '')}`;
        assert.match(text, /Cairn\.InvalidInput/);
        assert.match(text, /pointInTime/);
        return true;
      },
    );
    await assert.rejects(system.run('Restore', { planId: 'no-such-plan' }), /no plan "no-such-plan"/);
    // A files plan restores into a directory: without targetPath it would fail on the host, so PlanRestore refuses it
    // (a dry run too), naming the field.
    for (const input of [{ planId: 'files-plan' }, { planId: 'files-plan', dryRun: true }]) {
      await assert.rejects(system.run('Restore', input), (error: unknown) => {
        const e = error as Error & { cause?: unknown };
        const text = `${e.name} ${e.message} ${JSON.stringify(e.cause ?? '')}`;
        assert.match(text, /Cairn\.InvalidInput/);
        assert.match(text, /targetPath: required, plan files-plan \(files\) restores into a directory/);
        return true;
      });
    }
  });

  it('a silent agent hits the heartbeat timeout; the failure is recorded', { timeout: 120_000 }, async () => {
    let failure: unknown;
    try {
      await system.run(
        'Backup',
        { planId: 'files-plan', scheduledTime: '2026-11-26T02:00:00Z' },
        {
          onAgent: (run, token) => {
            // Freeze the host's agent after its first heartbeat: it neither works nor reports any more.
            const timer = setInterval(() => {
              if (system.sfn.heartbeats(token) > 0 && run.child.pid) {
                clearInterval(timer);
                process.kill(-run.child.pid, 'SIGSTOP');
              }
            }, 100);
            run.child.once('exit', () => clearInterval(timer));
          },
        },
      );
    } catch (error) {
      failure = error;
    }
    assert.ok(failure instanceof Error);
    assert.match(failure.message, /no heartbeat for 30 s/);
    const history = await runCli(['history', '--json', '--repo', system.repoUrl('files-plan')], cliEnv());
    assert.match(history.stdout, /orchestration\.backup\.failed[^\n]*States\.HeartbeatTimeout/);
  });

  it(
    'stopping the execution reaches the agent through its next heartbeat: it stops cleanly and commits nothing',
    { timeout: 120_000 },
    async () => {
      const before = (await snapshots('files-plan')).length;
      await writeFile(join(data, 'unique-stop.bin'), randomBytes(18_000_000));
      let agent: AgentRun | undefined;
      let stoppedAt = 0;
      const run = system.run(
        'Backup',
        { planId: 'files-plan', scheduledTime: '2026-11-27T02:00:00Z' },
        {
          // 18 MB of new data at 0.5 MB/s: the backup is still running when its next heartbeat is due.
          hostEnv: { CAIRN_LIMIT_UPLOAD: '0.5' },
          onAgent: (a, token) => {
            agent = a;
            const timer = setInterval(() => {
              if (system.sfn.heartbeats(token) > 0) {
                clearInterval(timer);
                stoppedAt = Date.now();
                system.sfn.stop(token); // what StopExecution does to a waiting task
              }
            }, 100);
            a.child.once('exit', () => clearInterval(timer));
          },
        },
      );
      await assert.rejects(run, /stopped/);
      assert.ok(agent && stoppedAt > 0);
      const exitCode =
        agent.child.exitCode ?? (await new Promise<number | null>((resolve) => agent?.child.once('exit', (code) => resolve(code))));
      assert.match(agent.output(), /no longer waits for this task \(TaskTimedOut\)/, 'the agent learned of the stop from a heartbeat');
      assert.match(agent.output(), /Cairn\.Cancelled/);
      assert.notEqual(exitCode, 0);
      assert.equal((await snapshots('files-plan')).length, before, 'no snapshot was committed');
      const locks = await runCli(['unlock', '--repo', system.repoUrl('files-plan')], cliEnv());
      assert.match(locks.stdout, /"stillActive":0/, 'the agent released its lock');
      await rm(join(data, 'unique-stop.bin'));
    },
  );

  it('a console point-in-time dry run on a PITR plan returns the replay plan; a time behind a gap fails naming it', async () => {
    const repo = await Repository.open(await openStorage(system.repoUrl('pg-pitr'), system.env), PASSPHRASE);
    const fixture = await seedPostgresArchive(repo, {
      planId: 'pg-pitr',
      segments: [3, 4, 6, 7, 8],
      bases: [
        { segment: 3, minute: 3.2 },
        { segment: 6, minute: 6.2 },
      ],
    });
    const dry = (await system.run('Restore', {
      planId: 'pg-pitr',
      pointInTime: at(7.5),
      targetPath: '/var/lib/postgresql/restored',
      dryRun: true,
    })) as {
      dryRun: boolean;
      snapshot: { id: string };
      logRange: { stream: string; firstFile: string; lastFile: string; files: number; bytes: number; target: string };
      bytes: number;
      steps: string[];
    };
    assert.equal(dry.dryRun, true);
    assert.equal(dry.snapshot.id, fixture.bases[1]?.id, 'the newest base whose window reaches the time');
    assert.deepEqual(
      { ...dry.logRange, window: undefined },
      {
        stream: STREAM,
        target: `time ${at(7.5)}`,
        firstFile: walName(1, 6),
        lastFile: walName(1, 7),
        files: 2,
        bytes: 2 * SEGMENT_BYTES,
        window: undefined,
      },
    );
    assert.equal(dry.bytes, 1_000_000 + 2 * SEGMENT_BYTES);
    assert.match(dry.steps.join('\n'), /then replay logs to time/);

    await assert.rejects(
      system.run('Restore', { planId: 'pg-pitr', pointInTime: at(5.5), targetPath: '/var/lib/postgresql/restored', dryRun: true }),
      (error: unknown) => {
        const e = error as Error & { cause?: unknown };
        const text = `${e.name} ${e.message} ${JSON.stringify(e.cause ?? '')}`;
        assert.match(text, /Cairn\.NotFound/);
        assert.match(text, /WAL segment 000000010000000000000005 is missing/);
        assert.match(text, /nearest recoverable times/);
        return true;
      },
    );
    const history = await runCli(['history', '--json', '--repo', system.repoUrl('pg-pitr')], cliEnv());
    assert.match(history.stdout, /orchestration\.restore\.failed[^\n]*Cairn\.NotFound/, 'the refusal is in the audit trail');
  });

  it(
    'the binlog-push schedule runs the document with operation archive: binlogs reach the repository and the archive lag is measured',
    { skip: missingMariadb() },
    async () => {
      const server = await startMariadb();
      try {
        const parameter = `/cairn/e2e/plans/maria-pitr`;
        const stored = JSON.parse(system.ssm.parameters.get(parameter) ?? '{}') as {
          engineOptions: { connection: Record<string, unknown> };
        };
        stored.engineOptions.connection.port = server.port;
        system.ssm.parameters.set(parameter, JSON.stringify(stored));
        system.ssm.parameters.set(MARIA_PASSWORD_PARAMETER, server.password);
        server.sql(
          'CREATE DATABASE shop; CREATE TABLE shop.orders (id INT PRIMARY KEY, note TEXT); INSERT INTO shop.orders VALUES (1, "first"), (2, "second"); FLUSH BINARY LOGS;',
        );

        // What the schedule sends, from the template: the document, operation archive, the plan, no token and no request.
        const schedule = Object.values(system.resources).find(
          (r) => r.Type === 'AWS::Scheduler::Schedule' && r.Properties.Name === 'cairn-e2e-binlog-push-maria-pitr',
        );
        const input = JSON.parse(resolveIntrinsics((schedule?.Properties.Target as { Input: unknown }).Input)) as {
          Parameters: { operation: string[]; planId: string[] };
        };
        assert.deepEqual(input.Parameters, { operation: ['archive'], planId: ['maria-pitr'] });
        const first = await system.runDocument(input.Parameters.operation[0]!, input.Parameters.planId[0]!);
        assert.equal(first.code, 0, first.output);
        assert.match(first.output, /"operation":"binlog-push"/);

        const repo = await Repository.open(await openStorage(system.repoUrl('maria-pitr'), system.env), PASSPHRASE);
        assert.deepEqual(await LogArchive.streams(repo), ['mariadb-default']);
        const archived = await new LogArchive(repo, 'mariadb-default').read();
        assert.ok(
          archived.records.some((r) => r.kind === 'binlog' && r.binlog?.closed && r.binlog.transactions >= 1),
          JSON.stringify(archived.records.map((r) => [r.name, r.binlog?.transactions])),
        );
        const again = await system.runDocument('archive', 'maria-pitr');
        assert.equal(again.code, 0, again.output);
        assert.equal(
          (await new LogArchive(repo, 'mariadb-default').read()).records.length,
          archived.records.length,
          'a second push archives nothing new',
        );

        const { value } = await captureMetrics(() => archiveLag({ planIds: ['maria-pitr'] }));
        const [lag] = value ?? [];
        assert.equal(lag?.stream, 'mariadb-default');
        assert.ok(lag?.lagSeconds !== undefined && lag.lagSeconds < 600, JSON.stringify(lag));

        // A PostgreSQL plan archives through archive_command: the operation refuses, with its reason, and exits non-zero.
        const pg = await system.runDocument('archive', 'pg-pitr');
        assert.equal(pg.code, 2, pg.output);
        assert.match(pg.output, /does not push binlogs[^\n]*archive_command/);

        // A failure of the push itself keeps its own code and exit code (the push once ran as a nested CLI whose every
        // failure became Cairn.Failure): here the plan's passphrase parameter holds a wrong passphrase.
        system.ssm.parameters.set(PASSPHRASE_PARAMETER, 'not the passphrase of this repository');
        try {
          const wrong = await system.runDocument('archive', 'maria-pitr');
          assert.equal(wrong.code, ExitCode.wrongKey, wrong.output);
          assert.match(wrong.output, /"type":"error","code":"Cairn\.WrongKey"/);
          assert.doesNotMatch(wrong.output, /Cairn\.Failure/);
        } finally {
          system.ssm.parameters.set(PASSPHRASE_PARAMETER, PASSPHRASE);
        }
      } finally {
        await server.stop();
      }
    },
  );
});
