import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { backup } from '../../agent/commands/backup.ts';
import { Repository, type Who } from '../../agent/core/repository.ts';
import { openStorage } from '../../agent/storage/open.ts';
import { silentProgress } from '../../agent/progress/progress.ts';
import { applyRetention } from '../../functions/apply-retention.ts';
import { planRestoreHandler } from '../../functions/plan-restore.ts';
import { controlSeal } from '../../functions/runtime.ts';
import { attestSnapshot, attestationKey } from '../../functions/snapshot-attestations.ts';
import { finalizeBackup } from '../../functions/finalize-backup.ts';
import { SMALL, backupDir, tempDir } from '../helpers/repo.ts';
import { startControlPlane, type ControlPlane } from './control-plane.ts';

/**
 * An `each` plan's retention keeps every host's own snapshots. Host names repeat (two VPCs both
 * have an ip-10-0-1-17; cloned images keep theirs), so the groups follow the instance tag the
 * orchestrated agent adds (`instance:<AWS_SSM_INSTANCE_ID>`): two instances of one host name
 * under keepLast 1 keep one snapshot each, where grouping by name kept only the newer
 * instance's and forgot the other's newest backup.
 */
const PASSPHRASE = 'retention sources test passphrase';
const A = 'i-0aaaaaaaaaaaaaaaa';
const B = 'i-0bbbbbbbbbbbbbbbb';

