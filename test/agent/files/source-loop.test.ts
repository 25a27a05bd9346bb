import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { PieceReader } from '../../../agent/core/piece-reader.ts';
import type { Repository } from '../../../agent/core/repository.ts';
import { RepositorySource } from '../../../agent/engines/source.ts';
import { tempDir, initSmallRepo, fileRepo } from '../../helpers/repo.ts';
import { craftSnapshot, META } from './craft.ts';

describe('an engine snapshot source over crafted trees', () => {
  let work: Awaited<ReturnType<typeof tempDir>>;
  let repo: Repository;
  before(async () => {
    work = await tempDir('source-loop');
    repo = await initSmallRepo(fileRepo(join(work.path, 'repo')));
  });
  after(async () => {
    await work.remove();
  });

  it('refuses a loop of trees instead of listing it forever', async () => {
    const id = await craftSnapshot(repo, async (_t, f, addTreeAs) => {
      const loop = randomBytes(32);
      await addTreeAs(loop, [
        { ...f, name: 'dump.sql' },
        { ...META, name: 'loop', type: 'dir', subtree: loop.toString('hex') },
      ]);
      return [{ ...META, name: 'loop', type: 'dir', subtree: loop.toString('hex') }];
    });
    const snapshot = await repo.readSnapshot(id);
    const source = new RepositorySource(snapshot, new PieceReader(repo, await repo.loadIndex()), async () => undefined);
    await assert.rejects(source.list(), /holds itself|are not that piece/);
  });

  it('lists a snapshot whose sibling directories share one tree (not a loop)', async () => {
    const id = await craftSnapshot(repo, async (t, f) => {
      const shared = await t([{ ...f, name: 'dump.sql' }]);
      return [
        { ...META, name: 'a', type: 'dir', subtree: shared },
        { ...META, name: 'b', type: 'dir', subtree: shared },
      ];
    });
    const snapshot = await repo.readSnapshot(id);
    const source = new RepositorySource(snapshot, new PieceReader(repo, await repo.loadIndex()), async () => undefined);
    assert.deepEqual((await source.list()).map((f) => f.path).sort(), ['a/dump.sql', 'b/dump.sql']);
  });
});
