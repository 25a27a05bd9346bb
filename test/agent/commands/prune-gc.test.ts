import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { backup, type BackupOptions } from '../../../agent/commands/backup.ts';
import { prune, type PruneOptions } from '../../../agent/commands/prune.ts';
import { removeLocks } from '../../../agent/commands/unlock.ts';
import { verify } from '../../../agent/commands/verify.ts';
import { CairnError } from '../../../agent/core/errors.ts';
import { analyzeGarbage } from '../../../agent/core/garbage.ts';
import { markGeneration } from '../../../agent/core/gc-collect.ts';
import { listGenerations, newGenerationName, writeGeneration, writeSwept } from '../../../agent/core/gc-generation.ts';
import { GC_PREFIX, PACKS_PREFIX, gcGenerationKey, idFromKey, snapshotKey } from '../../../agent/core/layout.ts';
import { Repository, type Who } from '../../../agent/core/repository.ts';
import { silentProgress } from '../../../agent/progress/progress.ts';
import { HookedStorage, LockBlindStorage } from '../../helpers/gc-storages.ts';
import { MemoryStorage } from '../../helpers/memory-storage.ts';
import { PASSPHRASE, SMALL, restoreTo, tempDir } from '../../helpers/repo.ts';
import { describeTree } from '../../helpers/tree.ts';

/**
 * Issue 16, item 1, as it applies to garbage collection: prune collecting
 * while a backup runs — its host's clock 10 minutes slow, its lock gone (an
 * operator's `unlock --all`, or a lock view that does not show it) — loses
 * nothing. The two-phase collection (mark, grace by the storage's clock,
 * settle) and the backup's guard keep every committed snapshot whole without
 * any help from leases. The storage's clock is injected (MemoryStorage `now`);
 * prune's grace is waited through an injected `wait` that advances it.
 */
const MINUTE = 60_000;
const operator: Who = { host: 'ops-host', user: 'ops' };
const slowHost: Who = { host: 'slow-host', user: 'backup' };

function isCode(code: string, pattern?: RegExp): (error: unknown) => boolean {
  return (error) => {
    assert.ok(error instanceof CairnError, `a CairnError, got ${String(error)}`);
    assert.equal(error.code, code, error.message);
    if (pattern) assert.match(error.message, pattern);
    return true;
  };
}

