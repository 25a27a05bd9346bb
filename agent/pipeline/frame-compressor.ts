import { constants, createZstdCompress, type ZstdCompress } from 'node:zlib';

/**
 * zstd compression of one frame at a time on long-lived compression contexts.
 *
 * `zlib.zstdCompress(buffer)` creates a zstd context per call: at level 3 about 5 MiB of window,
 * tables and stream buffers, allocated, touched and freed for every 1 MiB frame. On this
 * machine that cost more than the compression itself: 300 MiB of a backup's frames took
 * 1.2–1.9 s of user and 1.2–1.5 s of system CPU one-shot, and 0.5–0.8 s user and 0.2–0.6 s
 * system through contexts kept from frame to frame (docs/performance-notes.md, "zstd contexts").
 *
 * A context here is a zlib ZstdCompress stream. Each frame is written and then flushed with
 * ZSTD_e_end, which ends a complete zstd frame; the next write begins a new one, and zstd keeps
 * no history across a frame's end, so every frame decodes alone and is byte for byte what
 * `zlib.zstdCompress` writes. A stream compresses one frame at a time (the output of two would interleave);
 * streams are created as frames run at once and kept, idle, for the next frames.
 */
export class FrameCompressor {
  private readonly level: number;
  private readonly idle: ZstdStream[] = [];
  private readonly keep: number;

  /** `keep`: idle contexts held for reuse (more, when more frames ran at once, are closed). */
  constructor(level: number, keep = 8) {
    this.level = level;
    this.keep = keep;
  }

  async compress(data: Buffer): Promise<Buffer> {
    const stream = this.idle.pop() ?? new ZstdStream(this.level);
    let out: Buffer;
    try {
      out = await stream.frame(data);
    } catch (error) {
      stream.close();
      throw error;
    }
    if (this.idle.length < this.keep) this.idle.push(stream);
    else stream.close();
    return out;
  }

  /** Frees the idle contexts (frames still running finish, and their contexts close then). */
  close(): void {
    for (const stream of this.idle.splice(0)) stream.close();
  }
}

/** zstd's frame magic number, little-endian: every complete frame starts with it. */
const ZSTD_MAGIC = 0xfd2fb528;

class ZstdStream {
  private readonly zstd: ZstdCompress;
  private chunks: Buffer[] = [];
  private failure: Error | undefined;
  /** The frame being compressed: failed at once if the stream fails, so no caller waits forever. */
  private pending: ((error: Error) => void) | undefined;

  constructor(level: number) {
    // Output chunks of a 1 MiB frame's worst case: most frames come out in one or two.
    this.zstd = createZstdCompress({ params: { [constants.ZSTD_c_compressionLevel]: level }, chunkSize: (1 << 20) + (16 << 10) });
    this.zstd.on('data', (chunk: Buffer) => this.chunks.push(chunk));
    const fail = (error: Error): void => {
      this.failure ??= error;
      this.pending?.(this.failure);
    };
    this.zstd.on('error', fail);
    this.zstd.on('close', () => fail(new Error('the zstd stream closed')));
  }

  /** Compresses `data` into one complete zstd frame. */
  frame(data: Buffer): Promise<Buffer> {
    return new Promise((resolve, reject) => {
      if (this.failure) return reject(this.failure);
      this.pending = (error) => {
        this.pending = undefined;
        reject(error);
      };
      this.zstd.write(data);
      this.zstd.flush(constants.ZSTD_e_end, () => {
        if (!this.pending) return;
        this.pending = undefined;
        const chunks = this.chunks;
        this.chunks = [];
        if (this.failure) return reject(this.failure);
        const out = chunks.length === 1 ? (chunks[0] as Buffer) : Buffer.concat(chunks);
        // The flush's output is pushed before its callback runs; a frame that does not start with
        // the magic number would mean output from elsewhere (a reordering in zlib's stream) — never stored.
        if (out.length < 4 || out.readUInt32LE(0) !== ZSTD_MAGIC) return reject(new Error('zstd produced no complete frame'));
        resolve(out);
      });
    });
  }

  close(): void {
    this.pending = undefined;
    this.zstd.close();
  }
}
