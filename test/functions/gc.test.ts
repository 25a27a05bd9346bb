import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { backup } from '../../agent/commands/backup.ts';
import { verify } from '../../agent/commands/verify.ts';
import { newGenerationName, writeGeneration } from '../../agent/core/gc-generation.ts';
import { writeWorkList } from '../../agent/core/gc-work-list.ts';
import { PACKS_PREFIX, collectionKey, gcGenerationKey, idFromKey, packKey } from '../../agent/core/layout.ts';
import { PieceType, type IndexEntry } from '../../agent/core/pack.ts';
import { PieceReader } from '../../agent/core/piece-reader.ts';
import { collectReferences } from '../../agent/core/references.ts';
import { Repository, type Who } from '../../agent/core/repository.ts';
import type { Snapshot } from '../../agent/core/snapshot.ts';
import type { DeletableStorage } from '../../agent/core/storage.ts';
import { openStorage } from '../../agent/storage/open.ts';
import { silentProgress } from '../../agent/progress/progress.ts';
import { applyRetention, gcClock } from '../../functions/apply-retention.ts';
import { controlSeal } from '../../functions/runtime.ts';
import { gcSweep } from '../../functions/gc-sweep.ts';
import { LockBlindStorage } from '../helpers/gc-storages.ts';
import { SMALL, restoreTo, tempDir } from '../helpers/repo.ts';
import { describeTree } from '../helpers/tree.ts';
import { startControlPlane, type ControlPlane } from './control-plane.ts';

/**
 * The control plane's garbage collection (issue 16): apply-retention marks,
 * waits the grace by the storage's clock (s3rver's; GC_GRACE_SECONDS=1 here,
 * and the wait is where a test runs a backup), settles, and the sweep deletes
 * only what a sealed, settled generation marked. Against s3rver and the SSM
 * stand-in, with the real handlers.
 */
const PASSPHRASE = 'control plane gc test passphrase';
const host: Who = { host: 'i-0123456789abcdef0', user: 'root' };

