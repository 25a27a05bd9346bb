import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { backup } from '../../agent/commands/backup.ts';
import { Repository, type Who } from '../../agent/core/repository.ts';
import { openStorage } from '../../agent/storage/open.ts';
import { silentProgress } from '../../agent/progress/progress.ts';
import { applyRetention } from '../../functions/apply-retention.ts';
import { SMALL, tempDir } from '../helpers/repo.ts';
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

  it('two instances with one host name keep their own newest snapshot under keepLast 1', async () => {
    const plan = cp.addPlan({
      id: 'fleet',
      engine: 'files',
      engineOptions: { paths: ['/data'] },
      targets: { instanceIds: [A, B], mode: 'each' },
      retention: { keepLast: 1 },
    });
    cp.ssm.parameters.set('/cairn/rstest/fleet/passphrase', PASSPHRASE);
    const who: Who = { host: 'ip-10-0-1-17', user: 'root' };
    const repo = await Repository.init(await openStorage(plan.repository.url), PASSPHRASE, who, SMALL);
    const src = join(work.path, 'src');
    await mkdir(src, { recursive: true });
    const run = async (instance: string, n: number) => {
      await writeFile(join(src, 'f.txt'), `${instance} ${n}\n`);
      return backup(repo, {
        paths: [src],
        excludes: [],
        tags: [`instance:${instance}`],
        who,
        concurrency: 2,
        progress: silentProgress,
        plan: 'fleet',
      });
    };
    const a1 = await run(A, 1);
    const a2 = await run(A, 2);
    const b1 = await run(B, 1);
    const b2 = await run(B, 2);
    const outcome = await applyRetention({ planId: 'fleet' });
    assert.deepEqual(outcome.kept.map((k) => k.id).sort(), [a2.id, b2.id].sort(), 'each instance keeps its newest');
    assert.deepEqual(outcome.forgotten.map((f) => f.id).sort(), [a1.id, b1.id].sort());
  });
});
