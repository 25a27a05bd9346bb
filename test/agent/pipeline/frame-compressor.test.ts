import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { promisify } from 'node:util';
import { constants, zstdCompress, zstdDecompressSync } from 'node:zlib';
import fc from 'fast-check';
import { FrameCompressor } from '../../../agent/pipeline/frame-compressor.ts';

/** Frame contents as a backup sees them: runs of repeated bytes, text-like data and noise, of any size. */
const frameData = fc
  .array(
    fc.oneof(
      fc.tuple(fc.integer({ min: 0, max: 255 }), fc.integer({ min: 1, max: 300_000 })).map(([b, n]) => Buffer.alloc(n, b)),
      fc.uint8Array({ minLength: 0, maxLength: 70_000 }).map((a) => Buffer.from(a)),
      fc.string({ maxLength: 2_000 }).map((s) => Buffer.from(s.repeat(20))),
    ),
    { maxLength: 6 },
  )
  .map((parts) => Buffer.concat(parts));

/** What the pack writer wrote before contexts were kept: a fresh context per frame. */
const oneShot = (data: Buffer, level: number): Promise<Buffer> =>
  promisify(zstdCompress)(data, { params: { [constants.ZSTD_c_compressionLevel]: level } });

/**
 * Frames compressed on kept zstd contexts (frame-compressor.ts) are what a fresh context writes:
 * each is one complete frame that decodes alone, whatever ran before it on the same context and
 * however many frames ran at once.
 */
describe('FrameCompressor', () => {
  it('writes, frame after frame and several at once, the bytes a one-shot compression writes, each decoding alone', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(frameData, { minLength: 1, maxLength: 12 }),
        fc.integer({ min: 1, max: 4 }),
        fc.constantFrom(1, 3, 7),
        async (frames, atOnce, level) => {
          // Fewer kept contexts than frames at once: contexts are both reused and closed.
          const compressor = new FrameCompressor(level, 2);
          const out: Buffer[] = [];
          for (let i = 0; i < frames.length; i += atOnce)
            out.push(...(await Promise.all(frames.slice(i, i + atOnce).map((f) => compressor.compress(f)))));
          compressor.close();
          for (const [i, data] of frames.entries()) {
            const frame = out[i] as Buffer;
            assert.deepEqual(zstdDecompressSync(frame), data, `frame ${i} decodes alone to its input`);
            assert.ok(frame.equals(await oneShot(data, level)), `frame ${i} is what a fresh context writes`);
          }
        },
      ),
      { numRuns: 60 },
    );
  });

  it('keeps its contexts across frames larger than one output chunk', async () => {
    const compressor = new FrameCompressor(3);
    // Noise does not compress: more than a 1 MiB output chunk per frame, so its output comes in pieces.
    const noise = Buffer.alloc(3 << 20);
    for (let i = 0; i < noise.length; i += 4) noise.writeUInt32LE((Math.imul(i, 2654435761) ^ (i >>> 7)) >>> 0, i);
    for (let round = 0; round < 3; round++) {
      const data = noise.subarray(round * 1000);
      const frame = await compressor.compress(data);
      assert.ok(frame.length > 1 << 20, 'a frame larger than one chunk');
      assert.deepEqual(zstdDecompressSync(frame), data);
    }
    compressor.close();
  });
});
