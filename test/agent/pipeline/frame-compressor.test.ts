import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { promisify } from 'node:util';
import { constants, zstdCompress, zstdDecompressSync, type ZstdCompress } from 'node:zlib';
import fc from 'fast-check';
import { FrameCompressor, zstdFrameLength } from '../../../agent/pipeline/frame-compressor.ts';

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

/**
 * What the pack writer wrote before contexts were kept: a fresh context per frame, less the empty
 * frame zlib has zstd append when the output fills its buffer exactly (frame-compressor.ts).
 */
const oneShot = async (data: Buffer, level: number): Promise<Buffer> => {
  const out = await promisify(zstdCompress)(data, { params: { [constants.ZSTD_c_compressionLevel]: level } });
  return out.subarray(0, zstdFrameLength(out));
};

/** Noise: zstd stores it in raw blocks, so its output's length is the input's plus the headers. */
function noise(length: number): Buffer {
  const bytes = Buffer.alloc(length);
  for (let i = 0; i + 4 <= length; i += 4) bytes.writeUInt32LE((Math.imul(i, 2654435761) ^ (i >>> 7)) >>> 0, i);
  return bytes;
}

/** The zlib stream of a compressor's idle context (white-box: faults are injected into it). */
function idleStream(compressor: FrameCompressor): ZstdCompress {
  const { idle } = compressor as unknown as { idle: Array<{ zstd: ZstdCompress }> };
  return (idle[0] as { zstd: ZstdCompress }).zstd;
}

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
    const random = noise(3 << 20);
    for (let round = 0; round < 3; round++) {
      const data = random.subarray(round * 1000);
      const frame = await compressor.compress(data);
      assert.ok(frame.length > 1 << 20, 'a frame larger than one chunk');
      assert.deepEqual(zstdDecompressSync(frame), data);
    }
    compressor.close();
  });

  it("returns one frame, never a second empty one, when the output fills the stream's buffer exactly", async () => {
    // The output buffer is 1 MiB + 16 KiB; noise of that size less 80 to 10 bytes more comes out at,
    // just below and just above it (and so a frame's end lands exactly on the buffer's end).
    const chunk = (1 << 20) + (16 << 10);
    const random = noise(2 * chunk + 64);
    let exact = 0;
    for (const target of [chunk, 2 * chunk])
      for (let size = target - 80; size <= target + 10; size += 1) {
        const data = random.subarray(0, size);
        // A fresh context: its output starts at the start of its buffer.
        const compressor = new FrameCompressor(3, 1);
        const frame = await compressor.compress(data);
        compressor.close();
        if (frame.length === target) exact++;
        assert.equal(zstdFrameLength(frame), frame.length, `${size} bytes: one frame, nothing after it`);
        assert.deepEqual(zstdDecompressSync(frame), data);
        assert.ok(frame.equals(await oneShot(data, 3)));
      }
    assert.ok(exact >= 2, "frames ending exactly at the buffer's end were tried");
  });

  it('walks a frame to its end: every cut-off prefix is no frame, trailing bytes are not part of it', async () => {
    await fc.assert(
      fc.asyncProperty(frameData, async (data) => {
        const frame = await oneShot(data, 3);
        assert.equal(zstdFrameLength(frame), frame.length);
        assert.equal(zstdFrameLength(Buffer.concat([frame, frame])), frame.length);
        for (let cut = 0; cut < frame.length; cut += Math.max(1, frame.length >> 5))
          assert.equal(zstdFrameLength(frame.subarray(0, cut)), undefined, `${cut} of ${frame.length} bytes is not a whole frame`);
        assert.equal(zstdFrameLength(frame.subarray(0, frame.length - 1)), undefined);
      }),
      { numRuns: 40 },
    );
  });

  it('fails a frame whose stream is destroyed while it writes, rather than returning what was written so far', async () => {
    for (const inject of [
      (zstd: ZstdCompress) => zstd.once('data', () => zstd.destroy(new Error('injected'))),
      (zstd: ZstdCompress) => zstd.once('data', () => zstd.destroy()),
      (zstd: ZstdCompress) => zstd.once('data', () => zstd.close()),
      (zstd: ZstdCompress) => setImmediate(() => zstd.destroy(new Error('injected'))),
    ]) {
      const compressor = new FrameCompressor(3, 2);
      await compressor.compress(Buffer.from('a context, kept idle'));
      inject(idleStream(compressor));
      await assert.rejects(compressor.compress(noise(4 << 20)), /injected|destroyed|closed/);
      // The failed context is not kept: the next frame gets a fresh one and comes out whole.
      const data = noise(100_000);
      assert.deepEqual(zstdDecompressSync(await compressor.compress(data)), data);
      compressor.close();
    }
  });

  it('after close, finishes the frames running and keeps no context; a later frame takes a new one', async () => {
    const compressor = new FrameCompressor(3, 8);
    const inputs = [noise(300_000), noise(200_000), Buffer.alloc(100_000, 3)];
    const running = inputs.map((data) => compressor.compress(data));
    compressor.close();
    for (const [i, frame] of (await Promise.all(running)).entries()) assert.deepEqual(zstdDecompressSync(frame), inputs[i]);
    assert.equal((compressor as unknown as { idle: unknown[] }).idle.length, 0, 'no context kept');
    const late = Buffer.from('a frame after close (a pack writer flushed, then used again)');
    assert.deepEqual(zstdDecompressSync(await compressor.compress(late)), late);
    compressor.close();
    assert.equal((compressor as unknown as { idle: unknown[] }).idle.length, 0);
  });
});
