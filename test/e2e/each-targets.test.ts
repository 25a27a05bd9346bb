import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { LEASE_KEY } from '../../agent/core/layout.ts';
import { acquireRunLease } from '../../agent/core/run-lease.ts';
import { openStorage } from '../../agent/storage/open.ts';
import { hostLeaseKey, hostRecordsSeal, hostRecordsStorage } from '../../functions/host-records.ts';
import { attestationKey } from '../../functions/snapshot-attestations.ts';
import { runCli } from '../helpers/cli.ts';
import { captureMetrics } from '../helpers/emf.ts';
import { makeRandomTree } from '../helpers/tree.ts';
import { PASSPHRASE_PARAMETER, startSystem, type System } from './harness.ts';

/**
 * A plan with `targets.mode: each` (issue 17, point 9): its tag matches three independent
 * hosts, and every one is backed up on its own. The synthesized Backup machine under
 * aws-local-stepfunctions, the real handlers, the real document script and agent bundle,
 * s3rver. The SSM stand-in knows three instances by tag, each with its own host name; the
 * harness runs each instance's command as a machine of its own (a UTS namespace with that
 * host name, its own home and agent install, AWS_SSM_INSTANCE_ID as the SSM Agent sets it).
 */
const PASSPHRASE = 'e2e passphrase that is long enough';
const TAG = { key: 'cairn:fleet', value: 'orders-shards' };
const HOSTS = [
  { instanceId: 'i-0e2e00000000000a1', hostName: 'shard-a' },
  { instanceId: 'i-0e2e00000000000b2', hostName: 'shard-b' },
  { instanceId: 'i-0e2e00000000000c3', hostName: 'shard-c' },
];
const PLAN_ID = 'shards';

interface BackupOutput {
  plan: { mode: string; hosts: Array<{ instanceId: string }>; skippedHosts: Array<{ instanceId: string; reason: string }> };
  hostResults: Array<{ instanceId: string; status: string; snapshotId?: string; host?: string }>;
  retention: { kept: Array<{ id: string; host: string }>; forgotten: Array<{ id: string; host: string }> };
}

