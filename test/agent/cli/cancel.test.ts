import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { runCli, runCliProcess, lastOfType, type CliResult } from '../../helpers/cli.ts';
import { tempDir } from '../../helpers/repo.ts';
import { Random, describeTree } from '../../helpers/tree.ts';
import { Repository } from '../../../agent/core/repository.ts';
import { readLocks } from '../../../agent/core/locks.ts';
import { FileStorage } from '../../../agent/storage/file.ts';

const PASSWORD = 'cancel test passphrase';

async function lockNames(repo: string): Promise<string[]> {
  return readdir(join(repo, 'locks')).catch(() => []);
}

/**
 * Starts the CLI, waits (polling the repository, not sleeping a fixed time)
 * until it has written a lock record the repository did not have before,
 * then sends SIGTERM.
 */
async function terminateOnceLocked(
  repo: string,
  args: string[],
  env: Record<string, string>,
): Promise<{ result: CliResult; sawLock: boolean }> {
  const known = new Set(await lockNames(repo));
  let pid: number | undefined;
  const running = runCliProcess(args, env, { onSpawn: (p) => (pid = p) });
  let finished = false;
  void running.then(() => (finished = true));
  let sawLock = false;
  for (let i = 0; i < 600 && !finished; i++) {
    if ((await lockNames(repo)).some((name) => !known.has(name))) {
      sawLock = true;
      break;
    }
    await delay(50);
  }
  if (sawLock && !finished) process.kill(pid as number, 'SIGTERM');
  return { result: await running, sawLock };
}

async function assertNoActiveLock(repo: string): Promise<void> {
  const opened = await Repository.open(new FileStorage(repo), PASSWORD);
  const states = await readLocks(opened);
  assert.ok(states.length > 0);
  for (const s of states) assert.equal(s.state, 'released', `lock of ${s.record.operation} is released, not left to expire`);
}

describe('cancellation (SIGTERM)', () => {
  let work: Awaited<ReturnType<typeof tempDir>>;
  let source: string;
  let repo: string;
  const env = { CAIRN_PASSWORD: PASSWORD };

  before(async () => {
    work = await tempDir('cancel');
    source = join(work.path, 'src');
    const { mkdir } = await import('node:fs/promises');
    await mkdir(source);
    // 6 MB of incompressible data at 0.2 MB/s would take half a minute: still running when the signal comes.
    const rnd = new Random(21);
    for (let i = 0; i < 3; i++) await writeFile(join(source, `data-${i}.bin`), rnd.bytes(2_000_000, false));
    repo = join(work.path, 'repo');
    assert.equal((await runCli(['-r', repo, 'init'], env)).code, 0);
  });
  after(async () => {
    await work.remove();
  });

  it('stops a throttled backup: exit 130, no snapshot, the lock released, and the next backup runs', async () => {
    const { result, sawLock } = await terminateOnceLocked(repo, ['-r', repo, '--limit-upload', '0.2', 'backup', source], env);
    assert.ok(sawLock, `the backup took its lock while running (exit ${result.code}: ${result.stderr})`);
    assert.equal(result.code, 130, result.stderr);
    assert.equal(lastOfType(result, 'error')?.code, 'Cairn.Cancelled');
    assert.match(result.stderr, /cancelled by SIGTERM; nothing was committed/);
    assert.equal(lastOfType(result, 'summary'), undefined);

    const listed = await runCli(['-r', repo, 'snapshots'], env);
    assert.deepEqual(lastOfType(listed, 'snapshots')?.snapshots, []);
    await assertNoActiveLock(repo);
    const history = lastOfType(await runCli(['-r', repo, 'history'], env), 'history')?.events as Array<{ event: string; code?: string }>;
    assert.equal(history.at(-1)?.event, 'backup.failed');
    assert.equal(history.at(-1)?.code, 'Cairn.Cancelled');

    const again = await runCli(['-r', repo, 'backup', source], env);
    assert.equal(again.code, 0, again.stderr);
    assert.doesNotMatch(again.stdout + again.stderr, /stale lock|locked/i, 'no stale lock to take over or wait for');
    const after = await runCli(['-r', repo, 'snapshots'], env);
    assert.equal((lastOfType(after, 'snapshots')?.snapshots as unknown[]).length, 1);
  });

  it('stops a throttled restore: exit 130, says the target is incomplete, releases its lock', async () => {
    const target = join(work.path, 'restored');
    const { result, sawLock } = await terminateOnceLocked(
      repo,
      ['-r', repo, '--limit-download', '0.2', 'restore', 'latest', '--target', target],
      env,
    );
    assert.ok(sawLock, `the restore took its lock while running (exit ${result.code}: ${result.stderr})`);
    assert.equal(result.code, 130, result.stderr);
    assert.match(result.stderr, /cancelled by SIGTERM; the restore target is incomplete/);
    await assertNoActiveLock(repo);

    const again = await runCli(['-r', repo, 'restore', 'latest', '--target', target, '--force'], env);
    assert.equal(again.code, 0, again.stderr);
    assert.deepEqual(await describeTree(target), await describeTree(source));
  });

  it('stops a verify the same way', async () => {
    const { result, sawLock } = await terminateOnceLocked(repo, ['-r', repo, '--limit-download', '0.2', 'verify', '--read-data'], env);
    assert.ok(sawLock);
    assert.equal(result.code, 130, result.stderr);
    await assertNoActiveLock(repo);
  });
});
