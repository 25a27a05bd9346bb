import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { chmod, chown, lstat, mkdir, readdir, stat, writeFile, copyFile } from 'node:fs/promises';
import { join } from 'node:path';
import { drill } from '../../../agent/commands/drill.ts';
import { readHistory } from '../../../agent/core/history.ts';
import { Repository } from '../../../agent/core/repository.ts';
import { silentProgress } from '../../../agent/progress/progress.ts';
import { FileStorage } from '../../../agent/storage/file.ts';
import { lastOfType, runCli } from '../../helpers/cli.ts';
import { missingMariadb, startMariadb, type MariadbServer } from '../../helpers/mariadb.ts';
import { PASSPHRASE, backupDir, fileRepo, initSmallRepo, tempDir } from '../../helpers/repo.ts';

/**
 * What a drill leaves reachable on its host, and when it marks a snapshot damaged (issue 18):
 * a files drill run as root restores a setuid-root program with its owner, but into a scratch
 * directory only root can enter and with the setuid bit gone; a drill that fails because of
 * the host (here a real one: a scratch path too long for the private server's Unix socket)
 * fails as the host's failure and writes no damage marker.
 */

const asRoot = process.getuid?.() === 0;

/** Every path under `dir` (itself included) whose mode has a setuid, setgid or sticky bit. */
async function specialBits(dir: string): Promise<string[]> {
  const found: string[] = [];
  for (const path of [dir, ...(await readdir(dir, { recursive: true })).map((p) => join(dir, p))]) {
    const info = await lstat(path);
    if (!info.isSymbolicLink() && (info.mode & 0o7000) !== 0) found.push(`${path} ${(info.mode & 0o7777).toString(8)}`);
  }
  return found;
}

async function damageMarkers(repoPath: string): Promise<string[]> {
  return readdir(join(repoPath, 'damage')).catch(() => []);
}

describe(
  'a files drill of a setuid-root program',
  { skip: asRoot ? undefined : 'needs root (a setuid-root file, restored with its owner)' },
  () => {
    let work: Awaited<ReturnType<typeof tempDir>>;
    before(async () => {
      work = await tempDir('drill-setuid');
    });
    after(async () => work?.remove());

    it('restores it into a 0700 scratch directory without its setuid bit; the manifest still records it', async () => {
      const data = join(work.path, 'data');
      await mkdir(join(data, 'shared'), { recursive: true });
      // A real program, setuid root: what a local user would run to become root.
      await copyFile('/usr/bin/id', join(data, 'id-suid'));
      await chown(join(data, 'id-suid'), 0, 0);
      await chmod(join(data, 'id-suid'), 0o4755);
      await chmod(join(data, 'shared'), 0o2777);
      await writeFile(join(data, 'shared', 'plain.txt'), 'plain\n');
      assert.equal((await stat(join(data, 'id-suid'))).mode & 0o7777, 0o4755);

      const repo = await initSmallRepo(fileRepo(join(work.path, 'repo')));
      const snapshotId = (await backupDir(repo, data)).id;
      let inspected = false;
      const report = await drill(repo, {
        snapshot: snapshotId,
        thorough: false,
        concurrency: 2,
        who: { host: 'test-host', user: 'tester' },
        progress: silentProgress,
        scratchDir: join(work.path, 'scratch'),
        beforeCleanup: async (scratch) => {
          inspected = true;
          assert.equal((await stat(scratch)).mode & 0o7777, 0o700, 'only root enters the scratch directory');
          const restored = join(scratch, 'files');
          const program = (await readdir(restored, { recursive: true })).find((p) => p.endsWith('id-suid'));
          assert.ok(program, 'the program was restored');
          const info = await stat(join(restored, program));
          assert.equal(info.uid, 0, 'with its owner');
          assert.equal(info.mode & 0o7777, 0o755, 'without its setuid bit');
          assert.deepEqual(await specialBits(scratch), [], 'nothing under scratch keeps a setuid, setgid or sticky bit');
        },
      });
      assert.ok(inspected, 'the drill called beforeCleanup');
      assert.equal(report.ok, true, JSON.stringify(report.checks));
      assert.deepEqual(await readdir(join(work.path, 'scratch')), [], 'the scratch directory is gone');
    });
  },
);

describe('a drill that fails because of the host', { skip: missingMariadb() }, () => {
  let live: MariadbServer;
  let work: Awaited<ReturnType<typeof tempDir>>;
  let env: Record<string, string>;
  before(async () => {
    live = await startMariadb();
    work = await tempDir('drill-host');
    await chmod(work.path, 0o711);
    env = { CAIRN_REPOSITORY: join(work.path, 'repo'), CAIRN_PASSWORD: PASSPHRASE, CAIRN_DB_PASSWORD: live.password };
    assert.equal((await runCli(['init'], env)).code, 0);
  });
  after(async () => {
    await live?.stop();
    await work?.remove();
  });

  it('fails as the host’s failure, names it, and writes no damage marker; the snapshot drills fine elsewhere', async () => {
    live.sql('CREATE DATABASE shop');
    live.sql('CREATE TABLE t (id INT PRIMARY KEY) ENGINE=InnoDB; INSERT INTO t SELECT seq FROM seq_1_to_100;', 'shop');
    const backup = await runCli(
      [
        'backup',
        '--engine',
        'mysqldump',
        '--db-host',
        '127.0.0.1',
        '--db-port',
        String(live.port),
        '--db-user',
        live.user,
        '--db-name',
        'shop',
      ],
      env,
    );
    assert.equal(backup.code, 0, backup.stderr);
    const snapshotId = (lastOfType(backup, 'summary') as { snapshotId: string }).snapshotId;

    // A Unix socket's path holds at most 107 bytes: under this scratch directory the private mariadbd cannot make one.
    const deep = join(work.path, 'a-scratch-directory-whose-path-is-longer-than-a-unix-socket-path-may-be-on-linux');
    const failed = await runCli(['drill', snapshotId], { ...env, CAIRN_DRILL_DIR: deep });
    assert.equal(failed.code, 1, `a host failure (Cairn.Failure), not damage (14): ${failed.stderr}`);
    assert.match(failed.stderr, /could not finish on this host: private mariadbd: .*not marked damaged/s);
    const report = lastOfType(failed, 'drill') as { ok: boolean; failure?: string; checks: Array<{ name: string; failure?: string }> };
    assert.equal(report.ok, false);
    assert.equal(report.failure, 'host');
    assert.equal(report.checks.find((c) => c.name === 'private mariadbd')?.failure, 'host');
    assert.deepEqual(await damageMarkers(env.CAIRN_REPOSITORY as string), [], 'no damage marker');
    const repo = await Repository.open(new FileStorage(env.CAIRN_REPOSITORY as string), PASSPHRASE);
    const event = (await readHistory(repo)).filter((e) => e.event === 'drill').at(-1);
    assert.equal(event?.outcome, 'failed');
    assert.equal(event?.failure, 'host');
    assert.equal(event?.markers, undefined);

    // The same snapshot, drilled where the host allows it: it was good all along, and latest still finds it.
    const passed = await runCli(['drill', 'latest'], { ...env, CAIRN_DRILL_DIR: join(work.path, 'scratch') });
    assert.equal(passed.code, 0, passed.stderr);
    assert.equal((lastOfType(passed, 'drill') as { snapshotId: string }).snapshotId, snapshotId);
  });
});
