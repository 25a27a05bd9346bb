import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { listKeys } from '../../../agent/commands/keys.ts';
import { removeLocks } from '../../../agent/commands/unlock.ts';
import { lockKey } from '../../../agent/core/layout.ts';
import { Lease, MAX_LEASE_MS, readLockTable } from '../../../agent/core/locks.ts';
import { Repository, type Who } from '../../../agent/core/repository.ts';
import type { DeletableStorage } from '../../../agent/core/storage.ts';
import { silentProgress } from '../../../agent/progress/progress.ts';
import { FileStorage } from '../../../agent/storage/file.ts';
import { MemoryStorage } from '../../helpers/memory-storage.ts';

/**
 * Issue 16, item 3: one junk object under locks/ or keys/ is skipped with a
 * warning, never fatal to acquiring, unlocking or opening.
 */
const who: Who = { host: 'host', user: 'user' };
const PASSPHRASE = 'junk objects passphrase';
const MINUTE = 60_000;

function lockKeys(storage: MemoryStorage): string[] {
  return [...storage.objects.keys()].filter((k) => k.startsWith('locks/')).sort();
}

/** Three kinds of unreadable lock record: junk bytes, a truncated record, a record sealed under another repository's key. */
async function putJunkLocks(repo: Repository, storage: DeletableStorage): Promise<string[]> {
  const junk = lockKey('0123456789abcdef', 0);
  await storage.put(junk, Buffer.from('not a lock record at all'));
  const truncated = lockKey('1123456789abcdef', 0);
  const sealed = repo.seal('lock', truncated, Buffer.from(JSON.stringify({ holder: '1123456789abcdef' })));
  await storage.put(truncated, sealed.subarray(0, sealed.length - 7));
  const other = await Repository.init(new MemoryStorage(), 'another passphrase', who);
  const wrongKey = lockKey('2123456789abcdef', 0);
  await storage.put(wrongKey, other.seal('lock', wrongKey, Buffer.from('{}')));
  return [junk, truncated, wrongKey];
}

describe('junk objects are skipped, never fatal (issue 16)', () => {
  it('unreadable lock records do not stop acquiring; plain unlock removes them after a lease of storage time, --all at once', async () => {
    const clock = { t: Date.parse('2026-06-01T00:00:00Z') };
    const storage = new MemoryStorage({ now: () => clock.t });
    const repo = await Repository.init(storage, PASSPHRASE, who);
    const bad = await putJunkLocks(repo, storage);

    const warnings: string[] = [];
    const lease = await Lease.acquire(repo, {
      operation: 'prune',
      exclusive: true,
      who,
      now: () => clock.t,
      onWarning: (m) => void warnings.push(m),
    });
    for (const key of bad)
      assert.ok(
        warnings.some((w) => w.includes(key)),
        `a warning names ${key}: ${warnings.join(' | ')}`,
      );
    await lease.release();

    // Fresh: plain unlock leaves them (with a warning), and removes the released lease.
    const left: string[] = [];
    const first = await removeLocks(repo, storage, { who, progress: { ...silentProgress, warn: (m) => void left.push(m) }, all: false });
    assert.equal(first.removed, 1);
    assert.deepEqual(lockKeys(storage), bad);
    assert.equal(left.length, 3);

    clock.t += MAX_LEASE_MS + 1000;
    const second = await removeLocks(repo, storage, { who, progress: silentProgress, all: false });
    assert.deepEqual(second, { removed: 3, stillActive: 0 });
    assert.deepEqual(lockKeys(storage), []);

    await putJunkLocks(repo, storage);
    const all = await removeLocks(repo, storage, { who, progress: silentProgress, all: true });
    assert.deepEqual(all, { removed: 3, stillActive: 0 });
    assert.deepEqual(lockKeys(storage), []);
  });

  it('junk written above a live holder’s records does not hide its lease', async () => {
    const clock = { t: Date.parse('2026-06-01T00:00:00Z') };
    const storage = new MemoryStorage({ now: () => clock.t });
    const repo = await Repository.init(storage, PASSPHRASE, who);
    const live = await Lease.acquire(repo, { operation: 'backup', exclusive: false, who, now: () => clock.t });
    await storage.put(lockKey(live.holder, 99_999_999), Buffer.from('junk'));
    await assert.rejects(
      Lease.acquire(repo, { operation: 'prune', exclusive: true, who, now: () => clock.t, onWarning: () => undefined }),
      (error: Error & { code?: string }) => error.code === 'Cairn.Locked',
    );
    const table = await readLockTable(repo);
    assert.deepEqual(
      table.states.filter((s) => s.state !== 'released').map((s) => [s.record.holder, s.state]), // the refused prune's record is released
      [[live.holder, 'active']],
    );
    assert.deepEqual(
      table.unreadable.map((u) => u.key),
      [lockKey(live.holder, 99_999_999)],
    );
    await live.release();
  });

  it('on the file backend (real modification times) a junk lock record does not stop a lease or unlock --all', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'cairn-junk-'));
    try {
      const storage = new FileStorage(dir);
      const repo = await Repository.init(storage, PASSPHRASE, who);
      const bad = await putJunkLocks(repo, storage);
      const lease = await Lease.acquire(repo, { operation: 'backup', exclusive: true, who, onWarning: () => undefined });
      await lease.confirmHeld();
      await lease.release();
      const report = await removeLocks(repo, storage, { who, progress: silentProgress, all: true });
      assert.deepEqual(report, { removed: 1 + bad.length, stillActive: 0 });
      const remaining: string[] = [];
      for await (const o of storage.list('locks/')) remaining.push(o.key);
      assert.deepEqual(remaining, []);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('a junk keys/ object does not stop opening with the right passphrase; key list shows it unreadable', async () => {
    const storage = new MemoryStorage();
    const repo = await Repository.init(storage, PASSPHRASE, who);
    const junkKey = `keys/${'0'.repeat(32)}`;
    await storage.put(junkKey, Buffer.from('{"kind":"passphrase", truncated'));
    await storage.put(`keys/${'f'.repeat(32)}`, Buffer.from(JSON.stringify({ kind: 'nonsense' })));

    const warnings: string[] = [];
    const opened = await Repository.open(storage, PASSPHRASE, { warn: (m) => void warnings.push(m) });
    assert.equal(opened.id, repo.id);
    assert.equal(opened.keyId, repo.keyId);
    assert.equal(warnings.length, 2);
    assert.match(warnings[0] ?? '', new RegExp(junkKey));

    const keys = await listKeys(opened);
    assert.deepEqual(keys.map((k) => [k.id, k.kind, k.current]).sort(), [
      ['0'.repeat(32), 'unreadable', false],
      [repo.keyId, 'passphrase', true],
      ['f'.repeat(32), 'unreadable', false],
    ]);
    await assert.rejects(Repository.open(storage, 'wrong passphrase', { warn: () => undefined }), (error: Error & { code?: string }) => {
      assert.equal(error.code, 'Cairn.WrongKey');
      return true;
    });
  });

  it('on the file backend a lease held by a host whose clock is 10 minutes slow is active', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'cairn-junk-'));
    try {
      const storage = new FileStorage(dir);
      const repo = await Repository.init(storage, PASSPHRASE, who);
      const lease = await Lease.acquire(repo, { operation: 'backup', exclusive: false, who, now: () => Date.now() - 10 * MINUTE });
      const table = await readLockTable(repo);
      assert.deepEqual(
        table.states.map((s) => s.state),
        ['active'],
      );
      await lease.release();
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
