import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { contentSlices } from '../../../agent/core/file-content.ts';
import { PieceReader } from '../../../agent/core/piece-reader.ts';
import type { Repository } from '../../../agent/core/repository.ts';
import { decodeTree, type TreeEntry } from '../../../agent/core/tree.ts';
import { FrameThreads } from '../../../agent/pipeline/frame-threads.ts';
import { backupDir, fileRepo, initSmallRepo, tempDir } from '../../helpers/repo.ts';

/**
 * PieceReader.readAhead, what a restore's read-ahead counts (docs/performance-notes.md): a read that
 * fetches a frame holds the frame's bytes, and a piece much smaller than its frame comes back as
 * its own copy, so a piece waiting for its writer does not keep the whole decoded frame alive.
 */
describe('pieces read ahead', () => {
  let work: Awaited<ReturnType<typeof tempDir>>;
  let repo: Repository;
  let pieces: Buffer[];
  before(async () => {
    work = await tempDir('read-ahead');
    const data = join(work.path, 'data');
    await mkdir(data);
    // Small chunks (16 KiB on average) in 1 MiB frames: dozens of pieces per frame.
    await writeFile(join(data, 'file.bin'), randomBytes(3 << 20));
    repo = await initSmallRepo(fileRepo(join(work.path, 'repo')));
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
    it(`counts the frame a read fetches and returns small pieces detached from it (${through})`, async () => {
      const frames = through === 'a frame thread' ? new FrameThreads(repo.pieceIdKey(), 1) : undefined;
      try {
        const reader = new PieceReader(repo, await repo.loadIndex(), frames ? { opener: frames } : {});
        const [first, second] = pieces as [Buffer, Buffer];
        const [a, b] = [reader.location(first), reader.location(second)];
        assert.equal(a.frameOffset, b.frameOffset, 'the first two pieces share a frame');
        assert.ok(a.frameLength > 4 * a.length, `frame ${a.frameLength} bytes, piece ${a.length}`);

        const started = reader.readAhead(first);
        assert.equal(started.holds, a.frameLength, 'the read that fetches the frame holds the frame');
        const cached = reader.readAhead(second);
        assert.equal(cached.holds, b.length, 'a read of a frame already fetched holds only its piece');

        for (const [read, location, id] of [
          [started, a, first],
          [cached, b, second],
        ] as const) {
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
});
