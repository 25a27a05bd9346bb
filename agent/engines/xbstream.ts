import { PassThrough } from 'node:stream';
import { once } from 'node:events';
import { CairnError } from '../core/errors.ts';
import type { SnapshotSink } from './engine.ts';

const MAGIC = Buffer.from('XBSTCK01', 'latin1');

/** Exact-size reads from a byte stream. */
class ByteReader {
  private readonly iterator: AsyncIterator<Buffer>;
  private buffer: Buffer = Buffer.alloc(0);
  private ended = false;

  constructor(source: AsyncIterable<Buffer>) {
    this.iterator = source[Symbol.asyncIterator]();
  }

  /** Exactly `n` bytes, or undefined at a clean end of stream (no bytes at all). */
  async read(n: number): Promise<Buffer | undefined> {
    while (this.buffer.length < n && !this.ended) {
      const next = await this.iterator.next();
      if (next.done) this.ended = true;
      else this.buffer = this.buffer.length === 0 ? next.value : Buffer.concat([this.buffer, next.value]);
    }
    if (this.buffer.length === 0 && this.ended) return undefined;
    if (this.buffer.length < n)
      throw new CairnError('Cairn.Failure', 'the xbstream ended in the middle of a chunk: the backup tool stopped early');
    const out = this.buffer.subarray(0, n);
    this.buffer = this.buffer.subarray(n);
    return out;
  }

  /** Exactly `n` bytes of a chunk already begun: the stream ending here is a truncated chunk, not a clean end. */
  async need(n: number, what: string): Promise<Buffer> {
    if (n === 0) return Buffer.alloc(0);
    const out = await this.read(n);
    if (!out)
      throw new CairnError(
        'Cairn.Failure',
        `the xbstream ended in the middle of a chunk (before its ${what}): the backup tool stopped early`,
      );
    return out;
  }
}

/** Longer than any path mariabackup writes (its limit is FN_REFLEN, 512): a corrupt length field, not a path. */
const MAX_PATH = 4096;
/** Payloads are passed on in pieces of at most this size, so a huge (or corrupt) length is never buffered whole. */
const PIECE = 1 << 20;

/**
 * Splits mariabackup's / xtrabackup's xbstream back into files as it arrives.
 * A chunk is: "XBSTCK01" | flags (1) | type (1: 'P' payload, 'E' end of file)
 * | u32le path length | path | for 'P': u64le length | u64le offset | u32le
 * checksum | payload. Chunks of several files may interleave (--parallel, the
 * redo log thread), so each open file has its own stream into the sink.
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
      for (let left = length; left > 0;) {
        const piece = await reader.need(Math.min(left, PIECE), `payload of ${path}`);
        left -= piece.length;
        // Copy: the reader's buffer is reused; wait when this file's consumer is behind.
        if (!file.stream.write(Buffer.from(piece))) await Promise.race([once(file.stream, 'drain'), file.stored]);
      }
      file.next += length;
    }
    for (const [, file] of open) {
      file.stream.end();
      await file.stored;
    }
  } catch (error) {
    for (const [, file] of open) file.stream.destroy();
    throw error;
  }
  return files;
}
