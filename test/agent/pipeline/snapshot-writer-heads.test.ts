import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { PieceReader } from '../../../agent/core/piece-reader.ts';
import { Repository } from '../../../agent/core/repository.ts';
import { contentBytes } from '../../../agent/core/file-content.ts';
import type { TreeEntry } from '../../../agent/core/tree.ts';
import { PackWriter } from '../../../agent/pipeline/pack-writer.ts';
import { SnapshotWriter, type FileContent } from '../../../agent/pipeline/snapshot-writer.ts';
import { MemoryStorage } from '../../helpers/memory-storage.ts';
import { PASSPHRASE } from '../../helpers/repo.ts';
import { Prng } from '../../bench/prng.ts';

const KiB = 1024;

/** A PostgreSQL-like file of 8 KiB pages (page 0 carries the header the detector knows). */
function pageFile(prng: Prng, pages: number): Buffer {
  const file = prng.bytes(pages * 8192);
  for (let p = 0; p < pages; p++) {
    const at = p * 8192;
    file.writeUInt16LE(64, at + 12);
    file.writeUInt16LE(4096, at + 14);
    file.writeUInt16LE(8192, at + 16);
    file.writeUInt16LE(8192 | 4, at + 18);
  }
  return file;
}

/** Reads `file` in uneven short reads; fails after `failAt` bytes when given. */
function reads(file: Buffer, failAt?: number): (buffer: Buffer) => Promise<number> {
  let at = 0;
  return async (buffer) => {
    if (failAt !== undefined && at >= failAt) throw Object.assign(new Error('EIO: read failed'), { code: 'EIO' });
    const n = file.copy(buffer, 0, at, Math.min(file.length, at + 50_000 + (at % 7_919)));
    at += n;
    return n;
  };
}

/**
 * storeRead reuses its 256 KiB head buffers from file to file (snapshot-writer.ts): files read one
 * after another and side by side, page files and not, shorter than a head or failing halfway,
 * must each store exactly their own bytes.
 */
describe('SnapshotWriter head buffers', () => {
  it('store every file byte for byte when heads pass from file to file, side by side and after a failed read', async () => {
    const repo = await Repository.init(new MemoryStorage(), PASSPHRASE, { host: 'h', user: 'u' });
    const index = await repo.loadIndex();
    const writer = new PackWriter(repo, index, { compression: { codec: 'zstd', level: 3 }, concurrency: 2 });
    const snapshot = new SnapshotWriter(repo, writer, {
      chunking: { kind: 'fixed', size: 1 << 20 },
      pages: { index, reader: new PieceReader(repo, index) },
    });
    const prng = new Prng(7, 'heads');
    const files = [
      pageFile(prng, 100), // 800 KiB of pages: a page file
      prng.bytes(10 * KiB), // shorter than a head: the head's stale bytes beyond it must not count
      prng.bytes(300 * KiB), // longer than a head, no page header
      Buffer.alloc(0),
      pageFile(prng, 40),
      prng.bytes(256 * KiB), // exactly a head
      pageFile(prng, 33).subarray(0, 33 * 8192 - 100), // a page file with a short last page
    ];
    const stored: FileContent[] = [];
    for (let round = 0; round < 3; round++) {
      // A file whose read fails past its head: its head goes back for the next file.
      await assert.rejects(snapshot.storeRead(reads(pageFile(prng, 64), 300 * KiB), 'failing'), /EIO/);
      // Side by side, then one after another.
      stored.push(...(await Promise.all(files.map((f, i) => snapshot.storeRead(reads(f), `f${i}`)))));
      for (const [i, f] of files.entries()) stored.push(await snapshot.storeRead(reads(f), `f${i}`));
    }
    await writer.flush();

    const reader = new PieceReader(repo, await repo.loadIndex());
    for (const [n, content] of stored.entries()) {
      const expected = files[n % files.length] as Buffer;
      const entry: TreeEntry = { name: 'f', type: 'file', mode: 0o600, uid: 0, gid: 0, mtimeNs: '0', ...content };
      const chunks: Buffer[] = [];
      for await (const bytes of contentBytes(entry, reader)) chunks.push(Buffer.from(bytes));
      assert.ok(Buffer.concat(chunks).equals(expected), `stored file ${n} reads back byte for byte`);
    }
    assert.ok(
      stored.some((c) => c.pageSize === 8192),
      'page files were stored as page files',
    );
  });
});
