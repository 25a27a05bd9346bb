import type { FrameOpener, FrameOpening, OpenedFrame } from '../core/piece-reader.ts';
import { ThreadPool, ThreadStoppedError } from './thread-pool.ts';

/**
 * Opens frames on worker threads: decrypts (AES-256-GCM), decompresses (zstd) and recomputes
 * every piece's keyed id, so the restore's main thread only walks trees and hands bytes to the
 * writers.
 *
 * Why: on 2 cores the restore's main thread was its bottleneck, and a third of its time went to
 * exactly this work plus the garbage collection it caused. Every frame made three frame-sized
 * Buffers (fetched, decrypted, decompressed); V8 counts them as external memory and ran a full
 * mark-compact of the main heap (~15 MiB, walked by its helper threads too) after each ~64 MiB of
 * them. Here two of the three live and die in a worker whose heap is nearly empty, so its
 * collections cost little, and the fetched bytes are moved (transferred), not copied, to it.
 *
 * The worker checks nothing the reader does not check again or rely on: it answers whether the
 * frame opened, the opened piece table, the decompressed bytes and, per piece, whether the
 * bytes at the table's place hash to the table's id. PieceReader then checks that the table
 * holds the wanted piece where the index says, so a piece is returned only if its bytes hash to
 * its id, as on the main thread (core/piece-reader.ts).
 */

/** Threads a restore opens frames on: one, beside the main thread and the small-file writer, on the 2 cores measured. */
export const FRAME_THREADS = 1;

/** The worker's program: plain JavaScript in a string, so it runs the same from the sources, the bundled CLI and the single executable. */
const WORKER_SOURCE = `
const { parentPort } = process.getBuiltinModule('node:worker_threads');
const { createDecipheriv, createHmac } = process.getBuiltinModule('node:crypto');
const { zstdDecompressSync } = process.getBuiltinModule('node:zlib');
const NONCE = 12, TAG = 16, ID = 32;
let idKey;
// The view's ArrayBuffer when it may be moved (anything but Node's shared pool for small Buffers:
// the worker made it and keeps no other view of it), else a copy; with the view's place in it.
function movable(view) {
  if (view.buffer.byteLength > Buffer.poolSize) return { buffer: view.buffer, offset: view.byteOffset };
  return { buffer: Uint8Array.prototype.slice.call(view).buffer, offset: 0 };
}
function openFrame(m) {
  const frame = Buffer.from(m.frame);
  const header = frame.subarray(0, m.headerBytes);
  const sealed = frame.subarray(m.headerBytes);
  let plain;
  try {
    if (sealed.length < NONCE + TAG) return { status: 'auth' };
    const decipher = createDecipheriv('aes-256-gcm', m.key, sealed.subarray(0, NONCE));
    decipher.setAAD(header);
    decipher.setAuthTag(sealed.subarray(sealed.length - TAG));
    const first = decipher.update(sealed.subarray(NONCE, sealed.length - TAG));
    const last = decipher.final();
    plain = last.length === 0 ? first : Buffer.concat([first, last]);
  } catch {
    return { status: 'auth' };
  }
  const tableBytes = m.count * (ID + 4);
  if (plain.length < tableBytes) return { status: 'auth' };
  let data = plain.subarray(tableBytes);
  if (m.codec === 1) {
    try {
      data = zstdDecompressSync(data, { maxOutputLength: Math.max(1, m.rawLength), chunkSize: m.chunkSize });
    } catch (error) {
      return { status: 'decompress', message: String(error && error.message) };
    }
  }
  const matches = new Uint8Array(m.count);
  for (let i = 0, at = 0; i < m.count; i++) {
    const length = plain.readUInt32LE(m.count * ID + i * 4);
    if (at + length <= data.length) {
      const id = createHmac('sha256', idKey).update(data.subarray(at, at + length)).digest();
      matches[i] = id.equals(plain.subarray(i * ID, (i + 1) * ID)) ? 1 : 0;
    }
    at += length;
  }
  const table = Uint8Array.prototype.slice.call(plain, 0, tableBytes).buffer;
  const out = movable(data);
  return { status: 'ok', table, data: out.buffer, dataOffset: out.offset, dataLength: data.length, matches };
}
parentPort.on('message', (m) => {
  if (m.idKey) { idKey = Buffer.from(m.idKey); return; }
  let reply;
  try {
    reply = openFrame(m);
  } catch (error) {
    reply = { status: 'error', message: String(error && error.message) };
  }
  reply.id = m.id;
  parentPort.postMessage(reply, reply.status === 'ok' ? [reply.table, reply.data] : []);
});
`;

interface Reply {
  id: number;
  status: 'ok' | 'auth' | 'decompress' | 'error';
  message?: string;
  table?: ArrayBuffer;
  data?: ArrayBuffer;
  dataOffset?: number;
  dataLength?: number;
  matches?: Uint8Array;
}

/**
 * An ArrayBuffer holding the frame's bytes that may be moved to a worker: the view's own when the
 * view is all of it (so no other view can see it detached: file storage reads each range into a
 * Buffer of its own), else a copy.
 */
function transferable(view: Buffer): ArrayBuffer {
  const { buffer } = view;
  if (
    buffer instanceof ArrayBuffer &&
    buffer.byteLength > Buffer.poolSize &&
    view.byteOffset === 0 &&
    view.byteLength === buffer.byteLength
  )
    return buffer;
  return Uint8Array.prototype.slice.call(view).buffer;
}

export class FrameThreads implements FrameOpener {
  private readonly pool: ThreadPool<Reply>;

  /** `idKey`: the repository's piece-id key (it stays in this process: a worker thread is not a child process). */
  constructor(idKey: Buffer, count: number) {
    this.pool = new ThreadPool<Reply>({
      source: WORKER_SOURCE,
      count,
      what: 'a frame-decoding thread',
      hint: 'run the command again',
      init: { idKey },
    });
  }

  /**
   * Opens one frame. The frame's bytes are moved to the worker (the caller must not use them
   * again; storage hands every getRange caller bytes of its own).
   */
  async open(request: FrameOpening): Promise<OpenedFrame> {
    const buffer = transferable(request.frame);
    const reply = await this.pool.request(
      {
        key: request.key,
        frame: buffer,
        headerBytes: request.headerBytes,
        count: request.count,
        codec: request.codec,
        rawLength: request.rawLength,
        chunkSize: request.chunkSize,
      },
      [buffer],
    );
    // An exception in the thread's own code (say, out of memory), not an answer about the frame.
    if (reply.status === 'error') throw new ThreadStoppedError(`a frame-decoding thread failed: ${reply.message ?? 'unknown error'}`);
    if (reply.status !== 'ok') return { status: reply.status, message: reply.message };
    return {
      status: 'ok',
      table: Buffer.from(reply.table as ArrayBuffer),
      data: Buffer.from(reply.data as ArrayBuffer, reply.dataOffset, reply.dataLength),
      matches: reply.matches as Uint8Array,
    };
  }

  close(): Promise<void> {
    return this.pool.close();
  }
}
