import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdir, readdir, writeFile, stat, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { runCli, runCliProcess, lastOfType } from '../../helpers/cli.ts';
import { tempDir, PASSPHRASE, ageLockRecords } from '../../helpers/repo.ts';
import { underLock } from '../../../agent/commands/operation.ts';
import { Repository } from '../../../agent/core/repository.ts';
import { silentProgress } from '../../../agent/progress/progress.ts';
import { FileStorage } from '../../../agent/storage/file.ts';

async function dataBytes(repo: string): Promise<number> {
  let total = 0;
  const walk = async (dir: string): Promise<void> => {
    for (const e of await readdir(dir, { withFileTypes: true }).catch(() => [])) {
      if (e.isDirectory()) await walk(join(dir, e.name));
      else total += (await stat(join(dir, e.name))).size;
    }
  };
  await walk(join(repo, 'packs'));
  await walk(join(repo, 'index'));
  return total;
}

async function listPacks(repo: string): Promise<string[]> {
  const out: string[] = [];
  for (const d of await readdir(join(repo, 'packs')))
    for (const f of await readdir(join(repo, 'packs', d))) out.push(`${f}:${(await stat(join(repo, 'packs', d, f))).size}`);
  return out.sort();
}

describe('repository lifecycle through the CLI', () => {
  let work: Awaited<ReturnType<typeof tempDir>>;
  before(async () => {
    work = await tempDir('lifecycle');
  });
  after(async () => {
    await work.remove();
  });

  it('forget + prune bring the repository back to the size of what remains, and history records every operation in order', async () => {
    const repo = join(work.path, 'fp-repo');
    const src = join(work.path, 'fp-src');
    await mkdir(src);
    const env = { CAIRN_REPOSITORY: repo, CAIRN_PASSWORD: PASSPHRASE };
    assert.equal((await runCli(['init'], env)).code, 0);
    const ids: string[] = [];
    await writeFile(join(src, 'shared.bin'), randomBytes(2_000_000));
    for (let i = 0; i < 4; i++) {
      await rm(join(src, `unique-${i - 1}.bin`), { force: true });
      await writeFile(join(src, `unique-${i}.bin`), randomBytes(3_000_000));
      const r = await runCli(['backup', src, '--tag', `n${i}`], env);
      assert.equal(r.code, 0, r.stderr);
      ids.push(lastOfType(r, 'summary')?.snapshotId as string);
    }
    const before = await dataBytes(repo);
    const dry = await runCli(['forget', '--keep-last', '2', '--dry-run'], env);
    assert.equal(dry.code, 0, dry.stderr);
    const plan = lastOfType(dry, 'forget') as {
      groups: Array<{ keep: Array<{ id: string; reasons: string[] }>; remove: Array<{ id: string; reasons: string[] }> }>;
    };
    assert.deepEqual(plan.groups[0]!.remove.map((d) => d.id).sort(), [ids[0], ids[1]].sort());
    assert.ok(plan.groups[0]!.keep.every((d) => d.reasons.length > 0));
    assert.equal(
      (lastOfType(await runCli(['snapshots'], env), 'snapshots') as { snapshots: unknown[] }).snapshots.length,
      4,
      'a dry run deletes nothing',
    );

    assert.equal((await runCli(['forget', '--keep-last', '2'], env)).code, 0);
    const pruned = await runCli(['prune'], env);
    assert.equal(pruned.code, 0, pruned.stderr);
    const report = lastOfType(pruned, 'prune') as { bytesFreed: number; packsDeleted: number; packsRepacked: number };
    const after = await dataBytes(repo);
    assert.ok(report.bytesFreed > 5_000_000, `freed ${report.bytesFreed}`);

    // The same two snapshots' data in a fresh repository is the yardstick.
    const fresh = join(work.path, 'fp-fresh');
    const freshEnv = { CAIRN_REPOSITORY: fresh, CAIRN_PASSWORD: PASSPHRASE };
    assert.equal((await runCli(['init'], freshEnv)).code, 0);
    const restored = join(work.path, 'fp-restored-2');
    assert.equal((await runCli(['restore', ids[2]!, '--target', restored], env)).code, 0);
    assert.equal((await runCli(['backup', restored], freshEnv)).code, 0);
    assert.equal((await runCli(['backup', src], freshEnv)).code, 0);
    const yardstick = await dataBytes(fresh);
    assert.ok(after < before, `${after} < ${before}`);
    assert.ok(Math.abs(after - yardstick) / yardstick < 0.05, `after prune ${after} bytes vs ${yardstick} for the remaining data alone`);

    const verified = await runCli(['verify', '--read-data'], env);
    assert.equal(verified.code, 0, verified.stdout);
    assert.equal((await runCli(['key', 'add'], { ...env, CAIRN_NEW_PASSWORD: 'second' })).code, 0);

    const history = await runCli(['history', '--json'], env);
    const events = (
      lastOfType(history, 'history') as { events: Array<{ event: string; time: string; host: string; user: string; tool: string }> }
    ).events;
    const expected = [
      'init',
      'backup.started',
      'backup.committed',
      'backup.started',
      'backup.committed',
      'backup.started',
      'backup.committed',
      'backup.started',
      'backup.committed',
      'forget',
      'prune',
      'restore.finished',
      'verify.finished',
      'key.added',
    ];
    assert.deepEqual(
      events.map((e) => e.event),
      expected,
    );
    for (const e of events) assert.ok(e.time && e.host && e.user && e.tool.startsWith('cairn '), JSON.stringify(e));
    const times = events.map((e) => e.time);
    assert.deepEqual([...times].sort(), times, 'in time order');
  });

  it('a killed lock holder blocks exclusive work until its lease expires; the next operation takes over and says so', async () => {
    const repo = join(work.path, 'lock-repo');
    const src = join(work.path, 'lock-src');
    await mkdir(src);
    for (let i = 0; i < 4; i++) await writeFile(join(src, `big-${i}.bin`), randomBytes(24 << 20));
    // A lease far longer than the test: the blocked prune below cannot see it run out, however slow the machine.
    const leaseMs = 10 * 60_000;
    const env = { CAIRN_REPOSITORY: repo, CAIRN_PASSWORD: PASSPHRASE, CAIRN_LOCK_LEASE: String(leaseMs / 1000) };
    assert.equal((await runCli(['init'], env)).code, 0);
    let killed = false;
    const victim = runCliProcess(['backup', src], env, {
      onSpawn: (pid) => {
        const poll = setInterval(() => {
          void readdir(join(repo, 'packs')).then(
            (d) => {
              if (d.length > 0 && !killed) {
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
    assert.equal((await victim).signal, 'SIGKILL');
    const blocked = await runCli(['prune'], env);
    assert.equal(blocked.code, 11, blocked.stderr);
    assert.match(blocked.stderr, /locked: shared lock for backup by .* pid \d+[\s\S]*lease runs out/);

    // The dead holder's lease runs out by the storage's clock (its records aged) instead of being waited out.
    await ageLockRecords(repo, leaseMs + 60_000);
    const opened = await Repository.open(new FileStorage(repo), PASSPHRASE);
    const warnings: string[] = [];
    const progress = { ...silentProgress, warn: (message: string) => void warnings.push(message) };
    await underLock({ repo: opened, who: { host: 'test-host', user: 'tester' }, progress }, 'backup', false, async () => {
      assert.equal((await runCli(['prune'], env)).code, 11, 'the taker holds a lease of its own meanwhile');
    });
    assert.equal(warnings.length, 1, warnings.join('\n'));
    assert.match(warnings[0] ?? '', /took over a stale lock: backup by .* pid \d+, started .*, lease expired/);
    const history = lastOfType(await runCli(['history'], env), 'history') as { events: Array<{ event: string }> };
    assert.ok(history.events.some((e) => e.event === 'lock.takeover'));
    const next = await runCli(['backup', src], env);
    assert.equal(next.code, 0, next.stderr);
    assert.ok(!next.lines.some((l) => l.type === 'warning'), 'a stale lock is reported once, then it is closed');
    assert.equal((await runCli(['prune'], env)).code, 0);
    assert.equal((await runCli(['verify', '--read-data'], env)).code, 0);
  });

  it('backups and prunes run at the same time, many times, and every committed snapshot still verifies', async () => {
    const repo = join(work.path, 'race-repo');
    const src = join(work.path, 'race-src');
    await mkdir(src);
    const env = { CAIRN_REPOSITORY: repo, CAIRN_PASSWORD: PASSPHRASE };
    assert.equal((await runCli(['init'], env)).code, 0);
    for (let round = 0; round < 6; round++) {
      await writeFile(join(src, `round-${round}.bin`), randomBytes(1_500_000));
      if (round > 1) await rm(join(src, `round-${round - 2}.bin`));
      // This is about what survives the race, not how fast it runs: a prune locks twice (mark, then settle
      // after the grace), so the wait is generous. Rounds took up to a minute while lock waits retried on a
      // fixed one-second beat (the three met at every retry); with random retries they took 0.3–2 s here.
      const [b, f, p] = await Promise.all([
        runCli(['--lock-wait', '5m', 'backup', src], env),
        runCli(['--lock-wait', '5m', 'forget', '--keep-last', '2'], env),
        runCli(['--lock-wait', '5m', 'prune'], env),
      ]);
      assert.equal(b.code, 0, b.stderr);
      assert.equal(f.code, 0, f.stderr);
      assert.equal(p.code, 0, p.stderr);
    }
    const verified = await runCli(['verify', '--read-data'], env);
    assert.equal(verified.code, 0, verified.stdout);
    const snapshots = (lastOfType(await runCli(['snapshots'], env), 'snapshots') as { snapshots: unknown[] }).snapshots;
    assert.ok(snapshots.length >= 2 && snapshots.length <= 3);
  });

  it('several passphrases open one repository; the last key stays; passwd rewrites no data', async () => {
    const repo = join(work.path, 'keys-repo');
    const src = join(work.path, 'keys-src');
    await mkdir(src);
    await writeFile(join(src, 'a.bin'), randomBytes(100_000));
    const env = { CAIRN_REPOSITORY: repo, CAIRN_PASSWORD: 'first' };
    assert.equal((await runCli(['init'], env)).code, 0);
    assert.equal((await runCli(['backup', src], env)).code, 0);
    const packs = await listPacks(repo);
    assert.equal((await runCli(['key', 'add'], { ...env, CAIRN_NEW_PASSWORD: 'second' })).code, 0);
    assert.equal((await runCli(['snapshots'], { ...env, CAIRN_PASSWORD: 'second' })).code, 0, 'the new passphrase opens it');
    const keys = (lastOfType(await runCli(['key', 'list'], env), 'keys') as { keys: Array<{ id: string; current: boolean }> }).keys;
    assert.equal(keys.length, 2);
    const first = keys.find((k) => k.current)!;
    const refused = await runCli(['key', 'remove', first.id], env);
    assert.equal(refused.code, 2, 'cannot remove the key in use');
    assert.equal((await runCli(['key', 'remove', first.id], { ...env, CAIRN_PASSWORD: 'second' })).code, 0);
    assert.equal((await runCli(['snapshots'], env)).code, 12, 'the removed passphrase no longer opens it');
    const last = await runCli(['key', 'remove', keys.find((k) => !k.current)!.id], { ...env, CAIRN_PASSWORD: 'second' });
    assert.equal(last.code, 2);
    assert.match(last.stderr, /last key/);
    assert.equal((await runCli(['key', 'passwd'], { ...env, CAIRN_PASSWORD: 'second', CAIRN_NEW_PASSWORD: 'third' })).code, 0);
    assert.equal((await runCli(['snapshots'], { ...env, CAIRN_PASSWORD: 'second' })).code, 12);
    assert.equal((await runCli(['verify', '--read-data'], { ...env, CAIRN_PASSWORD: 'third' })).code, 0);
    assert.deepEqual(await listPacks(repo), packs, 'no pack was rewritten');
    const st = lastOfType(await runCli(['stats'], { ...env, CAIRN_PASSWORD: 'third' }), 'stats') as {
      snapshots: number;
      logicalBytes: number;
      storedBytes: number;
    };
    assert.equal(st.snapshots, 1);
    assert.equal(st.logicalBytes, 100_000);
    assert.ok(st.storedBytes > 100_000 && st.storedBytes < 110_000);
    assert.equal((await runCli(['check'], { ...env, CAIRN_PASSWORD: 'third' })).code, 0);
  });

  it('pinned snapshots survive forget; unpinned ones follow the policy', async () => {
    const repo = join(work.path, 'pin-repo');
    const src = join(work.path, 'pin-src');
    await mkdir(src);
    const env = { CAIRN_REPOSITORY: repo, CAIRN_PASSWORD: PASSPHRASE };
    assert.equal((await runCli(['init'], env)).code, 0);
    const ids: string[] = [];
    for (let i = 0; i < 3; i++) {
      await writeFile(join(src, 'f.txt'), `version ${i}`);
      ids.push(lastOfType(await runCli(['backup', src], env), 'summary')?.snapshotId as string);
    }
    assert.equal((await runCli(['pin', ids[0]!.slice(0, 8)], env)).code, 0);
    const f = lastOfType(await runCli(['forget', '--keep-last', '1'], env), 'forget') as {
      groups: Array<{ keep: Array<{ id: string; reasons: string[] }>; remove: Array<{ id: string }> }>;
    };
    assert.deepEqual(
      f.groups[0]!.remove.map((d) => d.id),
      [ids[1]],
    );
    assert.deepEqual(f.groups[0]!.keep.find((d) => d.id === ids[0])?.reasons, ['pinned']);
    assert.equal((await runCli(['unpin', ids[0]!], env)).code, 0);
    const g = lastOfType(await runCli(['forget', '--keep-last', '1'], env), 'forget') as {
      groups: Array<{ remove: Array<{ id: string }> }>;
    };
    assert.deepEqual(
      g.groups[0]!.remove.map((d) => d.id),
      [ids[0]],
    );
    const bad = await runCli(['forget'], env);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /no retention rule/);
  });
});
