import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fsp from 'node:fs/promises';
import { syncBuiltinESMExports } from 'node:module';
import { once } from 'node:events';
import { mkdir, readdir, readFile, utimes, writeFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { setImmediate as yieldTurn } from 'node:timers/promises';
import { processAlive, tryLockFile, type HeldLockFile } from '../../../agent/core/lock-file.ts';
import { tempDir } from '../../helpers/repo.ts';

const STALE_MS = 10_000;
const OPTIONS = { staleMs: STALE_MS, mode: 0o644 };

/** The pid of a process that has exited (and been reaped): a holder that died. */
async function deadPid(): Promise<number> {
  const child = spawn(process.execPath, ['-e', '0'], { stdio: 'ignore' });
  await once(child, 'exit');
  const pid = child.pid as number;
  assert.equal(processAlive(pid), false);
  return pid;
}

async function age(path: string, ms: number): Promise<void> {
  const past = new Date(Date.now() - ms);
  await utimes(path, past, past);
}

describe('lock files', () => {
  let dir: { path: string; remove: () => Promise<void> };
  before(async () => {
    dir = await tempDir('lock-file');
  });
  after(() => dir.remove());

  async function fresh(name: string): Promise<string> {
    const path = join(dir.path, name);
    await mkdir(path);
    return path;
  }

  it('keeps to one holder when waiters race to take over the same stale lock', async () => {
    const d = await fresh('race');
    const lock = join(d, 'm.lock');
    // The race needs a waiter that judged the old lock stale to act only after another has taken it over: real file
    // operations rarely interleave so. So every removal of the lock and every taking of the breaker but a round's
    // first waits until the lock has been created again (an event, not a sleep). The module's calls go through these.
    const real = { link: fsp.link, unlink: fsp.unlink };
    let unlinks = 0;
    let breakers = 0;
    let relinked: () => void = () => undefined;
    let linked = new Promise<void>((resolve) => (relinked = resolve));
    fsp.link = async (from, to) => {
      if (to === `${lock}.break` && breakers++ > 0) await linked;
      await real.link(from, to);
      if (to === lock) relinked();
    };
    fsp.unlink = async (path) => {
      if (path === lock && unlinks++ > 0) await linked;
      return real.unlink(path);
    };
    syncBuiltinESMExports();
    let inside = 0;
    let most = 0;
    let rounds = 0;
    try {
      for (let round = 0; round < 20; round++) {
        // Left by a writer that died long ago: every waiter judges it stale at once.
        await writeFile(lock, round % 2 === 0 ? '' : `${await deadPidOnce()} ${hostname()} 00\n`);
        await age(lock, 60_000);
        unlinks = 0;
        breakers = 0;
        linked = new Promise<void>((resolve) => (relinked = resolve));
        await Promise.all(
          Array.from({ length: 4 }, async () => {
            let held: HeldLockFile | undefined;
            while (!(held = await tryLockFile(lock, OPTIONS))) await yieldTurn();
            inside++;
            most = Math.max(most, inside);
            // Hold it across a few file operations, as the metrics merge does; nobody may replace it meanwhile.
            const record = await readFile(lock, 'utf8').catch(() => 'gone');
            assert.notEqual(record, 'gone', 'the lock was taken from its holder');
            for (let i = 0; i < 5; i++) await readdir(d);
            assert.equal(await readFile(lock, 'utf8').catch(() => 'gone'), record, 'the lock was taken from its holder');
            inside--;
            await held.release();
          }),
        );
        rounds++;
      }
    } finally {
      fsp.link = real.link;
      fsp.unlink = real.unlink;
      syncBuiltinESMExports();
    }
    assert.equal(rounds, 20);
    assert.equal(most, 1, 'two waiters held the lock at once');
    assert.deepEqual(await readdir(d), [], 'no lock, breaker or temporary file is left');
  });

  let cachedDead: number | undefined;
  async function deadPidOnce(): Promise<number> {
    cachedDead ??= await deadPid();
    return cachedDead;
  }

  it('leaves a live holder its lock, and takes over at once the lock of a holder that died on this host', async () => {
    const d = await fresh('holders');
    const lock = join(d, 'start.lock');
    const first = await tryLockFile(lock, OPTIONS);
    assert.ok(first);
    assert.match(await readFile(lock, 'utf8'), new RegExp(`^${process.pid} ${hostname()} [0-9a-f]{16}\\n$`));
    assert.equal(await tryLockFile(lock, OPTIONS), undefined, 'a live holder keeps its lock');
    await first.release();
    assert.deepEqual(await readdir(d), []);

    // Fresh, but its pid is gone: no need to wait for the lock to age. Same for an older cairn's pid-only record.
    for (const record of [`${await deadPid()} ${hostname()} 0123456789abcdef\n`, String(await deadPid())]) {
      await writeFile(lock, record);
      const taken = await tryLockFile(lock, OPTIONS);
      assert.ok(taken, `the lock of a dead holder (${JSON.stringify(record)}) is taken over`);
      assert.notEqual(await readFile(lock, 'utf8'), record);
      await taken.release();
    }
  });

  it('judges a record it cannot check (another host, none at all) by its age alone', async () => {
    const d = await fresh('age');
    const lock = join(d, 'm.lock');
    for (const record of [`${await deadPid()} another-host.example 0123456789abcdef\n`, '']) {
      await writeFile(lock, record);
      assert.equal(await tryLockFile(lock, OPTIONS), undefined, `a fresh lock (${JSON.stringify(record)}) is left alone`);
      await age(lock, STALE_MS + 1000);
      const taken = await tryLockFile(lock, OPTIONS);
      assert.ok(taken, `an old lock (${JSON.stringify(record)}) is taken over`);
      await taken.release();
    }
    assert.deepEqual(await readdir(d), []);
  });

  it("release never removes a lock that is no longer this holder's", async () => {
    const d = await fresh('release');
    const lock = join(d, 'm.lock');
    const held = await tryLockFile(lock, OPTIONS);
    assert.ok(held);
    // Judged stale while it was held (a process stopped for longer than staleMs) and taken over by another.
    const other = `${process.pid} ${hostname()} feedfacefeedface\n`;
    await writeFile(lock, other);
    await held.release();
    assert.equal(await readFile(lock, 'utf8'), other, "the new holder's lock stays");
  });

  it('clears a breaker left by a waiter that died while taking over, then takes the stale lock', async () => {
    const d = await fresh('breaker');
    const lock = join(d, 'm.lock');
    await writeFile(lock, `${await deadPid()} ${hostname()} 0123456789abcdef\n`);
    await writeFile(`${lock}.break`, `${await deadPid()} ${hostname()} 0123456789abcdef\n`);
    let held: HeldLockFile | undefined;
    for (let attempt = 0; attempt < 3 && !held; attempt++) held = await tryLockFile(lock, OPTIONS);
    assert.ok(held, 'the lock is taken within three attempts');
    await held.release();
    assert.deepEqual(await readdir(d), []);

    // A live breaker's guard is respected: the stale lock stays until the breaker is done.
    await writeFile(lock, `${await deadPid()} ${hostname()} 0123456789abcdef\n`);
    await writeFile(`${lock}.break`, `${process.pid} ${hostname()} 0123456789abcdef\n`);
    assert.equal(await tryLockFile(lock, OPTIONS), undefined);
    assert.equal(await tryLockFile(lock, OPTIONS), undefined);
    assert.deepEqual((await readdir(d)).sort(), ['m.lock', 'm.lock.break']);
  });
});
