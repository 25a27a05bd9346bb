import { Worker } from 'node:worker_threads';
import { CairnError } from '../core/errors.ts';
import type { TreeEntry } from '../core/tree.ts';
import { DamagedError } from '../core/errors.ts';
import type { FileJob } from './file-job.ts';
import { isZero, timeArg } from './restore-metadata.ts';

/** Files up to this size are written whole by a writer thread once their pieces are in. */
export const SMALL_FILE_BYTES = 256 << 10;

/**
 * One writer thread for small files: creating files in one directory takes that directory's lock
 * in the kernel, and on ext4 an inode allocation can hold it a long time (it skips recently
 * deleted inodes); two writers spent a quarter of the restore's CPU spinning on each other
 * there (perf: rwsem_spin_on_owner), one creates as fast while the main thread decrypts beside it.
 */
export const WRITER_THREADS = 1;

/**
 * Writes small restored files on worker threads with synchronous system calls.
 *
 * Why: restoring many small files is bound by round trips to libuv's pool, not by the system
 * calls. Through fs/promises a file costs five round trips (open, write, fchmod, futimes,
 * close), each a mutex, a wake-up of a pool thread and an event-loop turn; on 2 cores the main
 * thread spent most of a 20,000-file restore blocked submitting them (docs/performance-notes.md).
 * Here a file is one message: a worker opens, writes, sets size, owner, mode and time, and
 * closes in one go, while the main thread goes on reading and decrypting.
 *
 * The worker is handed a path the restorer built from checked names under directories it
 * created, and opens it as the restorer always did: O_CREAT|O_EXCL|O_NOFOLLOW, mode 0600 until
 * the file is complete. A file it created and could not finish is unlinked before it answers.
 */
export interface SmallFile {
  path: Buffer;
  /** The file's bytes, in file order: its slices as read (whole pieces, or a page file's extents; slice-reads.ts). */
  pieces: Buffer[];
  entry: Pick<TreeEntry, 'mode' | 'uid' | 'gid' | 'mtimeNs'>;
}

/** The worker's program: plain JavaScript in a string, so it runs the same from the sources, the bundled CLI and the single executable. */
const WORKER_SOURCE = `
const { parentPort } = require('node:worker_threads');
const fs = require('node:fs');
const C = fs.constants;
const isRoot = process.getuid?.() === 0;
const ourUid = process.getuid?.() ?? -1;
const ourGid = process.getgid?.() ?? -1;
function write(job) {
  const data = new Uint8Array(job.content);
  const fd = fs.openSync(Buffer.from(job.path, 'latin1'), C.O_WRONLY | C.O_CREAT | C.O_EXCL | C.O_NOFOLLOW, 0o600);
  try {
    try {
      let end = 0;
      for (let i = 0; i < job.writes.length; i += 2) {
        const at = job.writes[i];
        const length = job.writes[i + 1];
        for (let done = 0; done < length; ) done += fs.writeSync(fd, data, at + done, length - done, at + done);
        end = at + length;
      }
      if (end < data.length) fs.ftruncateSync(fd, data.length);
      if (isRoot && (job.uid !== ourUid || job.gid !== ourGid)) fs.fchownSync(fd, job.uid, job.gid);
      fs.fchmodSync(fd, job.mode);
      fs.futimesSync(fd, job.mtime, job.mtime);
    } finally {
      fs.closeSync(fd);
    }
  } catch (error) {
    try { fs.unlinkSync(Buffer.from(job.path, 'latin1')); } catch {}
    throw error;
  }
}
parentPort.on('message', (job) => {
  try {
    write(job);
    parentPort.postMessage({ id: job.id });
  } catch (error) {
    parentPort.postMessage({ id: job.id, error: { message: String(error && error.message), code: error && error.code, syscall: error && error.syscall } });
  }
});
`;

interface Reply {
  id: number;
  error?: { message: string; code?: string; syscall?: string };
}

interface Slot {
  worker: Worker;
  inFlight: number;
}

export class SmallFileWriters {
  private readonly count: number;
  private slots: Slot[] | undefined;
  private readonly pending = new Map<number, { slot: Slot; resolve: () => void; reject: (error: Error) => void }>();
  private nextId = 0;
  private broken: Error | undefined;

  constructor(count: number) {
    this.count = Math.max(1, count);
  }

