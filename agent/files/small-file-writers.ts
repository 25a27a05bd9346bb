import type { TreeEntry } from '../core/tree.ts';
import { DamagedError } from '../core/errors.ts';
import type { FileJob } from './file-job.ts';
import { isZero, microsecondTime } from './restore-metadata.ts';
import { ThreadPool } from '../pipeline/thread-pool.ts';

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
 * Here a file is one job of a message (the files of one event-loop turn go together): a worker
 * opens, writes, sets size, owner, mode and time, and closes in one go, while the main thread
 * goes on reading.
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
const { parentPort } = process.getBuiltinModule('node:worker_threads');
const fs = process.getBuiltinModule('node:fs');
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
parentPort.on('message', (batch) => {
  const errors = batch.files.map((job) => {
    try {
      write(job);
      return null;
    } catch (error) {
      return { message: String(error && error.message), code: error && error.code, syscall: error && error.syscall };
    }
  });
  // The files' bytes are freed now rather than at this thread's next garbage collection (which
  // V8 runs per ~64 MiB of them: the restore's RSS grew by that much).
  for (const job of batch.files) job.content.transfer(0);
  parentPort.postMessage({ id: batch.id, errors });
});
`;

interface Reply {
  id: number;
  /** Per file of the batch, in its order: null when it was written. */
  errors: Array<{ message: string; code?: string; syscall?: string } | null>;
}

interface Batch {
  files: Array<Record<string, unknown>>;
  bytes: number;
  transfer: ArrayBuffer[];
  waiting: Array<PromiseWithResolvers<undefined>>;
}

export class SmallFileWriters {
  private readonly pool: ThreadPool<Reply>;
  /** Files and bytes handed over and not yet written (copies the small-file plan bounds: room()). */
  private queuedBytes = 0;
  private queuedFiles = 0;
  private roomWaiters: Array<{ bytes: number; files: number; resolve: () => void }> = [];
  /**
   * Files handed over in this turn of the event loop, sent as one message when it ends: a message
   * costs the main thread tens of microseconds whatever it holds, and a restore of 20,000 small
   * files spent a second of its main thread in postMessage when each went alone.
   */
  private batch: Batch | undefined;

  constructor(count: number) {
    this.pool = new ThreadPool<Reply>({
      source: WORKER_SOURCE,
      count,
      what: 'a restore writer thread',
      hint: 'run the restore again; files it had not finished were removed',
    });
  }

  /**
   * Creates and completes one file; resolves once it is on disk with its metadata. The pieces
   * are copied once, into the buffer handed over to the worker (transferred, not copied again).
   * An all-zero piece of 4 KiB or more is left as a hole, as for large files.
   */
  write(file: SmallFile): Promise<void> {
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
    const { mode, uid, gid, mtimeNs } = file.entry;
    if (!this.batch) {
      this.batch = { files: [], bytes: 0, transfer: [], waiting: [] };
      setImmediate(() => this.send());
    }
    const written = Promise.withResolvers<undefined>();
    this.batch.files.push({
      path: file.path.toString('latin1'),
      content: content.buffer,
      writes,
      mode,
      uid,
      gid,
      mtime: microsecondTime(mtimeNs),
    });
    this.batch.transfer.push(content.buffer);
    this.batch.waiting.push(written);
    this.batch.bytes += size;
    this.queuedBytes += size;
    this.queuedFiles++;
    return written.promise;
  }

  private send(): void {
    const batch = this.batch as Batch;
    this.batch = undefined;
    this.pool
      .request({ files: batch.files }, batch.transfer)
      .then(
        (reply) =>
          batch.waiting.forEach((written, i) => {
            const error = reply.errors[i];
            if (!error) written.resolve(undefined);
            else written.reject(Object.assign(new Error(error.message), { code: error.code, syscall: error.syscall }));
          }),
        (error: unknown) => batch.waiting.forEach((written) => written.reject(error)),
      )
      .finally(() => {
        this.queuedBytes -= batch.bytes;
        this.queuedFiles -= batch.files.length;
        const waiting = this.roomWaiters;
        this.roomWaiters = [];
        for (const waiter of waiting) {
          if (this.hasRoom(waiter.bytes, waiter.files)) waiter.resolve();
          else this.roomWaiters.push(waiter);
        }
      });
  }

  /** Resolves once fewer than `bytes` and fewer than `files` handed over are waiting to be written. */
  room(bytes: number, files: number): Promise<void> {
    if (this.hasRoom(bytes, files)) return Promise.resolve();
    return new Promise((resolve) => this.roomWaiters.push({ bytes, files, resolve }));
  }

  private hasRoom(bytes: number, files: number): boolean {
    return this.queuedBytes < bytes && this.queuedFiles < files;
  }

  /** Stops the workers (after the restore, or when it fails: a file in flight then is unlinked by the restorer). */
  close(): Promise<void> {
    return this.pool.close();
  }
}

/**
 * Gathers a small file's slices (releasing each from the read-ahead as it arrives), checks their
 * size against the snapshot's (a page file of exactly SMALL_FILE_BYTES comes this way too), then
 * has the file written whole. Resolves with its size. The first file of a hard-link group resolves
 * `job.created` only once it is complete (the restorer rejects it when the file fails).
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
  if (size !== job.entry.size) throw new DamagedError(`restored ${size} bytes, the snapshot records ${job.entry.size}`);
  await writers.write({ path, pieces, entry: job.entry });
  job.created?.resolve(path);
  return size;
}
