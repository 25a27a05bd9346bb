import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { copyFile, mkdir, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { backupDryRun } from '../../../agent/commands/backup.ts';
import { underLock } from '../../../agent/commands/operation.ts';
import { CairnError } from '../../../agent/core/errors.ts';
import { Repository } from '../../../agent/core/repository.ts';
import type { Storage } from '../../../agent/core/storage.ts';
import { silentProgress } from '../../../agent/progress/progress.ts';
import { FileStorage } from '../../../agent/storage/file.ts';
import { lastOfType, runCli, runCliText } from '../../helpers/cli.ts';
import { PASSPHRASE, tempDir } from '../../helpers/repo.ts';

/** Every object of a file repository with its size and modification time: a write of any kind changes it. */
async function listing(repoDir: string): Promise<string[]> {
  const entries = await readdir(repoDir, { recursive: true, withFileTypes: true });
  const files = entries.filter((e) => e.isFile()).map((e) => join(e.parentPath, e.name));
  const lines = await Promise.all(
    files.map(async (file) => {
      const st = await stat(file);
      return `${relative(repoDir, file)} ${st.size} ${st.mtimeMs}`;
    }),
  );
  return lines.sort();
}

/** The repository's audit trail (without the time it was printed). */
async function historyEvents(env: Record<string, string>): Promise<unknown> {
  const r = await runCli(['history'], env);
  assert.equal(r.code, 0, r.stderr);
  return lastOfType(r, 'history')?.events;
}

/** The counts a dry run must share with the backup that follows (durationMs is its own). */
const COUNTS = [
  'filesNew',
  'filesChanged',
  'filesUnchanged',
  'dirs',
  'bytesNew',
  'bytesChanged',
  'bytesUnchanged',
  'totalFiles',
  'totalBytes',
  'bytesRead',
  'errors',
  'piecesAdded',
  'rawBytesAdded',
  'bytesAdded',
] as const;

function counts(summary: Record<string, unknown> | undefined): Record<string, unknown> {
  assert.ok(summary, 'a summary line');
  return Object.fromEntries(COUNTS.map((key) => [key, summary[key]]));
}

/**
 * `backup --dry-run` (issue 19): what a backup would read and add, with nothing written to the
 * repository (no lock, no history event, no pack, index or manifest: every object, its size and
 * its time are as they were), and counts equal to the backup that follows.
 */
describe('backup --dry-run', () => {
  let work: Awaited<ReturnType<typeof tempDir>>;
  let env: Record<string, string>;
  let repoDir: string;
  let src: string;
  before(async () => {
    work = await tempDir('backup-dry-run');
    repoDir = join(work.path, 'repo');
    src = join(work.path, 'src');
    env = { CAIRN_REPOSITORY: repoDir, CAIRN_PASSWORD: PASSPHRASE };
    assert.equal((await runCli(['init'], env)).code, 0);
    await mkdir(join(src, 'docs', 'deep'), { recursive: true });
    await writeFile(join(src, 'docs', 'readme.txt'), 'read me\n'.repeat(500));
    await writeFile(join(src, 'docs', 'deep', 'big.bin'), randomBytes(600_000));
    await writeFile(join(src, 'notes.txt'), 'some notes\n');
    await writeFile(join(src, 'empty'), '');
  });
  after(async () => {
    await work.remove();
  });

  it('on a fresh repository writes no object and counts what the first backup then stores', async () => {
    const objects = await listing(repoDir);
    const history = await historyEvents(env);
    // --concurrency 1: pieces reach the pack in one order, so even the stored bytes are the backup's to the byte.
    const dry = await runCli(['backup', '--dry-run', '--concurrency', '1', src], env);
    assert.equal(dry.code, 0, dry.stderr);
    const text = await runCliText(['backup', '--dry-run', src], env);
    assert.equal(text.code, 0, text.stderr);
    assert.match(text.stdout, /^dry run: nothing was written to the repository\n/);
    assert.match(text.stdout, /files: 4 new, 0 changed, 0 unchanged \(3 directories\)/);
    assert.match(text.stdout, /would add to the repository: .* stored/);
    assert.deepEqual(await listing(repoDir), objects, 'no object was written, replaced or removed');
    assert.deepEqual(await historyEvents(env), history);
    assert.deepEqual(lastOfType(await runCli(['snapshots'], env), 'snapshots')?.snapshots, []);

    const summary = lastOfType(dry, 'summary');
    assert.equal(summary?.dryRun, true);
    assert.equal(summary?.snapshotId, undefined, 'a dry run names no snapshot');
    assert.equal(summary?.parent, undefined);
    const real = await runCli(['backup', '--concurrency', '1', src], env);
    assert.equal(real.code, 0, real.stderr);
    assert.deepEqual(counts(summary), counts(lastOfType(real, 'summary')));
    assert.ok((summary?.bytesAdded as number) > 600_000, 'the random file would be stored');
  });

  it('beside a parent snapshot counts changed, new, unchanged and duplicate files as the next backup does', async () => {
    const parent = (lastOfType(await runCli(['snapshots'], env), 'snapshots')?.snapshots as Array<{ id: string }>).at(-1)?.id;
    assert.ok(parent);
    await writeFile(join(src, 'notes.txt'), 'other notes\n'); // changed
    await writeFile(join(src, 'docs', 'new.bin'), randomBytes(300_000)); // new
    await copyFile(join(src, 'docs', 'deep', 'big.bin'), join(src, 'copy-of-big.bin')); // new, its pieces stored already
    await rm(join(src, 'empty'));
    const objects = await listing(repoDir);
    const history = await historyEvents(env);

    const dry = await runCli(['backup', '--dry-run', '--concurrency', '1', src], env);
    assert.equal(dry.code, 0, dry.stderr);
    assert.deepEqual(await listing(repoDir), objects);
    assert.deepEqual(await historyEvents(env), history);
    const summary = lastOfType(dry, 'summary');
    assert.equal(summary?.parent, parent, 'compared with the last snapshot of these paths');
    assert.deepEqual(
      [summary?.filesNew, summary?.filesChanged, summary?.filesUnchanged],
      [2, 1, 2],
      'new.bin and copy-of-big.bin new, notes.txt changed, readme.txt and big.bin unchanged',
    );
    assert.ok((summary?.bytesAdded as number) < 600_000, 'the copy adds no piece: only new.bin, notes.txt and trees');

    const real = await runCli(['backup', '--concurrency', '1', src], env);
    assert.equal(real.code, 0, real.stderr);
    assert.deepEqual(counts(summary), counts(lastOfType(real, 'summary')));
  });

  it('takes no lock, so it runs while another operation holds the repository exclusively', async () => {
    await writeFile(join(src, 'while-locked.txt'), 'written while a prune held the lock\n');
    const repo = await Repository.open(new FileStorage(repoDir), PASSPHRASE);
    const ctx = { repo, who: { host: 'other-host', user: 'pruner' }, progress: silentProgress };
    await underLock(ctx, 'prune', true, async () => {
      const objects = await listing(repoDir);
      const dry = await runCli(['backup', '--dry-run', src], env);
      assert.equal(dry.code, 0, dry.stderr);
      assert.equal(lastOfType(dry, 'summary')?.filesNew, 1);
      assert.deepEqual(await listing(repoDir), objects);
      // The lock is real: a backup waits for it and fails (exit 11, restic's "failed to lock").
      const blocked = await runCli(['backup', src], env);
      assert.equal(blocked.code, 11, blocked.stderr);
    });
  });

  it('runs on a repository this host may only read, without attempting a single write', async () => {
    await writeFile(join(src, 'docs', 'replicated.bin'), randomBytes(100_000)); // new pieces: a backup would write a pack
    const storage = new FileStorage(repoDir);
    const puts: string[] = [];
    // The file backend with its writes refused, as a read-only mount or role refuses them.
    const readOnly: Storage = {
      location: storage.location,
      atomicCreate: storage.atomicCreate,
      get: (key) => storage.get(key),
      getRange: (key, offset, length) => storage.getRange(key, offset, length),
      stat: (key) => storage.stat(key),
      list: (prefix) => storage.list(prefix),
      put: (key) => {
        puts.push(key);
        return Promise.reject(new CairnError('Cairn.Storage', `access denied writing ${key}`));
      },
    };
    const repo = await Repository.open(readOnly, PASSPHRASE);
    const warnings: string[] = [];
    const preview = await backupDryRun(repo, {
      paths: [src],
      excludes: [],
      tags: [],
      who: { host: 'replica-reader', user: 'tester' },
      concurrency: 2,
      progress: { ...silentProgress, warn: (message) => void warnings.push(message) },
    });
    assert.deepEqual(puts, []);
    assert.deepEqual(warnings, [], 'not even a history event was tried (its failure would only warn)');
    assert.equal(preview.parent, undefined, 'no snapshot of this host yet');
    assert.equal(preview.summary.filesNew, preview.summary.totalFiles);
    assert.ok(preview.summary.bytesAdded > 100_000, 'the new file would be stored');
  });

  it('refuses an engine, hooks and a cold copy\u2019s commands, naming why, and writes nothing', async () => {
    const objects = await listing(repoDir);
    const engine = await runCli(['backup', '--dry-run', '--engine', 'pgdump'], env);
    assert.equal(engine.code, 2);
    assert.match(
      engine.stderr,
      /backup --dry-run previews files backups only: the pgdump engine learns what it would store only by running its dump/,
    );
    const marker = join(work.path, 'hook-ran');
    const hooks = await runCli(['backup', '--dry-run', '--pre-hook', `touch ${marker}`, '--stop-cmd', `touch ${marker}`, src], env);
    assert.equal(hooks.code, 2);
    assert.match(hooks.stderr, /backup --dry-run runs no commands: --pre-hook, --stop-cmd would act outside the repository/);
    await assert.rejects(stat(marker), { code: 'ENOENT' }, 'no command ran');
    assert.deepEqual(await listing(repoDir), objects);
  });

  it('leaves the metrics file alone: a dry run is not a backup, and must not look like a fresh one', async () => {
    const metrics = join(work.path, 'cairn.prom');
    assert.equal((await runCli(['backup', '--metrics-file', metrics, src], env)).code, 0);
    const written = await readFile(metrics, 'utf8');
    assert.match(written, /cairn_last_success_timestamp_seconds\{operation="backup"/);
    assert.equal((await runCli(['backup', '--dry-run', '--metrics-file', metrics, src], env)).code, 0);
    assert.equal((await runCli(['backup', '--dry-run', '--metrics-file', metrics, '--engine', 'pgdump'], env)).code, 2);
    assert.equal(await readFile(metrics, 'utf8'), written);
  });
});
