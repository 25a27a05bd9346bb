import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { runCli, runCliProcess, lastOfType } from '../../helpers/cli.ts';
import { tempDir, PASSPHRASE } from '../../helpers/repo.ts';

describe('hooks and the files engine cold copy', () => {
  let work: Awaited<ReturnType<typeof tempDir>>;
  let env: Record<string, string>;
  before(async () => {
    work = await tempDir('hooks');
    env = { CAIRN_REPOSITORY: join(work.path, 'repo'), CAIRN_PASSWORD: PASSPHRASE };
    assert.equal((await runCli(['init'], env)).code, 0);
    await mkdir(join(work.path, 'data'));
    await writeFile(join(work.path, 'data', 'table.db'), 'rows');
  });
  after(async () => {
    await work.remove();
  });

  it('stops the service before the copy and starts it after, in order, around a successful backup', async () => {
    const log = join(work.path, 'log-ok');
    const r = await runCli(
      [
        'backup',
        join(work.path, 'data'),
        '--stop-cmd',
        `echo stop >> ${log}`,
        '--start-cmd',
        `echo start >> ${log}`,
        '--pre-hook',
        `echo pre >> ${log}`,
        '--post-hook',
        `echo "post $CAIRN_RESULT" >> ${log}`,
      ],
      env,
    );
    assert.equal(r.code, 0, r.stderr);
    assert.equal(await readFile(log, 'utf8'), 'pre\nstop\nstart\npost success\n');
  });

  it('starts the service again and runs the post hook when the copy fails; no snapshot is committed', async () => {
    const log = join(work.path, 'log-fail');
    const before = (lastOfType(await runCli(['snapshots'], env), 'snapshots') as { snapshots: unknown[] }).snapshots.length;
    const r = await runCli(
      [
        'backup',
        join(work.path, 'does-not-exist'),
        '--stop-cmd',
        `echo stop >> ${log}`,
        '--start-cmd',
        `echo start >> ${log}`,
        '--post-hook',
        `echo "post $CAIRN_RESULT" >> ${log}`,
      ],
      env,
    );
    assert.notEqual(r.code, 0);
    assert.equal(await readFile(log, 'utf8'), 'stop\nstart\npost failure\n');
    assert.equal((lastOfType(await runCli(['snapshots'], env), 'snapshots') as { snapshots: unknown[] }).snapshots.length, before);
  });

  it('a failing stop command or pre hook stops the backup with its stderr, and the start command still runs', async () => {
    const log = join(work.path, 'log-stopfail');
    const r = await runCli(
      ['backup', join(work.path, 'data'), '--stop-cmd', 'echo cannot stop the service >&2; exit 3', '--start-cmd', `echo start >> ${log}`],
      env,
    );
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /the stop command failed: .*exited with code 3: cannot stop the service/);
    const pre = await runCli(['backup', join(work.path, 'data'), '--pre-hook', 'exit 4'], env);
    assert.notEqual(pre.code, 0);
    assert.match(pre.stderr, /the pre-hook command failed/);
    assert.equal(await readFile(log, 'utf8'), 'start\n', 'the start command ran after the failed stop');
  });

  it('an engine whose tools are missing says which to install, and commits nothing', async () => {
    for (const engine of ['pgdump', 'mysqldump', 'mariadb']) {
      // A subprocess: the PATH must be the process's own (finding the tools reads process.env).
      const r = await runCliProcess(['backup', '--engine', engine], { ...env, PATH: '/nonexistent' });
      assert.notEqual(r.code, 0, engine);
      assert.match(r.stderr, /is installed[\s\S]*hint: install/, engine);
    }
    const snapshots = (lastOfType(await runCli(['snapshots'], env), 'snapshots') as { snapshots: Array<{ engine: string }> }).snapshots;
    assert.ok(snapshots.every((s) => s.engine === 'files'));
  });

  it('lists the engines and what they need', async () => {
    const r = await runCli(['engines'], env);
    const names = (lastOfType(r, 'engines') as { engines: Array<{ name: string }> }).engines.map((e) => e.name);
    assert.deepEqual(names, ['files', 'mysqldump', 'pgdump', 'etcd', 'etcd-keys', 'postgres', 'mariadb']);
  });
});
