import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, readFile, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { CAIRN_BIN, runCli, lastOfType } from '../../helpers/cli.ts';
import { tempDir, PASSPHRASE } from '../../helpers/repo.ts';

describe('bootstrapping a replica from the latest snapshot', () => {
  let work: Awaited<ReturnType<typeof tempDir>>;
  let env: Record<string, string>;
  before(async () => {
    work = await tempDir('bootstrap');
    env = { CAIRN_REPOSITORY: join(work.path, 'repo'), CAIRN_PASSWORD: PASSPHRASE };
    assert.equal((await runCli(['init'], env)).code, 0);
  });
  after(async () => {
    await work.remove();
  });

  it('--wait-for-snapshot waits until the first backup commits, then restores it', async () => {
    const src = join(work.path, 'src');
    await mkdir(src);
    await writeFile(join(src, 'data.txt'), 'the first backup');
    const target = join(work.path, 'replica');
    // The backup starts once the restore has said it is waiting (not after a fixed time): then it has really looked and found nothing.
    const waiting = spawn(process.execPath, [CAIRN_BIN, 'restore', 'latest', '--target', target, '--wait-for-snapshot', '120s'], {
      env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '/tmp', CAIRN_JSON: '1', ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    waiting.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const exited = once(waiting, 'close') as Promise<[number | null]>;
    await new Promise<void>((resolve, reject) => {
      waiting.stdout.on('data', (d: Buffer) => {
        stdout += d.toString();
        if (/"type":"warning".*no snapshot latest yet; waiting/.test(stdout)) resolve();
      });
      void exited.then(([code]) =>
        reject(new Error(`the restore ended (exit ${code}) before it said it was waiting: ${stdout} ${stderr}`)),
      );
    });
    assert.equal((await runCli(['backup', src], env)).code, 0);
    const [code] = await exited;
    assert.equal(code, 0, stderr);
    assert.equal(await readFile(join(target, 'data.txt'), 'utf8'), 'the first backup');
    const gaveUp = await runCli(['restore', 'ffff', '--target', join(work.path, 'never'), '--wait-for-snapshot', '1s'], env);
    assert.equal(gaveUp.code, 13);
  });

  it('--if-empty leaves a target that already holds data alone, and exits 0', async () => {
    const target = join(work.path, 'busy');
    await mkdir(target);
    await writeFile(join(target, 'existing'), 'live data');
    const r = await runCli(['restore', 'latest', '--target', target, '--if-empty'], env);
    assert.equal(r.code, 0, r.stderr);
    assert.equal((lastOfType(r, 'summary') as { skipped: boolean }).skipped, true);
    assert.deepEqual(await readdir(target), ['existing']);
    const fresh = join(work.path, 'fresh');
    assert.equal((await runCli(['restore', 'latest', '--target', fresh, '--if-empty'], env)).code, 0);
    assert.deepEqual(await readdir(fresh), ['data.txt']);
  });
});
