import { PassThrough } from 'node:stream';
import { once } from 'node:events';
import { crc32 } from 'node:zlib';
import { CairnError } from '../core/errors.ts';
import type { SnapshotSink } from './engine.ts';

const MAGIC = Buffer.from('XBSTCK01', 'latin1');

/**
 * Exact-size reads from a byte stream, linear in the bytes read: the source's
 * buffers are kept in a queue with a read position, and only the few bytes a
 * header needs are ever assembled into a new buffer. Payloads are handed on as
 * views of the source's own buffers (`some`), never copied or concatenated, so a
 * 10 MiB chunk arriving in 64 KiB pipe reads costs one pass over its bytes.
 */
class ByteReader {
  private readonly iterator: AsyncIterator<Buffer>;
  /** Unread source buffers from `head` on; `offset` bytes of queue[head] are already read. */
  private queue: Buffer[] = [];
  private head = 0;
  private offset = 0;
  private available = 0;
  private ended = false;

  constructor(source: AsyncIterable<Buffer>) {
    this.iterator = source[Symbol.asyncIterator]();
  }

  /** Pulls from the source until `n` bytes are buffered or it ends. */
  private async fill(n: number): Promise<void> {
    while (this.available < n && !this.ended) {
      const next = await this.iterator.next();
      if (next.done) this.ended = true;
      else if (next.value.length > 0) {
        this.queue.push(next.value);
        this.available += next.value.length;
      }
    }
  }

  /** The next `n` bytes (n <= available): a view when one buffer holds them, else a copy of just those bytes. */
  private take(n: number): Buffer {
    const first = this.queue[this.head] as Buffer;
    if (first.length - this.offset >= n) {
      const out = first.subarray(this.offset, this.offset + n);
      this.advance(n);
      return out;
    }
    const out = Buffer.allocUnsafe(n);
    for (let filled = 0; filled < n;) {
      const buffer = this.queue[this.head] as Buffer;
      const count = Math.min(n - filled, buffer.length - this.offset);
      buffer.copy(out, filled, this.offset, this.offset + count);
      filled += count;
      this.advance(count);
    }
    return out;
  }

  /** Moves the read position on by `n` bytes, all within queue[head]. */
  private advance(n: number): void {
    this.offset += n;
    this.available -= n;
    if (this.offset < (this.queue[this.head] as Buffer).length) return;
    this.head++;
    this.offset = 0;
    // Drop read buffers now and then, not per buffer: shifting a long queue (a path arriving byte by byte) would be quadratic.
    if (this.head === this.queue.length) {
      this.queue = [];
      this.head = 0;
    } else if (this.head >= 1024) {
      this.queue = this.queue.slice(this.head);
      this.head = 0;
    }
  }

  /** Exactly `n` bytes, or undefined at a clean end of stream (no bytes at all). */
  async read(n: number): Promise<Buffer | undefined> {
    await this.fill(n);
    if (this.available === 0 && this.ended) return undefined;
    if (this.available < n)
      throw new CairnError('Cairn.Failure', 'the xbstream ended in the middle of a chunk: the backup tool stopped early');
    return this.take(n);
  }

  /** Exactly `n` bytes of a chunk already begun: the stream ending here is a truncated chunk, not a clean end. */
  async need(n: number, what: string): Promise<Buffer> {
    if (n === 0) return Buffer.alloc(0);
    await this.fill(n);
    if (this.available < n) throw truncated(what);
    return this.take(n);
  }

  /**
   * Stops reading: the source is closed (a child's stdout pipe is destroyed), so a tool still
   * writing gets EPIPE and exits instead of blocking on a pipe nobody reads, keeping the backup from ending.
   */
  cancel(): void {
    this.ended = true;
    this.iterator.return?.()?.catch(() => undefined);
  }

  /** Between 1 and `max` bytes of a chunk already begun, as they arrived: what one source buffer still holds. */
  async some(max: number, what: string): Promise<Buffer> {
    await this.fill(1);
    if (this.available === 0) throw truncated(what);
    const first = this.queue[this.head] as Buffer;
    return this.take(Math.min(max, first.length - this.offset));
  }
}

function truncated(what: string): CairnError {
  return new CairnError('Cairn.Failure', `the xbstream ended in the middle of a chunk (before its ${what}): the backup tool stopped early`);
}

