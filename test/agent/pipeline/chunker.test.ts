import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Chunker, chunkStream } from '../../../agent/pipeline/chunker.ts';
import { DEFAULT_CHUNKER } from '../../../agent/core/config.ts';
import { Random } from '../../helpers/tree.ts';

const seed = Buffer.alloc(32, 9);

async function chunksOf(data: Buffer, chunker: Chunker, readSize = 1 << 20): Promise<Buffer[]> {
  let at = 0;
  const read = async (buffer: Buffer): Promise<number> => {
    const n = Math.min(buffer.length, data.length - at, 100_003); // odd short reads, like a pipe
    data.copy(buffer, 0, at, at + n);
    at += n;
    return n;
  };
  const out: Buffer[] = [];
  for await (const piece of chunkStream(read, { kind: 'cdc', chunker }, readSize)) out.push(Buffer.from(piece));
  return out;
}

describe('content-defined chunker', () => {
  const small = new Chunker({ algorithm: 'fastcdc-gear32', min: 4096, avg: 16384, max: 65536 }, seed);

  it('cuts within min and max, reassembles the input exactly, and is deterministic', async () => {
    const data = new Random(1).bytes(3_000_000, false);
    const a = await chunksOf(data, small);
    const b = await chunksOf(data, small, 300_000);
    assert.deepEqual(Buffer.concat(a), data);
    assert.deepEqual(
      a.map((c) => c.length),
      b.map((c) => c.length),
      'same cuts whatever the read size',
    );
    for (const c of a.slice(0, -1)) assert.ok(c.length >= 4096 && c.length <= 65536, `chunk of ${c.length}`);
    const mean = data.length / a.length;
    assert.ok(mean > 8192 && mean < 40000, `mean chunk ${mean} near avg`);
  });

  it('an insertion near the start moves only nearby cut points', async () => {
    const data = new Random(2).bytes(2_000_000, false);
    const shifted = Buffer.concat([data.subarray(0, 1000), Buffer.from('inserted bytes!'), data.subarray(1000)]);
    const before = new Set((await chunksOf(data, small)).map((c) => c.toString('base64')));
    const after = await chunksOf(shifted, small);
    const shared = after.filter((c) => before.has(c.toString('base64'))).length;
    assert.ok(shared >= after.length - 3, `${shared} of ${after.length} chunks unchanged`);
  });

  it('a different repository key cuts at different places', async () => {
    const data = new Random(3).bytes(1_000_000, false);
    const other = new Chunker({ algorithm: 'fastcdc-gear32', min: 4096, avg: 16384, max: 65536 }, Buffer.alloc(32, 1));
    const a = (await chunksOf(data, small)).map((c) => c.length);
    const b = (await chunksOf(data, other)).map((c) => c.length);
    assert.notDeepEqual(a, b);
  });

  it('handles empty input, input shorter than min, and the default 1 MiB parameters', async () => {
    assert.deepEqual(await chunksOf(Buffer.alloc(0), small), []);
    assert.deepEqual((await chunksOf(Buffer.from('tiny'), small)).map(String), ['tiny']);
    const big = new Chunker(DEFAULT_CHUNKER, seed);
    const data = new Random(4).bytes(12_000_000, false);
    const pieces = await chunksOf(data, big);
    assert.deepEqual(Buffer.concat(pieces), data);
    for (const c of pieces.slice(0, -1)) assert.ok(c.length >= DEFAULT_CHUNKER.min && c.length <= DEFAULT_CHUNKER.max);
  });

  it('an input of unknown size is read into a small buffer first, and one larger than it is cut the same', async () => {
    // A full buffer (largest piece + read size) for every small file streamed was gigabytes of garbage per engine backup.
    const chunker = new Chunker(DEFAULT_CHUNKER, seed);
    // A few bytes, and exactly 64 KiB (eight 8 KiB pages: a small PostgreSQL relation).
    for (const tiny of [Buffer.from('a small file\n'), new Random(6).bytes(64 << 10, false)]) {
      const held: number[] = [];
      let at = 0;
      const read = async (buffer: Buffer): Promise<number> => {
        held.push(buffer.buffer.byteLength);
        const n = Math.min(buffer.length, tiny.length - at);
        tiny.copy(buffer, 0, at, at + n);
        at += n;
        return n;
      };
      const pieces: Buffer[] = [];
      for await (const piece of chunkStream(read, { kind: 'cdc', chunker })) pieces.push(Buffer.from(piece));
      assert.deepEqual(Buffer.concat(pieces), tiny);
      assert.ok(Math.max(...held) <= (64 << 10) + 1, `read into ${Math.max(...held)} bytes for a ${tiny.length}-byte input`);
    }
    // Across the switch to the full buffer, the cuts are those of one read into it.
    const data = new Random(3).bytes(3_000_000, false);
    assert.deepEqual(await chunksOf(data, small, 1 << 20), await chunksOf(data, small, 3_000_000));
  });

  it('fixed chunking cuts equal blocks', async () => {
    const data = new Random(5).bytes(100_000, false);
    let at = 0;
    const read = async (buffer: Buffer): Promise<number> => {
      const n = Math.min(buffer.length, data.length - at);
      data.copy(buffer, 0, at, at + n);
      at += n;
      return n;
    };
    const sizes: number[] = [];
    for await (const piece of chunkStream(read, { kind: 'fixed', size: 16384 })) sizes.push(piece.length);
    assert.deepEqual(sizes, [16384, 16384, 16384, 16384, 16384, 16384, 1696]);
  });
});
