import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdir, writeFile, readdir, readFile, open, stat, symlink, lstat } from 'node:fs/promises';
import { join } from 'node:path';
import { PieceReader } from '../../../agent/core/piece-reader.ts';
import { decodeTree } from '../../../agent/core/tree.ts';
import { packKey } from '../../../agent/core/layout.ts';
import { runCli, runCliProcess, lastOfType } from '../../helpers/cli.ts';
import { tempDir, initSmallRepo, fileRepo, backupDir, PASSPHRASE } from '../../helpers/repo.ts';
import { describeTree } from '../../helpers/tree.ts';

async function listAll(dir: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (d: string, rel: string): Promise<void> => {
    for (const e of await readdir(d, { withFileTypes: true })) {
      const r = rel ? `${rel}/${e.name}` : e.name;
      if (e.isDirectory()) await walk(join(d, e.name), r);
      else out.push(`${r}:${(await stat(join(d, e.name))).size}`);
    }
  };
  await walk(dir, '');
  return out.sort();
}

describe('integrity and failure handling', () => {
  let work: Awaited<ReturnType<typeof tempDir>>;
  before(async () => {
    work = await tempDir('integrity');
  });
  after(async () => {
    await work.remove();
  });

  it('a wrong passphrase fails with exit code 12, names the problem, and writes nothing', async () => {
    const repoPath = join(work.path, 'wrongkey-repo');
    const src = join(work.path, 'wrongkey-src');
    await mkdir(src);
    await writeFile(join(src, 'a.txt'), 'hello');
    const env = { CAIRN_REPOSITORY: repoPath, CAIRN_PASSWORD: PASSPHRASE };
    assert.equal((await runCli(['init'], env)).code, 0);
    const beforeObjects = await listAll(repoPath);
    for (const args of [['backup', src], ['snapshots'], ['verify'], ['restore', 'latest', '--target', join(work.path, 'wrongkey-dst')]]) {
      const result = await runCli(args, { ...env, CAIRN_PASSWORD: 'not the passphrase' });
      assert.equal(result.code, 12, `${args[0]} exits 12`);
      assert.match(result.stderr, /passphrase does not open the repository/);
      assert.equal(lastOfType(result, 'error')?.code, 'Cairn.WrongKey');
    }
    assert.deepEqual(await listAll(repoPath), beforeObjects, 'the repository is unchanged');
    await assert.rejects(stat(join(work.path, 'wrongkey-dst')), 'no restore target was created');
  });

  it('a missing repository and a missing passphrase give clear errors', async () => {
    const missing = await runCli(['snapshots'], { CAIRN_REPOSITORY: join(work.path, 'nope'), CAIRN_PASSWORD: 'x' });
    assert.equal(missing.code, 10);
    assert.match(missing.stderr, /no cairn repository at .*nope[\s\S]*cairn init/);
    const existing = join(work.path, 'exists');
    assert.equal((await runCli(['init'], { CAIRN_REPOSITORY: existing, CAIRN_PASSWORD: 'a passphrase' })).code, 0);
    const noPass = await runCli(['snapshots'], { CAIRN_REPOSITORY: existing });
    assert.equal(noPass.code, 2);
    assert.match(noPass.stderr, /CAIRN_PASSWORD/);
  });

  it('a flipped byte in one piece: verify names the damaged files, restore refuses them, --ignore-errors restores the rest', async () => {
    const repoPath = join(work.path, 'flip-repo');
    const repo = await initSmallRepo(fileRepo(repoPath));
    const dirA = join(work.path, 'flip-a');
    const dirB = join(work.path, 'flip-b');
    const dirC = join(work.path, 'flip-c');
    const victim = randomBytes(3_000_000);
    const good = Buffer.from('good data\n'.repeat(100));
    for (const d of [dirA, dirB, dirC]) await mkdir(d);
    await writeFile(join(dirA, 'victim.bin'), victim);
    await writeFile(join(dirB, 'good.txt'), good);
    await writeFile(join(dirC, 'victim.bin'), victim);
    await writeFile(join(dirC, 'good.txt'), good);
    const a = await backupDir(repo, dirA);
    const b = await backupDir(repo, dirB);
    const c = await backupDir(repo, dirC);

    // Flip one byte inside the frame that holds victim.bin's first piece.
    const index = await repo.loadIndex();
    const reader = new PieceReader(repo, index);
    const tree = decodeTree(await reader.read(Buffer.from(a.tree, 'hex')), a.tree);
    const first = tree.entries.find((e) => e.name === 'victim.bin')?.content?.[0];
    assert.ok(first);
    const location = index.get(Buffer.from(first, 'hex'));
    assert.ok(location);
    const packPath = join(repoPath, packKey(location.packId));
    const handle = await open(packPath, 'r+');
    const at = location.frameOffset + Math.floor(location.frameLength / 2);
    const byte = Buffer.alloc(1);
    await handle.read(byte, 0, 1, at);
    byte[0] = (byte[0] as number) ^ 0x40;
    await handle.write(byte, 0, 1, at);
    await handle.close();

    const env = { CAIRN_REPOSITORY: repoPath, CAIRN_PASSWORD: PASSPHRASE };
    const structural = await runCli(['verify'], env);
    assert.equal(structural.code, 0, 'structure alone is intact');
    const verified = await runCli(['verify', '--read-data'], env);
    assert.equal(verified.code, 14);
    const report = lastOfType(verified, 'verify') as { ok: boolean; affected: Array<{ snapshot: string; path: string }> };
    assert.equal(report.ok, false);
    const affected = report.affected.map((x) => `${x.snapshot}:${x.path}`).sort();
    assert.deepEqual(affected, [`${a.id}:victim.bin`, `${c.id}:victim.bin`].sort());
    assert.ok(!report.affected.some((x) => x.snapshot === b.id), 'snapshot B is not affected');

    const target = join(work.path, 'flip-restore');
    const failed = await runCli(['restore', c.id, '--target', target], env);
    assert.equal(failed.code, 14);
    assert.match(failed.stderr, /cannot restore victim\.bin/);
    await assert.rejects(lstat(join(target, 'victim.bin')), 'no damaged file is left behind');

    const partialTarget = join(work.path, 'flip-restore-partial');
    const partial = await runCli(['restore', c.id, '--target', partialTarget, '--ignore-errors'], env);
    assert.equal(partial.code, 3);
    assert.deepEqual(await readFile(join(partialTarget, 'good.txt')), good);
    await assert.rejects(lstat(join(partialTarget, 'victim.bin')));

    const okTarget = join(work.path, 'flip-restore-b');
    assert.equal((await runCli(['restore', b.id, '--target', okTarget], env)).code, 0);
    assert.deepEqual(await readFile(join(okTarget, 'good.txt')), good);
  });

  it('restore into a non-empty directory is refused and the directory is left untouched', async () => {
    const repoPath = join(work.path, 'nonempty-repo');
    const src = join(work.path, 'nonempty-src');
    await mkdir(src);
    await writeFile(join(src, 'file.txt'), 'from the snapshot');
    const env = { CAIRN_REPOSITORY: repoPath, CAIRN_PASSWORD: PASSPHRASE };
    assert.equal((await runCli(['init'], env)).code, 0);
    assert.equal((await runCli(['backup', src], env)).code, 0);
    const target = join(work.path, 'nonempty-target');
    await mkdir(target);
    await writeFile(join(target, 'file.txt'), 'precious');
    await writeFile(join(target, 'other.txt'), 'also precious');
    const before = await describeTree(target);
    const refused = await runCli(['restore', 'latest', '--target', target], env);
    assert.equal(refused.code, 15);
    assert.match(refused.stderr, /not empty; nothing was written[\s\S]*--force/);
    assert.deepEqual(await describeTree(target), before);
    const forced = await runCli(['restore', 'latest', '--target', target, '--force'], env);
    assert.equal(forced.code, 0);
    assert.equal(await readFile(join(target, 'file.txt'), 'utf8'), 'from the snapshot');
    assert.equal(await readFile(join(target, 'other.txt'), 'utf8'), 'also precious');
  });

  it('SIGKILL during a backup leaves no listed snapshot; the next backup and verify succeed', async () => {
    const repoPath = join(work.path, 'kill-repo');
    const src = join(work.path, 'kill-src');
    await mkdir(src);
    for (let i = 0; i < 6; i++) await writeFile(join(src, `part-${i}.bin`), randomBytes(24 << 20));
    const env = { CAIRN_REPOSITORY: repoPath, CAIRN_PASSWORD: PASSPHRASE };
    assert.equal((await runCli(['init'], env)).code, 0);
    let killed = false;
    const run = runCliProcess(['--concurrency', '2', 'backup', src], env, {
      onSpawn: (pid) => {
        const poll = setInterval(() => {
          void readdir(join(repoPath, 'packs')).then(
            (dirs) => {
              if (dirs.length > 0 && !killed) {
                killed = true;
                clearInterval(poll);
                process.kill(pid, 'SIGKILL');
              }
            },
            () => undefined,
          );
        }, 5);
      },
    });
    const result = await run;
    assert.ok(killed, 'the backup was killed mid-way');
    assert.equal(result.signal, 'SIGKILL');
    const listed = await runCli(['snapshots'], env);
    assert.equal(listed.code, 0);
    assert.deepEqual((lastOfType(listed, 'snapshots') as { snapshots: unknown[] }).snapshots, []);
    const again = await runCli(['backup', src], env);
    assert.equal(again.code, 0, again.stderr);
    const verified = await runCli(['verify', '--read-data'], env);
    assert.equal(verified.code, 0, verified.stdout);
    const target = join(work.path, 'kill-restore');
    assert.equal((await runCli(['restore', 'latest', '--target', target], env)).code, 0);
    assert.deepEqual(await describeTree(target), await describeTree(src));
  });

  it('a symlink left in a --force target is replaced, not followed', async () => {
    const repoPath = join(work.path, 'forcelink-repo');
    const src = join(work.path, 'forcelink-src');
    const outside = join(work.path, 'forcelink-outside');
    await mkdir(join(src, 'sub'), { recursive: true });
    await mkdir(outside);
    await writeFile(join(src, 'sub', 'pwned.txt'), 'should stay inside');
    const repo = await initSmallRepo(fileRepo(repoPath));
    const snap = await backupDir(repo, src);
    const target = join(work.path, 'forcelink-target');
    await mkdir(target);
    await symlink(outside, join(target, 'sub'));
    const env = { CAIRN_REPOSITORY: repoPath, CAIRN_PASSWORD: PASSPHRASE };
    assert.equal((await runCli(['restore', snap.id, '--target', target, '--force'], env)).code, 0);
    assert.deepEqual(await readdir(outside), []);
    assert.ok((await lstat(join(target, 'sub'))).isDirectory());
    assert.equal(await readFile(join(target, 'sub', 'pwned.txt'), 'utf8'), 'should stay inside');
  });
});
