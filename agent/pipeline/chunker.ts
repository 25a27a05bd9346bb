import { hkdfSync } from 'node:crypto';
import type { ChunkerParams } from '../core/config.ts';

/**
 * FastCDC-style content-defined chunking with a 32-bit gear hash and
 * normalized chunking (a stricter mask before `avg`, a looser one after), so
 * sizes cluster around `avg` while an insertion only moves nearby cut points.
 * The gear table comes from a repository secret: cut points, like piece ids,
 * reveal nothing about the content to someone without the key.
 */
export class Chunker {
  readonly min: number;
  readonly avg: number;
  readonly max: number;
  private readonly gear: Int32Array;
  private readonly maskSmall: number;
  private readonly maskLarge: number;

  constructor(params: ChunkerParams, seed: Buffer) {
    this.min = params.min;
    this.avg = params.avg;
    this.max = params.max;
    this.gear = new Int32Array(Buffer.from(hkdfSync('sha256', seed, Buffer.alloc(0), 'cairn/v1/gear', 1024)).buffer);
    const bits = Math.round(Math.log2(params.avg));
    // Bit k of the hash depends on the last k+1 bytes: use the top bits so every cut looks at a 32-byte window.
    this.maskSmall = topBits(Math.min(31, bits + 2));
    this.maskLarge = topBits(Math.max(1, bits - 2));
  }

  /**
   * Length of the chunk that starts at `start`. Call with at least `max` bytes
   * after `start`, or with the final bytes of the stream.
   */
  cut(data: Uint8Array, start: number, end: number): number {
    const n = end - start;
    if (n <= this.min) return n;
    const limit = Math.min(n, this.max);
    const normal = Math.min(limit, this.avg);
    const gear = this.gear;
    const maskSmall = this.maskSmall;
    const maskLarge = this.maskLarge;
    let hash = 0;
    let i = start + this.min;
    for (const stop = start + normal; i < stop; i++) {
      hash = ((hash << 1) + (gear[data[i] as number] as number)) | 0;
      if ((hash & maskSmall) === 0) return i - start + 1;
    }
    for (const stop = start + limit; i < stop; i++) {
      hash = ((hash << 1) + (gear[data[i] as number] as number)) | 0;
      if ((hash & maskLarge) === 0) return i - start + 1;
    }
    return limit;
  }
}

function topBits(count: number): number {
  return (~0 << (32 - count)) | 0;
}

/**
 * What an input of unknown size is first read into. Most files a database engine streams are
 * small, and a full buffer (a largest piece plus a read: 5 MiB by default) for each was garbage:
 * 4.8 GB of it in a backup of a 289 MB PostgreSQL cluster's ~1,000 files, a full collection of
 * the heap every 64 MiB (docs/performance-notes.md). A larger input costs one copy of this much.
 */
// One byte over 64 KiB: a file of exactly 64 KiB (eight PostgreSQL pages) ends within it, instead of
// filling it and moving to the full buffer to learn that nothing follows.
const FIRST_BUFFER = (64 << 10) + 1;

/** How a file is cut into pieces: content-defined, or fixed blocks for page-structured files. */
export type Chunking = { kind: 'cdc'; chunker: Chunker } | { kind: 'fixed'; size: number };

/**
 * Reads `read` to its end and yields pieces. The pieces are views into one
 * reused buffer, valid only until the consumer asks for the next piece: copy
 * what must outlive that (the pack writer copies into its frame). Reusing the
 * buffer keeps memory flat instead of leaving garbage for the GC at disk speed.
 * The buffer holds one largest piece plus `readSize`: enough to cut a whole
 * piece after every read, each read at least `readSize` bytes.
 */
export async function* chunkStream(
  read: (buffer: Buffer) => Promise<number>,
  chunking: Chunking,
  readSize = 1 << 20,
  initial?: Buffer,
): AsyncGenerator<Buffer> {
  const unit = chunking.kind === 'cdc' ? chunking.chunker.max : chunking.size;
  const full = unit + readSize;
  // Small inputs are read into a small buffer (a caller that knows the size passes one, else
  // FIRST_BUFFER bytes); if more arrives than it holds, switch to a full-size buffer.
  let buffer = initial ?? Buffer.allocUnsafe(Math.min(full, FIRST_BUFFER));
  let carry = 0;
  let eof = false;
  for (;;) {
    let filled = carry;
    while (!eof && filled < buffer.length) {
      const n = await read(buffer.subarray(filled));
      if (n === 0) eof = true;
      filled += n;
    }
    if (!eof && buffer.length < full) {
      const bigger = Buffer.allocUnsafe(full);
      buffer.copy(bigger, 0, 0, filled);
      buffer = bigger;
      carry = filled;
      continue;
    }
    let at = 0;
    while (at < filled && (eof || filled - at >= unit)) {
      const length = chunking.kind === 'cdc' ? chunking.chunker.cut(buffer, at, filled) : Math.min(unit, filled - at);
      yield buffer.subarray(at, at + length);
      at += length;
    }
    carry = filled - at;
    if (eof && carry === 0) return;
    buffer.copyWithin(0, at, filled);
  }
}
