import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { contentSlices } from '../../../agent/core/file-content.ts';
import { PieceReader } from '../../../agent/core/piece-reader.ts';
import { Repository } from '../../../agent/core/repository.ts';
import { decodeTree, type TreeEntry } from '../../../agent/core/tree.ts';
import { FrameThreads } from '../../../agent/pipeline/frame-threads.ts';
import { CountingStorage } from '../../helpers/counting-storage.ts';
import { PASSPHRASE, backupDir, fileRepo, initSmallRepo, tempDir } from '../../helpers/repo.ts';

/**
 * What a restore's read-ahead counts and holds (docs/performance-notes.md, "Restore: pieces scattered
 * over many frames"): a piece read ahead counts its own bytes and comes back as its own copy when it
 * is small beside its frame, so waiting for its writer it does not keep the decoded frame alive; the
 * frames being fetched and opened are bounded apart, in bytes, whatever reads them.
 */
describe('pieces read ahead', () => {
  let work: Awaited<ReturnType<typeof tempDir>>;
  let repoPath: string;
  let repo: Repository;
  let pieces: Buffer[];
  before(async () => {
    work = await tempDir('read-ahead');
    const data = join(work.path, 'data');
    await mkdir(data);
    // Small chunks (16 KiB on average) in 1 MiB frames: dozens of pieces per frame, several frames.
    await writeFile(join(data, 'file.bin'), randomBytes(3 << 20));
    repoPath = join(work.path, 'repo');
    repo = await initSmallRepo(fileRepo(repoPath));
    const snapshot = await repo.readSnapshot((await backupDir(repo, data)).id);
    const reader = new PieceReader(repo, await repo.loadIndex());
    const entry = decodeTree(await reader.read(Buffer.from(snapshot.tree, 'hex')), snapshot.tree).entries.find(
      (e) => e.name === 'file.bin',
    );
    pieces = [];
    for await (const slice of contentSlices(entry as TreeEntry, reader)) pieces.push(slice.id);
    assert.ok(pieces.length > 100, `${pieces.length} pieces`);
  });
  after(() => work.remove());

  for (const through of ['the main thread', 'a frame thread'] as const) {
    it(`counts a piece's bytes and returns it detached from its frame (${through})`, async () => {
      const frames = through === 'a frame thread' ? new FrameThreads(repo.pieceIdKey(), 1) : undefined;
      try {
        const reader = new PieceReader(repo, await repo.loadIndex(), frames ? { opener: frames } : {});
        const [first, second] = pieces as [Buffer, Buffer];
        const [a, b] = [reader.location(first), reader.location(second)];
        assert.equal(a.frameOffset, b.frameOffset, 'the first two pieces share a frame');
        assert.ok(a.frameLength > 16 * a.length, `frame ${a.frameLength} bytes, piece ${a.length}`);
        for (const [id, location] of [
          [first, a],
          [second, b],
        ] as const) {
          const read = reader.readAhead(id);
          assert.equal(read.holds, location.length, 'the read counts the piece');
          const data = await read.data;
          assert.equal(data.length, location.length);
          assert.ok(repo.pieceId(data).equals(id), 'the piece is the one asked for');
          assert.ok(
            data.buffer.byteLength < 2 * location.length + 8192,
            `the piece (${data.length} bytes) keeps ${data.buffer.byteLength} bytes alive, not its frame`,
          );
        }
        // An ordinary read (tree and list pieces, decoded at once) keeps its view into the frame.
        assert.ok((await reader.read(first)).buffer.byteLength > 4 * a.length);
      } finally {
        await frames?.close();
      }
    });
  }

  it('fetches and opens at most fetchBytes of frames at once, however many reads are waiting', async () => {
    // The first piece of each frame: every read needs a frame of its own.
    const index = await repo.loadIndex();
    const byFrame = new Map<string, Buffer>();
    for (const id of pieces) {
      const location = index.get(id);
      assert.ok(location);
      byFrame.set(`${location.packId}:${location.frameOffset}`, byFrame.get(`${location.packId}:${location.frameOffset}`) ?? id);
    }
    assert.ok(byFrame.size >= 3, `${byFrame.size} frames`);
    for (const [fetchBytes, most] of [
      [1, 1],
      [64 << 20, byFrame.size],
    ] as const) {
      const storage = new CountingStorage(repoPath);
      const counted = await Repository.open(storage, PASSPHRASE);
      const reader = new PieceReader(counted, await counted.loadIndex(), { fetchBytes });
      const reads = [...byFrame.values()].map((id) => ({ id, data: reader.readAhead(id).data }));
      for (const read of reads) assert.ok(counted.pieceId(await read.data).equals(read.id));
      assert.equal(storage.most, most, `frames fetched at once with fetchBytes ${fetchBytes}`);
    }
  });
});