/** Longer than any path mariabackup writes (its limit is FN_REFLEN, 512): a corrupt length field, not a path. */
const MAX_PATH = 4096;

/**
 * Splits mariabackup's / xtrabackup's xbstream back into files as it arrives.
 * A chunk is: "XBSTCK01" | flags (1) | type (1: 'P' payload, 'E' end of file)
 * | u32le path length | path | for 'P': u64le length | u64le offset | u32le
 * checksum | payload. The checksum is the CRC-32 of zlib / ISO 3309 over the
 * chunk's payload (checked against mariabackup 10.11's output); a mismatch fails
 * the backup, so bytes damaged between the tool and Cairn never make a
 * snapshot. Chunks of several files may interleave (--parallel, the redo log
 * thread), so each open file has its own stream into the sink.
 */
export async function splitXbstream(source: AsyncIterable<Buffer>, sink: SnapshotSink): Promise<number> {
  const reader = new ByteReader(source);
  const open = new Map<string, { stream: PassThrough; stored: Promise<void>; next: number }>();
  let files = 0;
  try {
    for (;;) {
      const head = await reader.read(14);
      if (!head) break;
      if (!head.subarray(0, 8).equals(MAGIC))
        throw new CairnError('Cairn.Failure', "the backup tool's output is not an xbstream (bad chunk magic)");
      const type = String.fromCharCode(head[9] as number);
      const pathLength = head.readUInt32LE(10);
      if (pathLength > MAX_PATH)
        throw new CairnError('Cairn.Failure', `xbstream chunk with a path of ${pathLength} bytes: the stream is corrupt`);
      const path = (await reader.need(pathLength, 'path')).toString('utf8');
      let file = open.get(path);
      if (type === 'E') {
        if (file) {
          file.stream.end();
          await file.stored;
          open.delete(path);
        }
        continue;
      }
      if (type !== 'P')
        throw new CairnError('Cairn.Failure', `unsupported xbstream chunk type ${JSON.stringify(type)} for ${path}`, {
          hint: 'sparse or encrypted xbstream chunks are not supported; run mariabackup without --encrypt',
        });
      const meta = await reader.need(20, 'payload length and offset');
      const length = Number(meta.readBigUInt64LE(0));
      const offset = Number(meta.readBigUInt64LE(8));
      const checksum = meta.readUInt32LE(16);
      if (!file) {
        const stream = new PassThrough({ highWaterMark: 4 << 20 });
        const stored = sink.addStream(path, stream, { mode: 0o640 });
        stored.catch(() => undefined);
        file = { stream, stored, next: 0 };
        open.set(path, file);
        files++;
      }
      if (offset !== file.next)
        throw new CairnError('Cairn.Failure', `xbstream chunk for ${path} at offset ${offset}, expected ${file.next}`, {
          hint: 'out-of-order chunks are not supported',
        });
      if (!Number.isSafeInteger(length) || !Number.isSafeInteger(offset + length))
        throw new CairnError('Cairn.Failure', `xbstream chunk for ${path} with an impossible length ${length} at offset ${offset}`);
      let crc = 0;
      for (let left = length; left > 0;) {
        // A view of the source's buffer, not a copy: the reader never reuses or changes a buffer it was given.
        const piece = await reader.some(left, `payload of ${path}`);
        left -= piece.length;
        crc = crc32(piece, crc);
        // Wait when this file's consumer is behind (or has failed).
        if (!file.stream.write(piece)) await Promise.race([once(file.stream, 'drain'), file.stored]);
      }
      // The payload has already gone to the sink; failing here fails the whole backup, so no snapshot holds it.
      if (crc !== checksum)
        throw new CairnError(
          'Cairn.Failure',
          `xbstream chunk of ${path} at offset ${offset} (${length} bytes) fails its checksum (stored crc32 ${hex(checksum)}, computed ${hex(crc)}): the backup tool's output was damaged on its way to Cairn`,
          {
            hint: 'nothing was committed; run the backup again, and if it recurs check the memory and disks of the database host',
          },
        );
      file.next += length;
    }
    for (const [, file] of open) {
      file.stream.end();
      await file.stored;
    }
  } catch (error) {
    reader.cancel();
    for (const [, file] of open) file.stream.destroy();
    throw error;
  }
  return files;
}

function hex(value: number): string {
  return value.toString(16).padStart(8, '0');
}
