import { after, before, describe, it, mock } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { contentBytes, contentSlices } from '../../../agent/core/file-content.ts';
import { PieceReader } from '../../../agent/core/piece-reader.ts';
import { Repository } from '../../../agent/core/repository.ts';
import { decodeTree, type TreeEntry } from '../../../agent/core/tree.ts';
import { CountingStorage } from '../../helpers/counting-storage.ts';
import { PASSPHRASE, backupDir, tempDir } from '../../helpers/repo.ts';

/**
 * A file's bytes as verify's page checks and the engines' restores read them (core/file-content.ts):
 * the next slices' pieces are read ahead, so frames are fetched and opened side by side, within a
 * bound, and the bytes and errors still come out in file order.
 */
describe('contentBytes reads ahead', () => {
  let work: Awaited<ReturnType<typeof tempDir>>;
  let repo: Repository;
  let storage: CountingStorage;
  let file: Buffer;
  let entry: TreeEntry;
  before(async () => {
    work = await tempDir('content-ahead');
    const data = join(work.path, 'data');
    await mkdir(data);
    // The default chunker (pieces of about 1 MiB, each its own frame): a dozen frames for one file.
    file = randomBytes(12 << 20);
    await writeFile(join(data, 'file.bin'), file);
    storage = new CountingStorage(join(work.path, 'repo'));
    repo = await Repository.init(storage, PASSPHRASE, { host: 'test-host', user: 'tester' });
    const snapshot = await repo.readSnapshot((await backupDir(repo, data)).id);
    const reader = new PieceReader(repo, await repo.loadIndex());
    entry = decodeTree(await reader.read(Buffer.from(snapshot.tree, 'hex')), snapshot.tree).entries.find(
      (e) => e.name === 'file.bin',
    ) as TreeEntry;
  });
  after(() => work.remove());

  it('yields the file exactly, with frames read side by side and at most 8 pieces ahead', async () => {
    const reader = new PieceReader(repo, await repo.loadIndex(), { cacheFrames: 1 });
    const started = mock.method(reader, 'readAhead');
    storage.most = 0;
    const parts: Buffer[] = [];
    let mostAhead = 0;
    try {
      for await (const bytes of contentBytes(entry, reader)) {
        parts.push(Buffer.from(bytes));
        mostAhead = Math.max(mostAhead, started.mock.callCount() - parts.length);
      }
    } finally {
      started.mock.restore();
    }
    assert.ok(Buffer.concat(parts).equals(file), 'the bytes are the file');
    assert.ok(parts.length >= 8, `${parts.length} pieces`);
    assert.ok(storage.most >= 2, `frames read side by side (at most ${storage.most} at once)`);
    assert.ok(mostAhead <= 8, `${mostAhead} pieces ahead`);
  });

  it('a piece missing from the index fails in its turn: the slices before it come out first', async () => {
    const reader = new PieceReader(repo, await repo.loadIndex());
    const ids: string[] = [];
    for await (const slice of contentSlices(entry, reader)) ids.push(slice.id.toString('hex'));
    const missing = randomBytes(32).toString('hex');
    const crafted: TreeEntry = { ...entry, contentLists: undefined, content: [...ids.slice(0, 3), missing, ...ids.slice(3)] };
    const parts: Buffer[] = [];
    await assert.rejects(
      (async () => {
        for await (const bytes of contentBytes(crafted, reader)) parts.push(Buffer.from(bytes));
      })(),
      new RegExp(`piece ${missing} is not in the repository index`),
    );
    assert.equal(parts.length, 3, 'the three pieces before the missing one');
    assert.ok(Buffer.concat(parts).equals(file.subarray(0, Buffer.concat(parts).length)), 'and they are the file’s first bytes');
  });
});
