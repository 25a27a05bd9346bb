import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, readdir, statfs, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { minFreeSpace } from '../../../agent/commands/drill-space.ts';
import { runCli, lastOfType } from '../../helpers/cli.ts';
import { tempDir, PASSPHRASE } from '../../helpers/repo.ts';

/**
 * A drill on a file system it could fill (it may run on a production host): it watches the free
 * space of its scratch file system and stops itself before going below the floor it leaves
 * (CAIRN_DRILL_MIN_FREE, by default 5% of the file system, at most 1 GiB), as a host failure that
 * marks nothing, its scratch directory removed. The scratch file system is a tmpfs of its own
 * (mounted as root), so the test knows exactly how much room there is.
 */
const asRoot = process.getuid?.() === 0;

describe(
  'a drill that would fill its file system stops itself (issue 18)',
  { skip: asRoot ? undefined : 'needs root (mounts a tmpfs)' },
  () => {
    let work: Awaited<ReturnType<typeof tempDir>>;
    let scratch: string;
    let mounted = false;
    let env: Record<string, string>;
    let snapshotId: string;

    before(async () => {
      work = await tempDir('drill-space');
      scratch = join(work.path, 'scratch');
      await mkdir(scratch);
      const mount = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=700m,mode=0755', 'tmpfs', scratch], { encoding: 'utf8' });
      assert.equal(mount.status, 0, `mount a tmpfs: ${mount.stderr}`);
      mounted = true;
      env = { CAIRN_REPOSITORY: join(work.path, 'repo'), CAIRN_PASSWORD: PASSPHRASE, CAIRN_DRILL_DIR: scratch };
      assert.equal((await runCli(['init'], env)).code, 0);
      const src = join(work.path, 'src');
      await mkdir(src);
      // 200 MiB that does not compress or deduplicate: the drill restores all of it.
      for (let i = 0; i < 25; i++) await writeFile(join(src, `part-${i}`), randomBytes(8 << 20));
      const backup = await runCli(['backup', src], env);
      assert.equal(backup.code, 0, backup.stderr);
      snapshotId = (lastOfType(backup, 'summary') as { snapshotId: string }).snapshotId;
    });
    after(async () => {
      if (mounted) spawnSync('umount', [scratch]);
      await work?.remove();
    });

    it('with room above its floor, the drill passes (the control)', async () => {
      const floor = await minFreeSpace(scratch, {});
      assert.equal(
        floor,
        Math.floor((await statfs(scratch)).blocks * (await statfs(scratch)).bsize * 0.05),
        'by default 5% of the file system',
      );
      const result = await runCli(['drill', snapshotId], env);
      assert.equal(result.code, 0, result.stderr);
      assert.deepEqual(await readdir(scratch), [], 'its scratch directory was removed');
    });

    it('below its floor, it stops as a host failure: exit 1, the floor named, no damage marker, nothing left behind', async () => {
      const space = await statfs(scratch);
      // Leave all but 16 MiB of the empty file system: restoring 200 MiB must cross the floor early and stay below it.
      const floor = space.bavail * space.bsize - (16 << 20);
      const result = await runCli(['drill', snapshotId], { ...env, CAIRN_DRILL_MIN_FREE: String(floor) });
      assert.equal(result.code, 1, `a host failure: ${result.stderr}`);
      assert.match(result.stderr, /the drill stopped itself: the free space of .* fell to \d+ MiB, below the \d+ MiB it leaves free/);
      assert.match(result.stderr, /CAIRN_DRILL_DIR/, 'the hint names the fix');
      assert.deepEqual(await readdir(scratch), [], 'its scratch directory was removed');
      assert.deepEqual(await readdir(join(env.CAIRN_REPOSITORY as string, 'damage')).catch(() => []), [], 'nothing is marked damaged');
      // The snapshot still counts as good: a later drill with room passes.
      assert.equal((await runCli(['drill', snapshotId], env)).code, 0);
    });

    it('refuses a floor that is not a number of bytes, before restoring anything', async () => {
      const result = await runCli(['drill', snapshotId], { ...env, CAIRN_DRILL_MIN_FREE: '1G' });
      assert.equal(result.code, 2, result.stderr);
      assert.match(result.stderr, /CAIRN_DRILL_MIN_FREE="1G" is not a number of bytes/);
      assert.deepEqual(await readdir(scratch), []);
    });
  },
);