describe('two-phase garbage collection (issue 16)', () => {
  let work: Awaited<ReturnType<typeof tempDir>>;
  before(async () => {
    work = await tempDir('prune-gc');
  });
  after(() => work.remove());

  async function setup(name: string): Promise<{ storage: MemoryStorage; repo: Repository; clock: { t: number }; src: string }> {
    const clock = { t: Date.parse('2026-06-01T00:00:00Z') };
    const storage = new MemoryStorage({ now: () => clock.t });
    const repo = await Repository.init(storage, PASSPHRASE, operator, SMALL);
    const src = join(work.path, name);
    await mkdir(src, { recursive: true });
    await writeFile(join(src, 'a.bin'), randomBytes(150_000));
    await writeFile(join(src, 'b.bin'), randomBytes(150_000));
    return { storage, repo, clock, src };
  }

  const backupOptions = (src: string, who: Who, now: () => number): BackupOptions & { now: () => number } => ({
    paths: [src],
    excludes: [],
    tags: [],
    who,
    concurrency: 2,
    progress: silentProgress,
    now,
  });

  const pruneOptions = (clock: { t: number }, wait?: (ms: number) => Promise<void>): PruneOptions => ({
    who: operator,
    progress: silentProgress,
    concurrency: 2,
    dryRun: false,
    maxUnused: 0.05,
    now: () => clock.t,
    graceMs: 2 * MINUTE,
    wait:
      wait ??
      (async (ms) => {
        clock.t += ms;
      }),
  });

  async function assertWhole(repo: Repository, snapshotId: string, src: string, label: string): Promise<void> {
    const report = await verify(repo, { readData: 1, concurrency: 2, progress: silentProgress, who: operator });
    assert.equal(report.ok, true, `check is clean ${label}: ${JSON.stringify(report.problems)}`);
    const target = join(work.path, `restore-${label.replace(/\W+/g, '-')}-${randomBytes(3).toString('hex')}`);
    await restoreTo(repo, snapshotId, target);
    assert.deepEqual(await describeTree(target), await describeTree(src), `restore ${label}`);
  }

  it('a host 10 minutes slow backs up while an operator unlocks everything and prunes: the backup fails before committing, and its rerun restores', async () => {
    const { storage, repo, clock, src } = await setup('slow');
    const first = await backup(
      repo,
      backupOptions(src, slowHost, () => clock.t - 10 * MINUTE),
    );
    // The first snapshot is forgotten: all of its pieces are garbage, and the next backup reuses them.
    await storage.delete(snapshotKey(first.id));
    await writeFile(join(src, 'c.bin'), randomBytes(100_000));

    let pruned: Awaited<ReturnType<typeof prune>> | undefined;
    // When the slow host uploads its first pack (a.bin and b.bin were reused by then), the operator
    // runs `unlock --all` and prune, which marks, waits its grace and deletes the first backup's packs.
    // The backup's lease is still live by the storage's clock when it commits: only GC's own
    // protocol stands between it and a snapshot of deleted data.
    const hooked = new HookedStorage(storage, PACKS_PREFIX, async () => {
      await removeLocks(repo, storage, { who: operator, progress: silentProgress, all: true });
      pruned = await prune(repo, storage, pruneOptions(clock));
    });
    const slowRepo = await Repository.open(hooked, PASSPHRASE);
    await assert.rejects(
      backup(
        slowRepo,
        backupOptions(src, slowHost, () => clock.t - 10 * MINUTE),
      ),
      isCode('Cairn.Locked', /garbage collection/),
    );
    assert.ok(pruned && pruned.packsDeleted > 0, `prune deleted the first backup's packs: ${JSON.stringify(pruned)}`);
    assert.deepEqual((await repo.listSnapshots()).snapshots, [], 'the backup committed nothing');

    const rerun = await backup(
      repo,
      backupOptions(src, slowHost, () => clock.t - 10 * MINUTE),
    );
    await assertWhole(repo, rerun.id, src, 'after the rerun');
  });

  it('a backup that runs during the grace (its lock unseen by prune) uploads the marked pieces again, and the sweep keeps what it committed', async () => {
    const { storage, repo, clock, src } = await setup('grace');
    const first = await backup(
      repo,
      backupOptions(src, slowHost, () => clock.t - 10 * MINUTE),
    );
    await storage.delete(snapshotKey(first.id));
    let during: Awaited<ReturnType<typeof backup>> | undefined;
    const blind = new LockBlindStorage(storage);
    const blindRepo = await Repository.open(blind, PASSPHRASE);
    const report = await prune(
      repo,
      storage,
      pruneOptions(clock, async (ms) => {
        if (!during)
          during = await backup(
            blindRepo,
            backupOptions(src, slowHost, () => clock.t - 10 * MINUTE),
          );
        clock.t += ms;
      }),
    );
    assert.ok(during, 'the backup ran during the grace');
    assert.ok(during.summary.bytesAdded > 250_000, `it uploaded the marked pieces again (${during.summary.bytesAdded} bytes added)`);
    assert.ok(report.generations.marked, 'prune marked a generation');
    assert.deepEqual(report.generations.settled, [report.generations.marked]);
    assert.equal(report.packsRescued, 0, 'its new copies are confirmed by their own trailers, so the marked packs need not stay');
    assert.ok(report.packsDeleted > 0);
    await assertWhole(repo, during.id, src, 'the snapshot committed during the grace');
    // A later prune finds the rest garbage and leaves the snapshot whole.
    await prune(repo, storage, pruneOptions(clock));
    await assertWhole(repo, during.id, src, 'after a second prune');
  });

  it('a mark that appears while a backup runs and names pieces it reused fails the backup cleanly; the rerun uploads them and survives the sweep', async () => {
    const { storage, repo, clock, src } = await setup('mark');
    const first = await backup(
      repo,
      backupOptions(src, slowHost, () => clock.t),
    );
    await storage.delete(snapshotKey(first.id));
    await writeFile(join(src, 'c.bin'), randomBytes(100_000));
    const hooked = new HookedStorage(storage, PACKS_PREFIX, async () => {
      const analysis = await analyzeGarbage(repo, storage, { maxUnused: 0.05, concurrency: 2 });
      const mark = await markGeneration(
        { repo, storage, who: operator, concurrency: 2, assertHeld: () => undefined, warn: () => undefined },
        analysis,
        analysis.remove,
        'test',
      );
      assert.ok(mark && mark.pieces.length > 0, 'the mark names the first backup pieces');
    });
    await assert.rejects(
      backup(
        await Repository.open(hooked, PASSPHRASE),
        backupOptions(src, slowHost, () => clock.t),
      ),
      isCode('Cairn.Locked', /marked \d+ piece\(s\) this backup reused/),
    );
    const rerun = await backup(
      repo,
      backupOptions(src, slowHost, () => clock.t),
    );
    assert.ok(rerun.summary.bytesAdded > 250_000, 'the rerun uploaded the marked pieces again');
    clock.t += 10 * MINUTE;
    const report = await prune(repo, storage, pruneOptions(clock));
    assert.ok(report.generations.settled.length >= 1, 'the pending mark was settled');
    await assertWhole(repo, rerun.id, src, 'after the mark was swept');
    assert.ok(
      [...storage.objects.keys()].some((k) => k.startsWith(GC_PREFIX)),
      'generation records stay a grace after their sweep',
    );
    clock.t += 10 * MINUTE;
    await prune(repo, storage, pruneOptions(clock));
    const packs = [...storage.objects.keys()].filter((k) => idFromKey(k, PACKS_PREFIX));
    assert.ok(packs.length > 0);
    await assertWhole(repo, rerun.id, src, 'after the records were tidied');
  });

  it('an unreadable object under gc/ is skipped with a warning by backups and prune', async () => {
    const { storage, repo, clock, src } = await setup('junk');
    await storage.put(`${GC_PREFIX}20260101T000000Z-0123456789abcdef`, randomBytes(200), { ifAbsent: true });
    const warnings: string[] = [];
    const progress = { ...silentProgress, warn: (message: string) => void warnings.push(message) };
    const snapshot = await backup(repo, { ...backupOptions(src, slowHost, () => clock.t), progress });
    assert.ok(
      warnings.some((w) => /gc\/20260101T000000Z-0123456789abcdef.*cannot be read/.test(w)),
      warnings.join('\n'),
    );
    await prune(repo, storage, { ...pruneOptions(clock), progress });
    await assertWhole(repo, snapshot.id, src, 'beside a junk gc record');
  });

  it('a mark forged by a host with the key (seeing every snapshot, naming every pack) is never settled, then removed once stale', async () => {
    const { storage, repo, clock, src } = await setup('forged-mark');
    const first = await backup(
      repo,
      backupOptions(src, slowHost, () => clock.t),
    );
    await writeFile(join(src, 'c.bin'), randomBytes(150_000));
    const kept = await backup(
      repo,
      backupOptions(src, slowHost, () => clock.t),
    );
    // Garbage for prune's own mark: the first snapshot is forgotten (its c.bin-less tree is unused).
    await storage.delete(snapshotKey(first.id));

    // The host: the repository key and create-only rights. Its mark claims the snapshots were seen
    // and every pack, trees' included, is unused.
    const hostRepo = await Repository.open(storage, PASSPHRASE);
    const index = await hostRepo.loadIndex();
    const forged = newGenerationName(new Date(clock.t - 10 * MINUTE));
    await writeGeneration(hostRepo, {
      generation: forged,
      created: new Date(clock.t).toISOString(),
      by: { host: 'ops-host', user: 'ops', operation: 'prune' },
      seen: (await hostRepo.listSnapshots()).snapshots.map((s) => s.id).sort(),
      packs: [...new Set([...index.entries()].map((e) => e.packId))].sort(),
      pieces: [],
    });
    clock.t += 10 * MINUTE; // the forged mark is due by the storage's clock

    const warnings: string[] = [];
    const progress = { ...silentProgress, warn: (message: string) => void warnings.push(message) };
    const report = await prune(repo, storage, { ...pruneOptions(clock), progress });
    assert.ok(report.generations.marked, 'prune marked its own garbage');
    assert.deepEqual(report.generations.settled, [report.generations.marked], 'and settled that mark only');
    await assertWhole(repo, kept.id, src, 'after prune met the forged mark');
    assert.ok(storage.objects.has(gcGenerationKey(forged)), 'the forged mark stays pending: nothing acts on it');

    // A day later (by the storage's clock) the next collection removes it, saying so; still nothing lost.
    clock.t += 25 * 60 * MINUTE;
    await prune(repo, storage, { ...pruneOptions(clock), progress });
    assert.ok(!storage.objects.has(gcGenerationKey(forged)), 'the stale mark was removed');
    assert.ok(
      warnings.some((w) => w.includes(`removed the GC mark ${forged}`) && /nothing it named was deleted/.test(w)),
      warnings.join('\n'),
    );
    await assertWhole(repo, kept.id, src, 'after the stale mark was removed');
  });

  it("a .swept record a host forges for prune's own pending mark does not stop the collection", async () => {
    const { storage, repo, clock, src } = await setup('forged-swept');
    // Data only the first snapshot holds: its packs are garbage once it is forgotten.
    await writeFile(join(src, 'only-first.bin'), randomBytes(1_500_000));
    const first = await backup(
      repo,
      backupOptions(src, slowHost, () => clock.t),
    );
    await rm(join(src, 'only-first.bin'));
    const kept = await backup(
      repo,
      backupOptions(src, slowHost, () => clock.t),
    );
    await storage.delete(snapshotKey(first.id));
    const warnings: string[] = [];
    const progress = { ...silentProgress, warn: (message: string) => void warnings.push(message) };
    const hostRepo = await Repository.open(storage, PASSPHRASE);
    // During the grace, a host with the key records prune's mark as swept.
    const report = await prune(repo, storage, {
      ...pruneOptions(clock, async (ms) => {
        for (const g of await listGenerations(hostRepo, () => undefined)) await writeSwept(hostRepo, g.generation).catch(() => undefined);
        clock.t += ms;
      }),
      progress,
    });
    assert.ok(report.packsDeleted > 0, `the first backup's packs were still deleted: ${JSON.stringify(report)}`);
    assert.ok(
      warnings.some((w) => /was swept, but this run, which wrote the mark, has not settled it: ignored/.test(w)),
      warnings.join('\n'),
    );
    await assertWhole(repo, kept.id, src, 'after a forged swept record');
  });
});