describe('control-plane retention of an each plan: hosts told apart by instance', () => {
  let cp: ControlPlane;
  let work: Awaited<ReturnType<typeof tempDir>>;
  before(async () => {
    cp = await startControlPlane('rstest');
    work = await tempDir('cp-retention-sources');
    process.env.GC_GRACE_SECONDS = '1';
  });
  after(async () => {
    delete process.env.GC_GRACE_SECONDS;
    await cp.stop();
    await work.remove();
  });

  /** An `each` plan over A and B keeping each one's newest, and its new repository. */
  async function fleet(id: string, who: Who): Promise<Repository> {
    const plan = cp.addPlan({
      id,
      engine: 'files',
      engineOptions: { paths: ['/data'] },
      targets: { instanceIds: [A, B], mode: 'each' },
      retention: { keepLast: 1 },
    });
    cp.ssm.parameters.set(`/cairn/rstest/${id}/passphrase`, PASSPHRASE);
    return Repository.init(await openStorage(plan.repository.url), PASSPHRASE, who, SMALL);
  }

  /** A backup of `src` carrying the instance tag the orchestrated agent adds. */
  const tagged = (repo: Repository, src: string, instance: string, who: Who, plan: string) =>
    backup(repo, { paths: [src], excludes: [], tags: [`instance:${instance}`], who, concurrency: 2, progress: silentProgress, plan });

  it('two instances with one host name keep their own newest snapshot under keepLast 1', async () => {
    const who: Who = { host: 'ip-10-0-1-17', user: 'root' };
    const repo = await fleet('fleet', who);
    const src = join(work.path, 'src');
    await mkdir(src, { recursive: true });
    const run = async (instance: string, n: number) => {
      await writeFile(join(src, 'f.txt'), `${instance} ${n}\n`);
      const snapshot = await tagged(repo, src, instance, who, 'fleet');
      // What finalize-backup records once it checked the manifest the run on that instance reported.
      await attestSnapshot(repo.storage, await controlSeal(), instance, snapshot.id);
      return snapshot;
    };
    const a1 = await run(A, 1);
    const a2 = await run(A, 2);
    const b1 = await run(B, 1);
    const b2 = await run(B, 2);
    const outcome = await applyRetention({ planId: 'fleet' });
    assert.deepEqual(outcome.kept.map((k) => k.id).sort(), [a2.id, b2.id].sort(), 'each instance keeps its newest');
    assert.deepEqual(outcome.forgotten.map((f) => f.id).sort(), [a1.id, b1.id].sort());
  });

  it("a host with the key writes snapshots tagged with another instance's id: they are kept but never counted, never chosen for it", async () => {
    cp.ssm.instances.set(A, {});
    cp.ssm.instances.set(B, {});
    const repo = await fleet('forged', { host: 'web-b', user: 'root' });
    const src = join(work.path, 'src-forged');
    await mkdir(src, { recursive: true });
    const snap = async (instance: string, host: string, content: string) => {
      await writeFile(join(src, 'payroll.csv'), content);
      return tagged(repo, src, instance, { host, user: 'root' }, 'forged');
    };
    const b1 = await snap(B, 'web-b', 'real 1\n');
    await attestSnapshot(repo.storage, await controlSeal(), B, b1.id);
    // Host A: B's tag and host name, newer than B's real backup; one it even gets recorded as its own run's.
    const forged1 = await snap(B, 'web-b', 'attacker 1\n');
    const forged2 = await snap(B, 'web-b', 'attacker 2\n');
    await attestSnapshot(repo.storage, await controlSeal(), A, forged2.id);

    const outcome = await applyRetention({ planId: 'forged' });
    assert.deepEqual(outcome.forgotten, [], "B's one real snapshot is its newest: nothing is forgotten for the forgeries");
    const kept = new Map(outcome.kept.map((k) => [k.id, k.reasons.join('; ')]));
    assert.match(kept.get(b1.id) ?? '', /last/);
    for (const id of [forged1.id, forged2.id]) assert.match(kept.get(id) ?? '', /never counted/);

    // Host A reports one of them as its own run's result: finalize-backup refuses to record it as A's.
    const now = new Date().toISOString();
    await assert.rejects(
      finalizeBackup({
        planId: 'forged',
        plan: { instanceId: A },
        agent: { operation: 'backup', planId: 'forged', host: 'web-a', startedAt: now, finishedAt: now, snapshotId: forged1.id },
      }),
      /whose manifest names instance:i-0bbbbbbbbbbbbbbbb: not recorded as this instance's/,
    );
    assert.equal(await repo.storage.stat(attestationKey(A, forged1.id)), undefined);

    const planned = await planRestoreHandler({ planId: 'forged', sourceHost: B, snapshot: 'latest', targetPath: '/srv/restore' });
    assert.equal(planned.snapshot.id, b1.id, "the restore for B takes B's real snapshot, not the newer forgery");

    // Without an instance tag at all, under B's host name: a restore by that name is refused as ambiguous.
    await writeFile(join(src, 'payroll.csv'), 'attacker 3\n');
    await backupDir(repo, src, { who: { host: 'web-b', user: 'root' }, plan: 'forged' });
    await assert.rejects(
      planRestoreHandler({ planId: 'forged', sourceHost: 'web-b', targetInstanceId: B, snapshot: 'latest', targetPath: '/srv/restore' }),
      /names snapshots of more than one source .*untagged, host web-b; instance i-0bbbbbbbbbbbbbbbb/,
    );
    const byId = await planRestoreHandler({ planId: 'forged', sourceHost: B, snapshot: 'latest', targetPath: '/srv/restore' });
    assert.equal(byId.snapshot.id, b1.id);
  });

  it('a restore by host name takes only the snapshots of the instance Systems Manager knows by that name', async () => {
    cp.ssm.instances.set(A, {});
    cp.ssm.instances.set(B, {});
    cp.ssm.hostNames.set(A, 'web-a');
    cp.ssm.hostNames.set(B, 'web-b');
    const repo = await fleet('named', { host: 'web-a', user: 'root' });
    const src = join(work.path, 'src-named');
    await mkdir(src, { recursive: true });
    // A's own run (recorded as A's), but its manifest names the host web-b: a host names itself what it likes.
    await writeFile(join(src, 'f.txt'), 'A pretending\n');
    const pretending = await tagged(repo, src, A, { host: 'web-b', user: 'root' }, 'named');
    await attestSnapshot(repo.storage, await controlSeal(), A, pretending.id);
    await assert.rejects(
      planRestoreHandler({ planId: 'named', sourceHost: 'web-b', snapshot: 'latest', targetPath: '/srv/restore' }),
      /has no good snapshot of host "web-b"/,
    );
    await writeFile(join(src, 'f.txt'), 'B for real\n');
    const real = await tagged(repo, src, B, { host: 'web-b', user: 'root' }, 'named');
    await attestSnapshot(repo.storage, await controlSeal(), B, real.id);
    const planned = await planRestoreHandler({ planId: 'named', sourceHost: 'web-b', snapshot: 'latest', targetPath: '/srv/restore' });
    assert.equal(planned.snapshot.id, real.id);
    assert.equal(planned.targetInstanceId, B);
  });
});
