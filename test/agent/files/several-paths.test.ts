import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { PACKS_PREFIX } from '../../../agent/core/layout.ts';
import type { Repository } from '../../../agent/core/repository.ts';
import { tempDir, initSmallRepo, fileRepo, backupDir } from '../../helpers/repo.ts';

describe('several backup paths: their names are checked before anything is stored', () => {
  let work: Awaited<ReturnType<typeof tempDir>>;
  let repo: Repository;
  before(async () => {
    work = await tempDir('several-paths');
    repo = await initSmallRepo(fileRepo(join(work.path, 'repo')));
  });
  after(async () => {
    await work.remove();
  });

  async function packs(): Promise<number> {
    const keys: string[] = [];
    for await (const object of repo.storage.list(PACKS_PREFIX)) keys.push(object.key);
    return keys.length;
  }

  it('two paths with the same last name are refused before the first one is read into packs (as the format document says)', async () => {
    const a = join(work.path, 'a', 'data');
    const b = join(work.path, 'b', 'data');
    await mkdir(a, { recursive: true });
    await mkdir(b, { recursive: true });
    // More than a pack's worth (1 MiB in the small test repository), so reading it would upload packs.
    await writeFile(join(a, 'big'), randomBytes(3 << 20));
    const before = await packs();
    await assert.rejects(backupDir(repo, a, { paths: [a, b] }), /two backup paths share the name "data"/);
    assert.equal(await packs(), before, 'no pack was uploaded for a backup refused on its arguments');
  });

  it('a path with no last name beside others is refused before the others are read', async () => {
    const c = join(work.path, 'c');
    await mkdir(c);
    await writeFile(join(c, 'big'), randomBytes(3 << 20));
    const before = await packs();
    await assert.rejects(backupDir(repo, c, { paths: [c, '/'] }), /beside other paths/);
    assert.equal(await packs(), before);
  });

  it('a missing path is refused before the paths given before it are read', async () => {
    const d = join(work.path, 'd');
    await mkdir(d);
    await writeFile(join(d, 'big'), randomBytes(3 << 20));
    const before = await packs();
    await assert.rejects(backupDir(repo, d, { paths: [d, join(work.path, 'missing')] }), /cannot back up .*missing/);
    assert.equal(await packs(), before);
  });
});