describe('a targets.mode each plan end to end', { timeout: 600_000 }, () => {
  let system: System;
  let work: string;
  const cliEnv = (): Record<string, string> => ({ ...(system.env as Record<string, string>), CAIRN_PASSWORD: PASSPHRASE });
  const snapshots = async (): Promise<Array<{ id: string; time: string; host: string; tags: string[] }>> => {
    const r = await runCli(['snapshots', '--json', '--repo', system.repoUrl(PLAN_ID)], cliEnv());
    assert.equal(r.code, 0, r.stderr);
    const line = r.stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { type: string; snapshots?: Array<{ id: string; time: string; host: string; tags: string[] }> })
      .find((l) => l.type === 'snapshots');
    return line?.snapshots ?? [];
  };

  before(async () => {
    // The harness gives each instance its own host name in a UTS namespace: that needs unshare and CAP_SYS_ADMIN.
    const probe = spawnSync('unshare', ['--uts', 'hostname', 'probe'], { encoding: 'utf8' });
    assert.equal(probe.status, 0, `this test needs unshare --uts (util-linux, run as root): ${probe.stderr}${String(probe.error ?? '')}`);
    work = await mkdtemp(join(tmpdir(), 'cairn-e2e-each-'));
    const data = join(work, 'data');
    await makeRandomTree(data, 17, { files: 12, maxFileSize: 100_000 });
    system = await startSystem([
      {
        id: PLAN_ID,
        targets: { tag: TAG, mode: 'each' },
        engine: 'files',
        engineOptions: { paths: [data] },
        schedule: { expression: 'rate(1 day)' },
        retention: { keepLast: 1 },
        keySource: { passphraseParameter: PASSPHRASE_PARAMETER },
        rpo: '26h',
        timeouts: { heartbeatSeconds: 30, timeoutSeconds: 900 },
      },
    ]);
    system.ssm.parameters.set(PASSPHRASE_PARAMETER, PASSPHRASE);
    // Three instances carry the plan's tag; the harness's default instance does not.
    system.ssm.instances.clear();
    for (const h of HOSTS) {
      system.ssm.instances.set(h.instanceId, { [TAG.key]: TAG.value });
      system.ssm.hostNames.set(h.instanceId, h.hostName);
    }
  });
  after(async () => {
    await system.stop();
    await rm(work, { recursive: true, force: true });
  });

  it('the Backup machine maps over the hosts: one RunHostAgent per host, with its heartbeat and catch', () => {
    const backup = system.definitions.Backup as { States: Record<string, Record<string, unknown>> };
    const choice = backup.States['EachHost?'] as { Choices: Array<{ Next: string }>; Default: string };
    assert.equal(choice.Choices[0]?.Next, 'BackupHosts');
    assert.equal(choice.Default, 'RunAgent', 'an `any` plan keeps the single RunAgent');
    const map = backup.States.BackupHosts as {
      Type: string;
      ItemsPath: string;
      ItemSelector: Record<string, string>;
      ItemProcessor: { StartAt: string; States: Record<string, Record<string, unknown>> };
      Catch: unknown[];
    };
    assert.equal(map.Type, 'Map');
    assert.equal(map.ItemsPath, '$.plan.hosts');
    assert.deepEqual(map.ItemSelector, { 'planId.$': '$.planId', 'plan.$': '$$.Map.Item.Value' });
    assert.deepEqual(map.Catch, [{ ErrorEquals: ['States.ALL'], ResultPath: '$.error', Next: 'RecordFailure' }]);
    const inner = map.ItemProcessor.States;
    assert.equal(map.ItemProcessor.StartAt, 'RunHostAgent');
    const run = inner.RunHostAgent as Record<string, unknown> & { Parameters: Record<string, unknown> };
    assert.equal(run.Resource, 'arn:aws:states:::aws-sdk:ssm:sendCommand.waitForTaskToken');
    assert.equal(run.Parameters['InstanceIds.$'], '$.plan.instanceIds');
    assert.equal(run.HeartbeatSecondsPath, '$.plan.heartbeatSeconds');
    for (const name of ['RunHostAgent', 'FinalizeHostBackup'])
      assert.deepEqual(inner[name]?.Catch, [{ ErrorEquals: ['States.ALL'], ResultPath: '$.error', Next: 'RecordHostFailure' }], name);
    assert.equal((inner.RecordHostFailure?.Parameters as Record<string, unknown>)['instanceId.$'], '$.plan.instanceId');
  });

  it('an each plan targeting three instances produces three snapshots, and retention keeps each host its own', async () => {
    const first = (await system.run('Backup', { planId: PLAN_ID, scheduledTime: '2026-11-20T02:00:00Z' })) as BackupOutput;
    assert.equal(first.plan.mode, 'each');
    assert.deepEqual(
      first.plan.hosts.map((h) => h.instanceId),
      HOSTS.map((h) => h.instanceId),
    );
    assert.deepEqual(
      first.hostResults.map((r) => [r.instanceId, r.status, r.host]),
      HOSTS.map((h) => [h.instanceId, 'ok', h.hostName]),
      'each instance backed up as itself',
    );
    const firstIds = first.hostResults.map((r) => r.snapshotId);
    assert.equal(new Set(firstIds).size, 3, 'three snapshots');
    assert.deepEqual((await snapshots()).map((s) => s.host).sort(), ['shard-a', 'shard-b', 'shard-c']);
    // Each carries the instance that made it (AWS_SSM_INSTANCE_ID): retention groups by it, host names may repeat.
    assert.deepEqual(
      (await snapshots()).map((s) => [s.host, s.tags]).sort(),
      HOSTS.map((h) => [h.hostName, [`instance:${h.instanceId}`]]),
    );
    assert.equal(first.retention.forgotten.length, 0, "keepLast 1 keeps every host's only snapshot");

    const second = (await system.run('Backup', { planId: PLAN_ID, scheduledTime: '2026-11-21T02:00:00Z' })) as BackupOutput;
    const secondIds = second.hostResults.map((r) => r.snapshotId);
    assert.deepEqual(
      second.hostResults.map((r) => r.status),
      ['ok', 'ok', 'ok'],
    );
    // Ungrouped, keepLast 1 would keep one snapshot of the plan; grouped by host it keeps each host's newest.
    assert.deepEqual(second.retention.kept.map((k) => k.id).sort(), [...secondIds].sort());
    assert.deepEqual(second.retention.forgotten.map((k) => k.id).sort(), [...firstIds].sort());
    const left = await snapshots();
    assert.deepEqual(
      left.map((s) => [s.host, s.id]).sort(),
      second.hostResults.map((r) => [r.host, r.snapshotId]).sort(),
      "each host's own newest snapshot is what is left",
    );

    const storage = await openStorage(system.repoUrl(PLAN_ID), system.env);
    for (const h of HOSTS) assert.equal(await storage.stat(hostLeaseKey(h.instanceId)), undefined, `${h.hostName}'s lease was released`);
    // finalize-backup recorded which instance made each snapshot; retention removed the forgotten ones' records.
    const records: string[] = [];
    for await (const o of storage.list('orchestration/hosts/')) if (o.key.includes('/snapshots/')) records.push(o.key);
    assert.deepEqual(records.sort(), second.hostResults.map((r) => attestationKey(r.instanceId, r.snapshotId ?? '')).sort());
    assert.equal(await storage.stat(LEASE_KEY), undefined, 'an each plan takes no plan-wide lease');
  });

  it('a host whose own lease is held is skipped; the others back up', async () => {
    const storage = await openStorage(system.repoUrl(PLAN_ID), system.env);
    const busy = HOSTS[1]!;
    // A genuine lease of a run still going on shard-b, as plan-backup writes it for that host.
    const held = await acquireRunLease(
      hostRecordsStorage(storage, busy.instanceId),
      { planId: PLAN_ID, executionId: 'arn:aws:states:eu-central-1:123456789012:execution:other:busy', leaseSeconds: 3600 },
      hostRecordsSeal(system.seal, busy.instanceId),
    );
    assert.equal(held.acquired, true);
    const out = (await system.run('Backup', { planId: PLAN_ID, scheduledTime: '2026-11-22T02:00:00Z' })) as BackupOutput;
    assert.deepEqual(
      out.plan.skippedHosts.map((h) => h.instanceId),
      [busy.instanceId],
    );
    assert.match(out.plan.skippedHosts[0]?.reason ?? '', /still running: execution .*busy/);
    assert.deepEqual(
      out.hostResults.map((r) => [r.host, r.status]),
      [
        ['shard-a', 'ok'],
        ['shard-c', 'ok'],
      ],
    );
    assert.ok(await storage.stat(hostLeaseKey(busy.instanceId)), "the other run's lease is left alone");
    const left = await snapshots();
    assert.equal(left.length, 3, "shard-b's snapshot stays: its group still has only its own newest");
    await storage.delete(hostLeaseKey(busy.instanceId));
  });

  it('a restore of an each plan must name the source host: refused at PlanRestore naming the field; with it, that host’s snapshot', async () => {
    const target = join(work, 'restored');
    const agentRuns = system.agentLogs.length;
    for (const input of [
      { planId: PLAN_ID, targetPath: target },
      { planId: PLAN_ID, targetPath: target, dryRun: true },
    ]) {
      const { error, metrics } = await captureMetrics(() => system.run('Restore', input));
      assert.ok(error instanceof Error, 'the execution failed');
      const text = `${error.name} ${error.message} ${JSON.stringify((error as { cause?: unknown }).cause ?? '')}`;
      assert.match(text, /Cairn\.InvalidInput/);
      assert.match(text, /sourceHost: required, plan shards backs up each of its hosts on its own/);
      assert.ok(
        metrics.some((m) => 'RestoreFailed' in m),
        'the refusal is recorded like any failure',
      );
    }
    assert.equal(system.agentLogs.length, agentRuns, 'no host was asked to restore anything');

    const dry = (await system.run('Restore', { planId: PLAN_ID, sourceHost: 'shard-b', targetPath: target, dryRun: true })) as {
      snapshot: { id: string };
      sourceHost: string;
      targetInstanceId: string;
    };
    const ofB = (await snapshots()).filter((s) => s.host === 'shard-b');
    assert.equal(dry.snapshot.id, ofB.at(-1)?.id, "latest means shard-b's newest");
    assert.equal(dry.sourceHost, 'shard-b');
    assert.equal(dry.targetInstanceId, HOSTS[1]!.instanceId, 'the default target is the instance Systems Manager names shard-b');

    // Host names may repeat: the source can be named by instance id too (the snapshots' instance tag).
    const byId = (await system.run('Restore', { planId: PLAN_ID, sourceHost: HOSTS[2]!.instanceId, targetPath: target, dryRun: true })) as {
      snapshot: { id: string };
      targetInstanceId: string;
    };
    const ofC = (await snapshots()).filter((s) => s.tags.includes(`instance:${HOSTS[2]!.instanceId}`));
    assert.equal(byId.snapshot.id, ofC.at(-1)?.id, "latest means that instance's newest");
    assert.equal(byId.targetInstanceId, HOSTS[2]!.instanceId, 'and the default target is that instance');
  });
});
