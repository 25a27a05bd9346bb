import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, readFile, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { runCli, lastOfType } from '../helpers/cli.ts';
import { tempDir, PASSPHRASE } from '../helpers/repo.ts';

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
    const waiting = runCli(['restore', 'latest', '--target', target, '--wait-for-snapshot', '30s'], env);
    await sleep(1500);
    assert.equal((await runCli(['backup', src], env)).code, 0);
    const restored = await waiting;
    assert.equal(restored.code, 0, restored.stderr);
    assert.ok(
      restored.lines.some((l) => l.type === 'warning' && /no snapshot latest yet; waiting/.test(String(l.message))),
      'it said it was waiting',
    );
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
