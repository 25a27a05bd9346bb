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
  /** Set by close(): frames still running free their contexts when they end. */
  private released = false;

  /** `keep`: idle contexts held for reuse (more, when more frames ran at once, are closed). */
  constructor(level: number, keep = 8) {
    this.level = level;
    this.keep = keep;
  }

  /**
   * One complete zstd frame of `data`. The bytes may be a view of the context's output buffer,
   * shared with earlier frames' output: copy them before keeping or transferring them (the pack
   * writer encrypts them into the pack at once).
   */
  async compress(data: Buffer): Promise<Buffer> {
    // A writer flushed and then used again (copy flushes after each snapshot) starts afresh.
    this.released = false;
    const stream = this.idle.pop() ?? new ZstdStream(this.level);
    let out: Buffer;
    try {
      out = await stream.frame(data);
    } catch (error) {
      stream.close();
      throw error;
    }
    if (!this.released && this.idle.length < this.keep) this.idle.push(stream);
    else stream.close();
    return out;
  }

  /** Frees the idle contexts; frames still running finish, and their contexts close then. A later frame takes a new context. */
  close(): void {
    this.released = true;
    for (const stream of this.idle.splice(0)) stream.close();
  }
}

/** zstd's frame magic number, little-endian: every complete frame starts with it. */
const ZSTD_MAGIC = 0xfd2fb528;

/** Bytes of the frame header's optional fields, by the descriptor's flags (RFC 8878, 3.1.1.1). */
const DICTIONARY_ID_BYTES = [0, 1, 2, 4] as const;
const CONTENT_SIZE_BYTES = [0, 2, 4, 8] as const;

/**
 * The length of the complete zstd frame at the start of `bytes`, walked through its header and
 * block headers (RFC 8878), or undefined when the bytes do not hold one whole frame (no magic
 * number, a reserved block type, or the bytes end inside it). A walk, not a decode: it costs
 * one step per block (at most 128 KiB of content each).
 */
export function zstdFrameLength(bytes: Buffer): number | undefined {
  if (bytes.length < 6 || bytes.readUInt32LE(0) !== ZSTD_MAGIC) return undefined;
  const descriptor = bytes[4] as number;
  const singleSegment = (descriptor >> 5) & 1;
  const contentSizeFlag = descriptor >> 6;
  let at =
    5 +
    (singleSegment ? 0 : 1) +
    (DICTIONARY_ID_BYTES[descriptor & 3] as number) +
    (contentSizeFlag === 0 ? singleSegment : (CONTENT_SIZE_BYTES[contentSizeFlag] as number));
  for (;;) {
    if (at + 3 > bytes.length) return undefined;
    const header = bytes.readUIntLE(at, 3);
    at += 3;
    const type = (header >> 1) & 3;
    if (type === 3) return undefined;
    at += type === 1 ? 1 : header >>> 3;
    if (at > bytes.length) return undefined;
    if (header & 1) break;
  }
  if ((descriptor >> 2) & 1) at += 4;
  return at > bytes.length ? undefined : at;
}

/**
 * zlib's stream, when a flush fills its output buffer exactly, calls zstd once more with
 * ZSTD_e_end and no input, and zstd answers with a new, empty frame: the frame's output is then
 * followed by these bytes (at the level's default parameters: no checksum, the size in one byte).
 */
const EMPTY_FRAME = Buffer.from('28b52ffd2000010000', 'hex');

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
        // A stream destroyed while it pushed output runs this callback before its 'error' and
        // 'close' events: what was pushed so far is a cut-off frame, never a result.
        if (this.failure || this.zstd.destroyed) return reject(this.failure ?? new Error('the zstd stream was destroyed'));
        const frame = wholeFrame(chunks.length === 1 ? (chunks[0] as Buffer) : Buffer.concat(chunks));
        if (frame instanceof Error) reject(frame);
        else resolve(frame);
      });
    });
  }

  close(): void {
    this.pending = undefined;
    this.zstd.close();
  }
}

/**
 * The flush's output checked to be one complete frame (the pack stores it as one, and Node's
 * decoder would take a cut-off frame without a word), with the empty frame zlib's refill may
 * append dropped: otherwise a reordering in zlib's stream or a truncation, never stored.
 */
function wholeFrame(out: Buffer): Buffer | Error {
  const length = zstdFrameLength(out);
  if (length === out.length) return out;
  if (length !== undefined && out.length - length === EMPTY_FRAME.length && out.subarray(length).equals(EMPTY_FRAME))
    return out.subarray(0, length);
  return new Error(
    length === undefined ? 'zstd produced no complete frame' : `zstd produced ${out.length - length} bytes after the frame's end`,
  );
}
