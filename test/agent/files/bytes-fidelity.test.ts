import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { chmod, link, lstat, mkdir, symlink, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { copy } from '../../../agent/commands/copy.ts';
import { Repository } from '../../../agent/core/repository.ts';
import { silentProgress } from '../../../agent/progress/progress.ts';
import { tempDir, initSmallRepo, fileRepo, backupDir, restoreTo, SMALL } from '../../helpers/repo.ts';
import { walkBytes } from './tree-compare.ts';

const under = (dir: string | Buffer, ...names: Buffer[]): Buffer =>
  Buffer.concat([Buffer.from(dir), ...names.flatMap((n) => [Buffer.from('/'), n])]);
const OLD = new Date(Date.UTC(1999, 11, 31, 23, 59, 59));

describe('names as bytes across hard links and copy', () => {
  let work: Awaited<ReturnType<typeof tempDir>>;
  let repo: Repository;
  let src: string;
  const first = Buffer.from([0x61, 0xff]);
  const second = Buffer.from([0x62, 0xfe, 0xfd]);
  const subdir = Buffer.from([0xc0, 0xaf]); // an overlong "/": not UTF-8, and no separator as bytes
  before(async () => {
    work = await tempDir('bytes-fidelity');
    repo = await initSmallRepo(fileRepo(join(work.path, 'repo')));
    src = join(work.path, 'src');
    await mkdir(under(src, subdir), { recursive: true });
    await writeFile(under(src, first), 'one inode, three names\n');
    await link(under(src, first), under(src, second));
    await link(under(src, first), under(src, subdir, Buffer.from('plain')));
    await symlink(under('..', first), under(src, subdir, Buffer.from([0x6c, 0xff])));
    await chmod(src, 0o750);
    await utimes(src, OLD, OLD);
  });
  after(async () => {
    await work.remove();
  });

  it('a hard-link group whose members have names that are not UTF-8 comes back as one inode under the same bytes', async () => {
    const snapshot = await backupDir(repo, src);
    const target = join(work.path, 'target');
    const { result } = await restoreTo(repo, snapshot.id, target);
    assert.deepEqual(result.errors, []);
    assert.deepEqual(await walkBytes(Buffer.from(target)), await walkBytes(Buffer.from(src)));
    const inodes = await Promise.all(
      [under(target, first), under(target, second), under(target, subdir, Buffer.from('plain'))].map((p) => lstat(p)),
    );
    assert.equal(new Set(inodes.map((s) => s.ino)).size, 1, 'all three names are one inode');
    assert.equal(inodes[0]?.nlink, 3);
  });

  it('copy to another repository keeps nameBytes, targetBytes and the root metadata', async () => {
    const snapshot = await backupDir(repo, src);
    const other = await Repository.init(fileRepo(join(work.path, 'other')), 'another passphrase', { host: 'h', user: 'u' }, SMALL);
    await copy(repo, other, {
      snapshots: [snapshot.id],
      hosts: [],
      tags: [],
      who: { host: 'h', user: 'u' },
      concurrency: 2,
      progress: silentProgress,
    });
    const copied = await other.readSnapshot(snapshot.id);
    assert.deepEqual(copied.root, snapshot.root);
    const target = join(work.path, 'target-copied');
    await restoreTo(other, snapshot.id, target);
    assert.deepEqual(await walkBytes(Buffer.from(target)), await walkBytes(Buffer.from(src)));
    const root = await lstat(target);
    assert.equal(root.mode & 0o7777, 0o750);
    assert.equal(root.mtimeMs, OLD.getTime());
  });
});
