import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { operationContext, underLock } from '../../../agent/commands/operation.ts';
import { CairnError } from '../../../agent/core/errors.ts';
import { Repository } from '../../../agent/core/repository.ts';
import type { ObjectInfo, Storage } from '../../../agent/core/storage.ts';
import { silentProgress } from '../../../agent/progress/progress.ts';
import { FileStorage } from '../../../agent/storage/file.ts';
import { runCli } from '../../helpers/cli.ts';
import { PASSPHRASE, SMALL, backupDir, restoreTo, tempDir } from '../../helpers/repo.ts';

/**
 * Stand-in for a repository this host may read but not write (a replica, a read-only mount, a
 * bucket seen through a read-only role): the real file backend, whose writes fail the way a cloud
 * backend's AccessDenied does (Cairn.Storage). Tests run as root, where chmod cannot make a
 * directory read-only, so the refusal sits at the Storage interface.
 */
class ReadOnlyStorage implements Storage {
  readonly location: string;
  readonly atomicCreate: boolean;
  writes = 0;
  private readonly inner: Storage;
  constructor(inner: Storage) {
    this.inner = inner;
    this.location = inner.location;
    this.atomicCreate = inner.atomicCreate;
  }
  get(key: string): Promise<Buffer> {
    return this.inner.get(key);
  }
  getRange(key: string, offset: number, length: number): Promise<Buffer> {
    return this.inner.getRange(key, offset, length);
  }
  put(key: string): Promise<void> {
    this.writes++;
    return Promise.reject(new CairnError('Cairn.Storage', `${this.location}: access denied writing ${key} (read-only repository)`));
  }
  stat(key: string): Promise<ObjectInfo | undefined> {
    return this.inner.stat(key);
  }
  list(prefix: string): AsyncIterable<ObjectInfo> {
    return this.inner.list(prefix);
  }
}

const who = { host: 'test-host', user: 'tester' };

describe('--no-lock on a read-only repository (issue 16)', () => {
  it('restore --no-lock works; without it restore fails naming the lock write and suggesting --no-lock; backup refuses --no-lock', async () => {
    const repoDir = await tempDir('nolock-repo');
    const src = await tempDir('nolock-src');
    const out = await tempDir('nolock-out');
    const out2 = await tempDir('nolock-out2');
    try {
      const writable = new FileStorage(repoDir.path);
      const repo = await Repository.init(writable, PASSPHRASE, who, SMALL);
      await writeFile(join(src.path, 'a.txt'), 'replicated data\n');
      const snapshot = await backupDir(repo, src.path);

      const readOnly = new ReadOnlyStorage(new FileStorage(repoDir.path));
      const ro = await Repository.open(readOnly, PASSPHRASE);
      await assert.rejects(
        restoreTo(ro, 'latest', out.path),
        (error: unknown) =>
          error instanceof CairnError &&
          error.code === 'Cairn.Storage' &&
          error.message.includes('restore could not write its lock') &&
          (error.hint ?? '').includes('--no-lock'),
      );

      const before = readOnly.writes;
      const done = await restoreTo(ro, 'latest', out2.path, { noLock: true });
      assert.equal(done.snapshot.id, snapshot.id);
      assert.equal(await readFile(join(out2.path, 'a.txt'), 'utf8'), 'replicated data\n');
      assert.equal(readOnly.writes, before, 'nothing was written to the repository');

      let ran = false;
      await assert.rejects(
        underLock(operationContext(ro, { who, progress: silentProgress, noLock: true }), 'backup', false, async () => {
          ran = true;
        }),
        (error: unknown) => error instanceof CairnError && error.code === 'Cairn.Usage' && error.message.includes('--no-lock'),
      );
      assert.equal(ran, false, 'a writing operation never runs without its lock');
    } finally {
      for (const d of [repoDir, src, out, out2]) await d.remove();
    }
  });

  it('the CLI: ls, find, dump, snapshots and restore --no-lock write no lock record and no history event', async () => {
    const repoDir = await tempDir('nolock-cli');
    const src = await tempDir('nolock-cli-src');
    const out = await tempDir('nolock-cli-out');
    try {
      const repo = await Repository.init(new FileStorage(repoDir.path), PASSPHRASE, who, SMALL);
      await writeFile(join(src.path, 'a.txt'), 'hello\n');
      await backupDir(repo, src.path);
      const count = async (dir: string): Promise<number> =>
        (await readdir(join(repoDir.path, dir), { recursive: true }).catch(() => [])).length;
      const locks = await count('locks');
      const history = await count('history');
      const env = { CAIRN_PASSWORD: PASSPHRASE };
      const base = ['--repo', repoDir.path];
      for (const args of [
        ['ls', '--no-lock', 'latest'],
        ['find', '--no-lock', 'a.txt'],
        ['dump', '--no-lock', 'latest', 'a.txt'],
        ['snapshots', '--no-lock'],
        ['restore', '--no-lock', 'latest', '--target', out.path],
      ]) {
        const r = await runCli([...base, ...args], env);
        assert.equal(r.code, 0, `${args.join(' ')}: ${r.stderr}`);
      }
      assert.equal(await readFile(join(out.path, 'a.txt'), 'utf8'), 'hello\n');
      assert.equal(await count('locks'), locks, 'no lock record');
      assert.equal(await count('history'), history, 'no history event');
      const locked = await runCli([...base, 'ls', 'latest'], env);
      assert.equal(locked.code, 0);
      assert.ok((await count('history')) + (await count('locks')) > history + locks, 'without --no-lock, ls locks as before');
    } finally {
      for (const d of [repoDir, src, out]) await d.remove();
    }
  });
});
