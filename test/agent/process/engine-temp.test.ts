import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chown, cp, mkdir, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { makeEngineTemp } from '../../../agent/process/engine-temp.ts';
import { runCli } from '../../helpers/cli.ts';
import { PASSPHRASE, tempDir } from '../../helpers/repo.ts';

const MODULE = new URL('../../../agent/process/engine-temp.ts', import.meta.url).href;

/**
 * An engine's temporary directory holds the database password's option file (or PGPASSFILE, or an
 * etcd snapshot). A SIGKILLed backup or restore left it in /tmp for good; the next one removes it.
 */
describe('engine temporary directories a killed run left', () => {
  let work: { path: string; remove: () => Promise<void> };
  before(async () => {
    work = await tempDir('engine-temp');
  });
  after(() => work.remove());

  /** A real process that makes its directory, writes a password into it, and is SIGKILLed. */
  const killedRun = (parent: string): string => {
    const script = `const { makeEngineTemp } = await import(${JSON.stringify(MODULE)});
      const temp = await makeEngineTemp('engine', ${JSON.stringify(parent)}, () => {});
      (await import('node:fs')).writeFileSync(temp.path + '/client-0123.cnf', '[client]\\npassword="S3cret"\\n', { mode: 0o600 });
      process.stdout.write(temp.path);
      process.kill(process.pid, 'SIGKILL');`;
    const child = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8' });
    assert.equal(child.signal, 'SIGKILL', child.stderr);
    return child.stdout;
  };

  it("removes a killed run's directory, and leaves a live run's, another user's and one without an owner record", async () => {
    const parent = join(work.path, 'tmp');
    await mkdir(parent);
    const live = await makeEngineTemp('engine', parent, () => {});
    const killed = killedRun(parent);
    assert.ok((await readdir(killed)).includes('client-0123.cnf'), 'the password stayed behind the kill');
    const unowned = join(parent, 'cairn-engine-by-hand');
    await mkdir(unowned);
    // (Made elsewhere: a run under the same parent would have cleared the first killed run's.)
    const elsewhere = join(work.path, 'elsewhere');
    await mkdir(elsewhere);
    const others = killedRun(elsewhere);
    const othersCopy = join(parent, 'cairn-engine-another-user');
    await cp(others, othersCopy, { recursive: true });
    await chown(othersCopy, 65534, 65534);

    const warnings: string[] = [];
    const next = await makeEngineTemp('engine', parent, (message) => warnings.push(message));
    const left = await readdir(parent);
    assert.ok(!left.includes(killed.slice(parent.length + 1)), `the killed run's directory is gone: ${left.join(' ')}`);
    for (const kept of [live.path, unowned, othersCopy, next.path]) assert.ok(left.includes(kept.slice(parent.length + 1)), kept);
    assert.equal(
      warnings.filter((w) => /left by a backup or restore that was killed \(it may have held a database password\)/.test(w)).length,
      1,
    );
    await next.remove();
    await live.remove();
    assert.deepEqual((await readdir(parent)).sort(), ['cairn-engine-another-user', 'cairn-engine-by-hand']);
  });

  it('an engine backup through the CLI clears what a killed one left under TMPDIR, and leaves nothing of its own', async () => {
    const parent = join(work.path, 'cli-tmp');
    await mkdir(parent);
    const env = { CAIRN_REPOSITORY: join(work.path, 'repo'), CAIRN_PASSWORD: PASSPHRASE, TMPDIR: parent, CAIRN_DB_PASSWORD: 'pw' };
    assert.equal((await runCli(['init'], env)).code, 0);
    killedRun(parent);
    await writeFile(join(parent, 'unrelated'), 'kept');
    // It fails (nothing listens on port 1), after its temporary directory was made and removed.
    const failed = await runCli(['backup', '--engine', 'mysqldump', '--db-host', '127.0.0.1', '--db-port', '1', '--db-user', 'u'], env);
    assert.notEqual(failed.code, 0);
    assert.match(failed.stdout + failed.stderr, /left by a backup or restore that was killed/);
    assert.deepEqual(await readdir(parent), ['unrelated']);
  });
});
