import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import fsp from 'node:fs/promises';
import { syncBuiltinESMExports } from 'node:module';
import { mkdir, readdir, readFile, rmdir, symlink, unlink, utimes, writeFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { setImmediate as yieldTurn } from 'node:timers/promises';
import { tryLockFile, type HeldLockFile } from '../../../agent/core/lock-file.ts';
import { deadPid, lockRecord, ownScope } from '../../helpers/lock-records.ts';
import { tempDir } from '../../helpers/repo.ts';

const STALE_MS = 10_000;
const OPTIONS = { staleMs: STALE_MS, mode: 0o644 };

async function age(path: string, ms: number): Promise<void> {
  const past = new Date(Date.now() - ms);
  await utimes(path, past, past);
}

describe('lock files', () => {
  let dir: { path: string; remove: () => Promise<void> };
  let scope: string;
  /** A process that runs until the tests end: a live holder other than this one. */
  let sleeper: ChildProcess;
  before(async () => {
    dir = await tempDir('lock-file');
    scope = await ownScope();
    sleeper = spawn(process.execPath, ['-e', 'setInterval(() => {}, 1000)'], { stdio: 'ignore' });
  });
  after(() => sleeper.kill());
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
        await writeFile(lock, round % 2 === 0 ? '' : lockRecord(await deadPidOnce(), scope));
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

  it('leaves a live holder its lock, and takes over at once the lock of a holder that died in this boot and PID namespace', async () => {
    const d = await fresh('holders');
    const lock = join(d, 'start.lock');
    const first = await tryLockFile(lock, OPTIONS);
    assert.ok(first);
    assert.match(await readFile(lock, 'utf8'), new RegExp(`^${process.pid} ${hostname()} [0-9a-f]{16} ${scope} \\d+\\n$`));
    assert.equal(await tryLockFile(lock, OPTIONS), undefined, 'a live holder keeps its lock');
    await first.release();
    assert.deepEqual(await readdir(d), []);

    // Another live process's lock stays, even older than staleMs: it is checked by its pid, not by its age.
    await writeFile(lock, lockRecord(sleeper.pid as number, scope));
    await age(lock, 5 * STALE_MS);
    assert.equal(await tryLockFile(lock, OPTIONS), undefined, "a live process's lock is left alone");
    // ...until it is older than liveMs: a holder stuck that long, or a pid reused by another program.
    const taken = await tryLockFile(lock, { ...OPTIONS, liveMs: 4 * STALE_MS });
    assert.ok(taken, 'a lock older than liveMs is taken over');
    await taken.release();

    // This process's pid and start time with a nonce it did not write here: another copy of the module in this
    // process (a worker thread) holds it.
    await writeFile(lock, lockRecord(process.pid, scope, { nonce: 'feedfacefeedface' }));
    assert.equal(await tryLockFile(lock, OPTIONS), undefined, 'a lock of this very process is left alone');

    // Fresh, but its holder is gone: no need to wait for the lock to age. A dead pid; this process's own pid
    // started at another time (a restarted container reuses its pids); an older cairn's pid-only WAL start lock.
    const records = [lockRecord(await deadPid(), scope), lockRecord(process.pid, scope, { start: '1' }), String(await deadPid())];
    for (const record of records) {
      await writeFile(lock, record);
      const again = await tryLockFile(lock, OPTIONS);
      assert.ok(again, `the lock of a dead holder (${JSON.stringify(record)}) is taken over`);
      assert.notEqual(await readFile(lock, 'utf8'), record);
      await again.release();
    }
  });

  it('judges a record it cannot check (another boot or namespace, another host, none, garbage) by its age alone', async () => {
    const d = await fresh('age');
    const lock = join(d, 'm.lock');
    const uncheckable = [
      // A container sharing the host's network (and hostname) but not its pids: its pid says nothing here.
      lockRecord(await deadPid(), '00000000-0000-0000-0000-000000000000/4026531836'),
      `${await deadPid()} another-host.example 0123456789abcdef - -\n`,
      '',
      `${await deadPid()}${' '.repeat(300)}\n`,
    ];
    for (const record of uncheckable) {
      await writeFile(lock, record);
      assert.equal(await tryLockFile(lock, OPTIONS), undefined, `a fresh lock (${JSON.stringify(record.slice(0, 60))}) is left alone`);
      await age(lock, STALE_MS + 1000);
      const taken = await tryLockFile(lock, OPTIONS);
      assert.ok(taken, `an old lock (${JSON.stringify(record.slice(0, 60))}) is taken over`);
      await taken.release();
    }
    // Written an hour "ahead": the clock was stepped back since. It must not wait for the clock to catch up.
    await writeFile(lock, '');
    const future = new Date(Date.now() + 3600_000);
    await utimes(lock, future, future);
    const taken = await tryLockFile(lock, OPTIONS);
    assert.ok(taken, 'a lock from before the clock was stepped back is taken over');
    await taken.release();
    assert.deepEqual(await readdir(d), []);
  });

  it('refuses, naming it, a lock path that is not a regular file, without blocking on a FIFO', { timeout: 20_000 }, async () => {
    const d = await fresh('odd');
    const lock = join(d, 'm.lock');
    await mkdir(lock);
    await assert.rejects(tryLockFile(lock, OPTIONS), (error: Error & { code?: string }) => {
      assert.equal(error.code, 'Cairn.Locked');
      assert.match(error.message, /m\.lock is a directory, where cairn keeps a lock file/);
      return true;
    });
    await rmdir(lock);
    await symlink('/dev/zero', lock);
    await assert.rejects(tryLockFile(lock, OPTIONS), /m\.lock is a symbolic link, where cairn keeps a lock file/);
    await unlink(lock);
    // A FIFO: opening it to read would block until a writer comes (never), and the process could not even exit.
    execFileSync('mkfifo', [lock]);
    await assert.rejects(tryLockFile(lock, OPTIONS), /m\.lock is not a regular file, where cairn keeps a lock file/);
  });

  it('removes temporary files that a process killed while creating the lock left, once they are old', async () => {
    const d = await fresh('sweep');
    const lock = join(d, 'm.lock');
    const old = ['.m.lock.0123456789ab.tmp', '.m.lock.break.0123456789ab.tmp'];
    const others = ['.m.lock.fedcba987654.tmp', '.other.0123456789ab.tmp', 'm.lock.notes'];
    for (const name of [...old, ...others]) await writeFile(join(d, name), 'x');
    for (const name of [...old, '.other.0123456789ab.tmp', 'm.lock.notes']) await age(join(d, name), 120_000);
    const held = await tryLockFile(lock, OPTIONS);
    assert.ok(held);
    await held.release();
    assert.deepEqual((await readdir(d)).sort(), others.sort(), 'only the old temporary files of this lock are removed');
  });

  it('a breaker whose guard was taken from it (judged a leftover while it was descheduled) removes nothing', async () => {
    const d = await fresh('guard-lost');
    const lock = join(d, 'm.lock');
    const stuck = lockRecord(await deadPid(), scope);
    await writeFile(lock, stuck);
    // As soon as this waiter has made its guard, another takes the guard over (as if it had judged it a leftover).
    const real = fsp.link;
    fsp.link = async (from, to) => {
      await real(from, to);
      if (to === `${lock}.break`) writeFileSync(to, lockRecord(sleeper.pid as number, scope));
    };
    syncBuiltinESMExports();
    try {
      assert.equal(await tryLockFile(lock, OPTIONS), undefined);
    } finally {
      fsp.link = real;
      syncBuiltinESMExports();
    }
    assert.equal(await readFile(lock, 'utf8'), stuck, 'the lock is left to the breaker that holds the guard now');
  });

  it("a leftover guard is removed only if it is still the dead breaker's, not another waiter's new one", async () => {
    const d = await fresh('leftover-replaced');
    const lock = join(d, 'm.lock');
    await writeFile(lock, lockRecord(await deadPid(), scope));
    await writeFile(`${lock}.break`, lockRecord(await deadPid(), scope));
    // Between this waiter's judging the leftover and its removing it, another waiter removes it and makes its own.
    const live = lockRecord(sleeper.pid as number, scope);
    const real = fsp.open;
    let reads = 0;
    fsp.open = async (path, flags, mode) => {
      if (path === `${lock}.break` && ++reads === 2) writeFileSync(path, live);
      return real(path, flags, mode);
    };
    syncBuiltinESMExports();
    try {
      assert.equal(await tryLockFile(lock, OPTIONS), undefined);
    } finally {
      fsp.open = real;
      syncBuiltinESMExports();
    }
    assert.equal(await readFile(`${lock}.break`, 'utf8'), live, "the other waiter's guard stays");
  });

  it("release never removes a lock that is no longer this holder's", async () => {
    const d = await fresh('release');
    const lock = join(d, 'm.lock');
    const held = await tryLockFile(lock, OPTIONS);
    assert.ok(held);
    // Judged stale while it was held (a process stopped for longer than liveMs) and taken over by another.
    const other = lockRecord(sleeper.pid as number, scope, { nonce: 'feedfacefeedface' });
    await writeFile(lock, other);
    await held.release();
    assert.equal(await readFile(lock, 'utf8'), other, "the new holder's lock stays");
  });

  it('clears a breaker left by a waiter that died while taking over, but not a live one stopped for a while', async () => {
    const d = await fresh('breaker');
    const lock = join(d, 'm.lock');
    await writeFile(lock, lockRecord(await deadPid(), scope));
    await writeFile(`${lock}.break`, lockRecord(await deadPid(), scope));
    let held: HeldLockFile | undefined;
    for (let attempt = 0; attempt < 3 && !held; attempt++) held = await tryLockFile(lock, OPTIONS);
    assert.ok(held, 'the lock is taken within three attempts');
    await held.release();
    assert.deepEqual(await readdir(d), []);

    // A live breaker's guard is respected, even a minute old (a breaker stopped between its check and its removal
    // must not find the lock it judged replaced by a fresh one it then removes): the stale lock stays meanwhile.
    await writeFile(lock, lockRecord(await deadPid(), scope));
    await writeFile(`${lock}.break`, lockRecord(sleeper.pid as number, scope));
    await age(`${lock}.break`, 90_000);
    assert.equal(await tryLockFile(lock, OPTIONS), undefined);
    assert.equal(await tryLockFile(lock, OPTIONS), undefined);
    assert.deepEqual((await readdir(d)).sort(), ['m.lock', 'm.lock.break']);
    // One stopped for longer than any breaker could need is taken over, and then the lock.
    await age(`${lock}.break`, 11 * 60_000);
    held = undefined;
    for (let attempt = 0; attempt < 3 && !held; attempt++) held = await tryLockFile(lock, OPTIONS);
    assert.ok(held);
    await held.release();
    assert.deepEqual(await readdir(d), []);
  });
});