describe('control-plane garbage collection (issue 16)', () => {
  let cp: ControlPlane;
  let work: Awaited<ReturnType<typeof tempDir>>;
  const realWait = gcClock.wait;
  before(async () => {
    cp = await startControlPlane('gctest');
    work = await tempDir('cp-gc');
    process.env.GC_GRACE_SECONDS = '1';
  });
  after(async () => {
    gcClock.wait = realWait;
    delete process.env.GC_GRACE_SECONDS;
    await cp.stop();
    await work.remove();
  });

  async function planRepo(id: string): Promise<{ storage: DeletableStorage; repo: Repository; src: string }> {
    const plan = cp.addPlan({ id, engine: 'files', engineOptions: { paths: ['/data'] }, retention: { keepLast: 1 } });
    cp.ssm.parameters.set(`/cairn/gctest/${id}/passphrase`, PASSPHRASE);
    const storage = await openStorage(plan.repository.url);
    const repo = await Repository.init(storage, PASSPHRASE, host, SMALL);
    const src = join(work.path, id);
    await mkdir(src, { recursive: true });
    return { storage, repo, src };
  }

  const backupOf = (repo: Repository, src: string, planId: string): Promise<Snapshot> =>
    backup(repo, { paths: [src], excludes: [], tags: [], who: host, concurrency: 2, progress: silentProgress, plan: planId });

  async function packsOn(storage: DeletableStorage): Promise<Set<string>> {
    const ids = new Set<string>();
    for await (const object of storage.list(PACKS_PREFIX)) {
      const id = idFromKey(object.key, PACKS_PREFIX);
      if (id) ids.add(id);
    }
    return ids;
  }

  /** Runs the GC Map the way the state machine does: one gc-sweep per prefix of the retention outcome. */
  async function sweep(planId: string, outcome: Awaited<ReturnType<typeof applyRetention>>): Promise<number> {
    let deleted = 0;
    for (const prefix of outcome.gc.prefixes) deleted += (await gcSweep({ planId, generation: outcome.gc.generation, prefix })).deleted;
    return deleted;
  }

  async function assertWhole(repo: Repository, snapshot: Snapshot, src: string, label: string): Promise<void> {
    const report = await verify(repo, { readData: 1, concurrency: 2, progress: silentProgress, who: host });
    assert.equal(report.ok, true, `check is clean ${label}: ${JSON.stringify(report.problems)}`);
    const target = join(work.path, `restore-${randomBytes(4).toString('hex')}`);
    await restoreTo(repo, snapshot.id, target);
    assert.deepEqual(await describeTree(target), await describeTree(src), `restore ${label}`);
  }

  it('a backup committed during the grace keeps the pieces the mark named, and the sweep deletes only the rest', async () => {
    const { storage, repo, src } = await planRepo('gc-grace');
    const a = randomBytes(2_500_000);
    await writeFile(join(src, 'a.bin'), a);
    await writeFile(join(src, 'b.bin'), randomBytes(300_000));
    await backupOf(repo, src, 'gc-grace');
    await rm(join(src, 'a.bin'));
    await writeFile(join(src, 'c.bin'), randomBytes(300_000));
    await backupOf(repo, src, 'gc-grace');

    // During the grace, a.bin comes back and a backup commits it: its pieces were marked.
    let during: Snapshot | undefined;
    gcClock.wait = async (ms) => {
      if (!during) {
        await writeFile(join(src, 'a.bin'), a);
        // Through a view that does not show retention's exclusive lock: GC must not depend on it.
        during = await backupOf(await Repository.open(new LockBlindStorage(storage), PASSPHRASE), src, 'gc-grace');
        return;
      }
      await realWait(ms); // the storage's clock (s3rver's) has less than a second to go
    };
    const outcome = await applyRetention({ planId: 'gc-grace' });
    assert.equal(outcome.forgotten.length, 1, 'keepLast 1 forgot the first backup');
    assert.ok(during, 'a backup ran during the grace');
    assert.ok(during.summary.bytesAdded >= 2_000_000, `it uploaded the marked pieces of a.bin again (${during.summary.bytesAdded})`);
    // The backup's own copies are confirmed by their packs' trailers: the marked packs go all the same.
    assert.ok(outcome.gc.packs >= 1, `the first backup's packs were settled for deletion: ${JSON.stringify(outcome.gc)}`);
    assert.ok((await sweep('gc-grace', outcome)) >= 1);
    await assertWhole(repo, during, src, 'the snapshot committed during the grace');

    // The next run finds the rest of the first backup's data garbage; the kept snapshot stays whole.
    gcClock.wait = realWait;
    const next = await applyRetention({ planId: 'gc-grace' });
    await sweep('gc-grace', next);
    await assertWhole(repo, during, src, 'after the next retention run');
  });

  it('an index file placing data pieces in a junk pack makes retention delete no pack a kept snapshot uses', async () => {
    const { storage, repo, src } = await planRepo('gc-forged');
    await writeFile(join(src, 'a.bin'), randomBytes(2_500_000));
    await writeFile(join(src, 'b.bin'), randomBytes(300_000));
    await backupOf(repo, src, 'gc-forged');
    await rm(join(src, 'a.bin'));
    await writeFile(join(src, 'c.bin'), randomBytes(300_000));
    const kept = await backupOf(repo, src, 'gc-forged');
    const index = await repo.loadIndex();
    const used = await collectReferences([kept], new PieceReader(repo, index));
    const usedPacks = new Set([...index.entries()].filter((e) => used.has(e.id)).map((e) => e.packId));

    // A host with the key and create-only rights: a junk pack and an index file placing every data piece in it.
    const junk = randomBytes(32).toString('hex');
    await storage.put(packKey(junk), randomBytes(4096), { ifAbsent: true });
    const forged: IndexEntry[] = [...index.entries()]
      .filter((e) => e.type === PieceType.data)
      .map((e) => ({ ...e, packId: junk, frameOffset: 0, frameLength: 64, offsetInFrame: 0 }));
    await repo.writeIndex(forged);

    gcClock.wait = realWait;
    const outcome = await applyRetention({ planId: 'gc-forged' });
    assert.ok(outcome.gc.packs >= 1, `the first backup's own data was collected: ${JSON.stringify(outcome.gc)}`);
    assert.ok((await sweep('gc-forged', outcome)) >= 1);
    const left = await packsOn(storage);
    for (const pack of usedPacks) assert.ok(left.has(pack), `pack ${pack}, which the kept snapshot uses, is still there`);
    const target = join(work.path, 'restore-forged');
    await restoreTo(repo, kept.id, target);
    assert.deepEqual(await describeTree(target), await describeTree(src));
  });

  it('the sweep deletes nothing a work list names unless a sealed, settled generation marked it', async () => {
    const { storage, repo, src } = await planRepo('gc-list');
    await writeFile(join(src, 'a.bin'), randomBytes(500_000));
    const snapshot = await backupOf(repo, src, 'gc-list');
    const packs = [...(await packsOn(storage))];
    // Were a host able to create objects under orchestration/gc/ (the bucket policy denies it): a plain list naming every pack …
    const forged = { generation: 'forged-list', planId: 'gc-list', created: new Date().toISOString(), packs };
    await storage.put(collectionKey('forged-list'), Buffer.from(JSON.stringify(forged)), { ifAbsent: true });
    for (const prefix of new Set(packs.map((p) => p.slice(0, 2))))
      await assert.rejects(gcSweep({ planId: 'gc-list', generation: 'forged-list', prefix }), {
        code: 'Cairn.Damaged',
        message: /carries no seal.*deletes nothing/,
      });
    // … and even one under the control plane's own seal deletes nothing no sealed, settled generation marked.
    await writeWorkList(storage, await controlSeal(), { ...forged, generation: 'sealed-list' });
    for (const prefix of new Set(packs.map((p) => p.slice(0, 2)))) {
      const result = await gcSweep({ planId: 'gc-list', generation: 'sealed-list', prefix });
      assert.equal(result.deleted, 0);
    }
    assert.deepEqual([...(await packsOn(storage))].sort(), packs.sort());
    await assertWhole(repo, snapshot, src, 'after a forged work list');
  });

  it('a GC mark a host forged (the repository key, create-only rights) deletes nothing a kept snapshot uses, and wedges nothing', async () => {
    const { storage, repo, src } = await planRepo('gc-forged-mark');
    await writeFile(join(src, 'a.bin'), randomBytes(2_000_000));
    await backupOf(repo, src, 'gc-forged-mark');
    await rm(join(src, 'a.bin'));
    await writeFile(join(src, 'b.bin'), randomBytes(1_500_000));
    const kept = await backupOf(repo, src, 'gc-forged-mark');

    // Sealed with the repository key, as the control plane's own marks are: it claims every
    // snapshot was seen and every pack (trees' included) is unused.
    const hostRepo = await Repository.open(storage, PASSPHRASE);
    const index = await hostRepo.loadIndex();
    const forged = newGenerationName();
    await writeGeneration(hostRepo, {
      generation: forged,
      created: new Date().toISOString(),
      by: { host: 'lambda:retention', user: 'cairn-retention', operation: 'retention' },
      seen: (await hostRepo.listSnapshots()).snapshots.map((s) => s.id).sort(),
      packs: [...new Set([...index.entries()].map((e) => e.packId))].sort(),
      pieces: [],
    });

    // The run forgets the first backup and marks its own garbage; the forged mark, stored before that
    // mark, is as due as it when the grace has passed (the function's own wait, by s3rver's clock).
    gcClock.wait = realWait;
    const outcome = await applyRetention({ planId: 'gc-forged-mark' });
    assert.equal(outcome.forgotten.length, 1);
    await sweep('gc-forged-mark', outcome);
    await assertWhole(repo, kept, src, 'after retention met the forged mark');
    assert.ok((await storage.stat(gcGenerationKey(forged))) !== undefined, 'the forged mark is left pending, never settled');
    const next = await applyRetention({ planId: 'gc-forged-mark' });
    await sweep('gc-forged-mark', next);
    await assertWhole(repo, kept, src, 'after the next run');
  });
});