  /**
   * Creates and completes one file; resolves once it is on disk with its metadata. The pieces
   * are copied once, into the buffer handed over to the worker (transferred, not copied again).
   * An all-zero piece of 4 KiB or more is left as a hole, as for large files.
   */
  write(file: SmallFile): Promise<void> {
    if (this.broken) return Promise.reject(this.broken);
    const size = file.pieces.reduce((sum, piece) => sum + piece.length, 0);
    const content = new Uint8Array(size);
    const writes: number[] = [];
    let at = 0;
    for (const piece of file.pieces) {
      if (!(piece.length >= 4096 && isZero(piece))) {
        content.set(piece, at);
        const last = writes.length - 2;
        if (last >= 0 && (writes[last] as number) + (writes[last + 1] as number) === at)
          writes[last + 1] = (writes[last + 1] as number) + piece.length;
        else writes.push(at, piece.length);
      }
      at += piece.length;
    }
    const slot = this.leastBusy();
    const id = this.nextId++;
    const done = new Promise<void>((resolve, reject) => this.pending.set(id, { slot, resolve, reject }));
    slot.inFlight++;
    const { mode, uid, gid, mtimeNs } = file.entry;
    slot.worker.postMessage(
      { id, path: file.path.toString('latin1'), content: content.buffer, writes, mode, uid, gid, mtime: timeArg(mtimeNs) },
      [content.buffer],
    );
    return done;
  }

  /** Stops the workers (after the restore, or when it fails: a file in flight then is unlinked by the restorer). */
  async close(): Promise<void> {
    const slots = this.slots ?? [];
    this.slots = undefined;
    await Promise.all(slots.map((slot) => slot.worker.terminate()));
  }

  private leastBusy(): Slot {
    this.slots ??= Array.from({ length: this.count }, () => this.start());
    let best = this.slots[0] as Slot;
    for (const slot of this.slots) if (slot.inFlight < best.inFlight) best = slot;
    return best;
  }

  private start(): Slot {
    const worker = new Worker(WORKER_SOURCE, { eval: true });
    // Never what keeps the process alive: the restore awaits its own replies.
    worker.unref();
    const slot: Slot = { worker, inFlight: 0 };
    worker.on('message', (reply: Reply) => {
      const waiting = this.pending.get(reply.id);
      if (!waiting) return;
      this.pending.delete(reply.id);
      slot.inFlight--;
      if (!reply.error) return waiting.resolve();
      const { message, code, syscall } = reply.error;
      waiting.reject(Object.assign(new Error(message), { code, syscall }));
    });
    const fail = (cause: unknown): void => {
      this.broken ??= new CairnError(
        'Cairn.Failure',
        `a restore writer thread stopped: ${cause instanceof Error ? cause.message : String(cause)}`,
        {
          hint: 'run the restore again; files it had not finished were removed',
          cause,
        },
      );
      for (const [id, waiting] of this.pending) {
        if (waiting.slot !== slot) continue;
        this.pending.delete(id);
        waiting.reject(this.broken);
      }
    };
    worker.on('error', fail);
    worker.on('exit', (code) => {
      if (this.slots?.includes(slot)) fail(new Error(`exit code ${code}`));
    });
    return slot;
  }
}

/**
 * Gathers a small file's slices (releasing each from the read-ahead as it arrives), checks their
 * size against the snapshot's (a page file of exactly SMALL_FILE_BYTES comes this way too), then
 * has the file written whole. Resolves with its size. The
 * first file of a hard-link group resolves `job.created` only once it is complete.
 */
export async function restoreSmallFile(
  writers: SmallFileWriters,
  job: FileJob,
  path: Buffer,
  release: (bytes: number) => void,
): Promise<number> {
  const pieces: Buffer[] = [];
  let size = 0;
  for (let item = await job.next(); item; item = await job.next()) {
    try {
      const data = await item.data;
      pieces.push(data);
      size += data.length;
    } finally {
      release(item.length);
    }
  }
  try {
    if (size !== job.entry.size) throw new DamagedError(`restored ${size} bytes, the snapshot records ${job.entry.size}`);
    await writers.write({ path, pieces, entry: job.entry });
  } catch (error) {
    job.created?.reject(error);
    throw error;
  }
  job.created?.resolve(path);
  return size;
}
