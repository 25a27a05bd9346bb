import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { forget } from '../../../agent/commands/forget.ts';
import { selectSnapshot } from '../../../agent/commands/snapshot-selector.ts';
import { snapshotKey } from '../../../agent/core/layout.ts';
import { MANIFEST_CLOCK_SKEW_MS, Repository } from '../../../agent/core/repository.ts';
import type { Snapshot } from '../../../agent/core/snapshot.ts';
import { silentProgress } from '../../../agent/progress/progress.ts';
import { MemoryStorage } from '../../helpers/memory-storage.ts';
import { PASSPHRASE, SMALL, backupDir, tempDir } from '../../helpers/repo.ts';

/**
 * Issue 16: a host with the key and create rights writes a manifest dated a year ahead. Ordering
 * bounds a manifest's time by its storage modification time (plus MANIFEST_CLOCK_SKEW_MS), so it
 * neither becomes `latest` (restore, a backup's parent) nor pushes real snapshots out of retention.
 */
const who = { host: 'test-host', user: 'tester' };
const DAY = 86_400_000;
const HOUR = 3_600_000;

describe('a manifest dated in the future cannot move ahead of real snapshots (issue 16)', () => {
  it('is not latest, not the next backup’s parent, and does not push real snapshots out of --keep-daily / --keep-last', async () => {
    const src = await tempDir('forged-time');
    try {
      const clock = { t: Date.now() };
      const storage = new MemoryStorage({ now: () => clock.t });
      const repo = await Repository.init(storage, PASSPHRASE, who, SMALL);
      await writeFile(join(src.path, 'a.txt'), 'data\n');
      // A real backup gives a real tree; its manifest is the template of the ones below.
      const template = await backupDir(repo, src.path);
      await storage.delete(snapshotKey(template.id));

      const dayStart = Math.floor((Date.now() - 3 * DAY) / DAY) * DAY; // three days ago, 00:00 UTC
      const real: Snapshot[] = [];
      const save = async (time: number, storedAt: number): Promise<Snapshot> => {
        const snapshot: Snapshot = {
          ...template,
          id: randomBytes(32).toString('hex'),
          time: new Date(time).toISOString(),
          endTime: new Date(time + 1000).toISOString(),
        };
        delete snapshot.parent;
        clock.t = storedAt;
        await repo.saveSnapshot(snapshot);
        return snapshot;
      };
      // Day 1, 09:00 by the storage's clock: the forger's manifest, claiming a year ahead.
      const forged = await save(dayStart + 365 * DAY, dayStart + 9 * HOUR);
      // Real backups at 10:00 on days 1, 2 and 3, each stored a minute after it started.
      for (const day of [0, 1, 2]) real.push(await save(dayStart + day * DAY + 10 * HOUR, dayStart + day * DAY + 10 * HOUR + 60_000));
      clock.t = Date.now();

      const listed = await repo.listSnapshots();
      const forgedListed = listed.snapshots.find((s) => s.id === forged.id);
      assert.equal(forgedListed?.time, new Date(dayStart + 9 * HOUR + MANIFEST_CLOCK_SKEW_MS).toISOString(), 'its time is bounded');
      assert.deepEqual(listed.clamped, [{ id: forged.id, claimed: forged.time, bounded: forgedListed?.time }]);
      assert.equal((await repo.findSnapshot('latest')).id, real[2]?.id);
      assert.equal((await selectSnapshot(repo, 'latest', () => true, { warn: () => {} })).id, real[2]?.id);

      const daily = await forget(repo, storage, {
        policy: { keepDaily: 3 },
        groupBy: ['host', 'paths'],
        dryRun: true,
        who,
        progress: silentProgress,
      });
      assert.deepEqual(
        daily.flatMap((g) => g.keep.map((d) => d.id)).sort(),
        real.map((s) => s.id).sort(),
        '--keep-daily 3 keeps the three real days',
      );
      assert.deepEqual(
        daily.flatMap((g) => g.remove.map((d) => d.id)),
        [forged.id],
      );
      const last = await forget(repo, storage, {
        policy: { keepLast: 1 },
        groupBy: ['host', 'paths'],
        dryRun: true,
        who,
        progress: silentProgress,
      });
      assert.deepEqual(
        last.flatMap((g) => g.keep.map((d) => d.id)),
        [real[2]?.id],
      );

      // The next backup compares against the newest real snapshot, not the forged one.
      await writeFile(join(src.path, 'b.txt'), 'more\n');
      const next = await backupDir(repo, src.path);
      assert.equal(next.parent, real[2]?.id);
    } finally {
      await src.remove();
    }
  });

  it('an honest manifest from a host whose clock runs a little fast keeps its time', async () => {
    const clock = { t: Date.parse('2026-06-01T12:00:00Z') };
    const storage = new MemoryStorage({ now: () => clock.t });
    const repo = await Repository.init(storage, PASSPHRASE, who, SMALL);
    const src = await tempDir('forged-time-honest');
    try {
      await writeFile(join(src.path, 'a.txt'), 'data\n');
      const made = await backupDir(repo, src.path);
      await storage.delete(snapshotKey(made.id));
      const time = new Date(clock.t + MANIFEST_CLOCK_SKEW_MS - 60_000).toISOString();
      await repo.saveSnapshot({ ...made, time, endTime: time });
      const read = await repo.readSnapshot(made.id);
      assert.equal(read.time, time);
      assert.deepEqual((await repo.listSnapshots()).clamped, []);
    } finally {
      await src.remove();
    }
  });
});
