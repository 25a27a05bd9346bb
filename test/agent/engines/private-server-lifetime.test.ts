import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { chmod, mkdir, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { once } from 'node:events';
import { setTimeout as delay } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { CAIRN_BIN, lastOfType, runCli } from '../../helpers/cli.ts';
import { missingEtcd, startEtcd, type EtcdServer } from '../../helpers/etcd.ts';
import { missingMariadb } from '../../helpers/mariadb.ts';
import { missingPostgres } from '../../helpers/postgres.ts';
import { processesMentioning } from '../../helpers/processes.ts';
import { tempDir, PASSPHRASE } from '../../helpers/repo.ts';

// A drill killed with SIGKILL takes its private server with it (the kernel's parent-death signal,
// agent/engines/drill-server-user.ts), and the next drill removes the scratch directory it left
// (agent/commands/drill-scratch.ts). Before, the server ran on, holding a copy of the snapshot.

const CHILD = fileURLToPath(new URL('./private-server-child.ts', import.meta.url));

/** The pids of live processes whose command line mentions every one of `texts`. */
function pidsMentioning(...texts: string[]): number[] {
  return processesMentioning(...texts).map((found) => found.pid);
}

/** Waits, looking every 50 ms, until `done` holds; fails after `seconds`. */
async function until(what: string, seconds: number, done: () => boolean): Promise<void> {
  const deadline = Date.now() + seconds * 1000;
  while (!done()) {
    if (Date.now() > deadline) throw new Error(`${what}: not within ${seconds} s`);
    await delay(50);
  }
}

async function killed(child: ChildProcess): Promise<void> {
  const exit = once(child, 'exit');
  child.kill('SIGKILL');
  await exit;
}

describe('a drill killed with SIGKILL', () => {
  let work: Awaited<ReturnType<typeof tempDir>>;
  before(async () => {
    work = await tempDir('server-lifetime');
    // The private servers run as cairn-drill under root: they must pass through.
    await chmod(work.path, 0o711);
  });
  after(async () => {
    await work.remove();
  });

  for (const [kind, skip] of [
    ['mariadb', missingMariadb()],
    ['postgres', missingPostgres()],
  ] as const) {
    it(`takes its private ${kind} server with it`, { skip }, async () => {
      const dir = join(work.path, kind);
      await mkdir(dir, { mode: 0o711 });
      const child = spawn(process.execPath, [CHILD, kind, dir], { stdio: ['ignore', 'pipe', 'inherit'] });
      let out = '';
      child.stdout.on('data', (d: Buffer) => (out += d.toString()));
      const exited = once(child, 'exit');
      await Promise.race([
        until(`${kind} started`, 120, () => out.includes('ready')),
        exited.then(([code]) => assert.fail(`the process starting the private ${kind} exited (${String(code)}) before it was ready`)),
      ]);
      const servers = pidsMentioning(join(dir, 'data'));
      assert.ok(servers.length > 0, `a ${kind} server runs on ${dir}`);
      await killed(child);
      await until(`the private ${kind} server ended`, 30, () => pidsMentioning(join(dir, 'data')).length === 0);
    });
  }

  it(
    'a host whose setpriv lacks --pdeathsig still starts the private mariadbd (it switches users by itself, as before)',
    { skip: missingMariadb() },
    async () => {
      const dir = join(work.path, 'old-setpriv');
      await mkdir(join(dir, 'bin'), { recursive: true, mode: 0o711 });
      // A setpriv that knows no option at all: any use of it fails.
      await writeFile(join(dir, 'bin', 'setpriv'), '#!/bin/sh\necho "setpriv: unrecognized option" >&2\nexit 1\n', { mode: 0o755 });
      const child = spawn(process.execPath, [CHILD, 'mariadb', dir], {
        env: { ...process.env, PATH: `${join(dir, 'bin')}:${process.env.PATH ?? ''}` },
        stdio: ['ignore', 'pipe', 'inherit'],
      });
      let out = '';
      child.stdout.on('data', (d: Buffer) => (out += d.toString()));
      const exited = once(child, 'exit');
      await Promise.race([
        until('mariadb started', 120, () => out.includes('ready')),
        exited.then(([code]) => assert.fail(`the private mariadbd did not start without setpriv's --pdeathsig (exit ${String(code)})`)),
      ]);
      await killed(child);
      // No death signal here: the server is stopped by hand.
      for (const pid of pidsMentioning(join(dir, 'data'))) process.kill(pid, 'SIGTERM');
      await until('the private mariadbd stopped', 60, () => pidsMentioning(join(dir, 'data')).length === 0);
    },
  );

  describe('(etcd: the whole `cairn drill`)', { skip: missingEtcd() }, () => {
    let source: EtcdServer;
    let env: Record<string, string>;
    let snapshotId: string;
    before(async () => {
      source = await startEtcd();
      env = { CAIRN_REPOSITORY: join(work.path, 'repo'), CAIRN_PASSWORD: PASSPHRASE, CAIRN_DRILL_DIR: join(work.path, 'scratch') };
      assert.equal((await runCli(['init'], env)).code, 0);
      source.ctl('put', '/app/key', 'value');
      const backup = await runCli(['backup', '--engine', 'etcd', '--db-host', '127.0.0.1', '--db-port', String(source.clientPort)], env);
      assert.equal(backup.code, 0, backup.stderr);
      snapshotId = (lastOfType(backup, 'summary') as { snapshotId: string }).snapshotId;
    });
    after(async () => {
      await source?.stop();
    });

    it('takes its private member with it, and the next drill removes the scratch directory it left', async () => {
      const scratchParent = env.CAIRN_DRILL_DIR as string;
      const child = spawn(process.execPath, [CAIRN_BIN, 'drill', snapshotId], {
        env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '/tmp', CAIRN_JSON: '1', ...env },
        stdio: ['ignore', 'ignore', 'ignore'],
      });
      const exited = once(child, 'exit');
      await Promise.race([
        until('the private etcd member started', 120, () => pidsMentioning(`${scratchParent}/`, '--listen-client-urls').length > 0),
        exited.then(([code]) => assert.fail(`the drill ended (${String(code)}) before its private member started`)),
      ]);
      await killed(child);
      await until('the private etcd member ended', 30, () => pidsMentioning(`${scratchParent}/`, '--listen-client-urls').length === 0);
      // A client the killed drill ran (etcdctl) may still be waiting out its timeout against the dead
      // member: while a process uses the directory, the next drill leaves it (drill-scratch.ts).
      await until('the killed drill’s clients ended', 60, () => pidsMentioning(`${scratchParent}/`).length === 0);
      const left = (await readdir(scratchParent)).filter((name) => name.startsWith('cairn-drill-'));
      assert.equal(left.length, 1, 'the killed drill left its scratch directory');

      const next = await runCli(['drill', snapshotId], env);
      assert.equal(next.code, 0, next.stderr);
      const warnings = next.lines.filter((line) => line.type === 'warning').map((line) => String(line.message));
      assert.ok(
        warnings.some((message) => message.includes(join(scratchParent, left[0] as string)) && message.includes('killed')),
        `the next drill says it removed ${left[0]}: ${warnings.join(' | ')}`,
      );
      assert.deepEqual(await readdir(scratchParent), [], `nothing is left under the scratch parent: ${warnings.join(' | ')}`);
    });
  });
});
