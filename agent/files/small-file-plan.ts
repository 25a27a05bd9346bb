import { DamagedError } from '../core/errors.ts';
import type { PieceReader } from '../core/piece-reader.ts';
import type { TreeEntry } from '../core/tree.ts';
import { SMALL_FILE_BYTES, type SmallFileWriters } from './small-file-writers.ts';

/**
 * Small files of one piece are restored by frame, not in walk order: the walk queues them (no read
 * yet), and once thousands are queued their frames are opened in pack order, each once, every file
 * it holds handed to the writer thread as it is opened.
 *
 * Why: a frame (~1 MiB, compressed and encrypted whole) holds many small files, and when the files
 * of a directory were stored by many different backups, neighbours in the walk lie in different
 * frames. Read in walk order, a frame was opened again for each file it held: 8,000 files of 25 KiB
 * laid round-robin over 200 frames took 13 s to restore (each frame opened 40 times), restic 1.3 s
 * (docs/performance-notes.md). A queued file holds no bytes, only its entry; a frame is released as
 * soon as its files are handed over (the writer copies each file out), and a few frames are
 * fetched ahead (FRAMES_AHEAD), so memory is the writer's queue plus those frames.
 *
 * The files of one piece are nearly all small files: the default chunker cuts no piece below
 * 256 KiB, the small-file size. A small file of several slices (a smaller minimum, a page file's
 * extents) goes the restorer's other way.
 *
 * A file whose piece cannot be read fails alone (its promise rejects); what that means for the
 * restore is the restorer's to decide.
 */

/**
 * Files queued before their frames are opened: at most enough to span the frames of many backups,
 * and as soon as they hold this many files per distinct frame on average (then each frame opened
 * serves that many files, and the writer thread starts early: files laid out in walk order go
 * after a frame's worth).
 */
const PLAN_FILES = 8192;
const FILES_PER_FRAME = 32;
/**
 * Files of plans already read or being read, not yet written: each costs a few KiB (its job, its
 * promises) until it is, and the writer thread is what they wait for.
 */
const READ_FILES = 512;
/**
 * Bytes and files waiting for the writer thread before the next frame is opened: each waiting file
 * costs its bytes and a few KiB besides (40,000 files of 50–200 bytes peaked 80 MiB higher when
 * only the bytes were counted).
 */
const WRITER_QUEUE_BYTES = 32 << 20;
const WRITER_QUEUE_FILES = 1024;
/** Frames fetched at once: the one whose files are handed over and the next ones. */
const FRAMES_AHEAD = 4;

interface PlannedFile {
  entry: TreeEntry;
  id: Buffer;
  /** The frame its piece is read from (its first indexed location, where the reader reads it first); undefined if not indexed. */
  frame: string | undefined;
  path: Buffer;
  /** Settled once the target path is ready for the file (--force removed what was there). */
  cleared: Promise<void>;
  written: PromiseWithResolvers<number>;
  settled: boolean;
}

export class SmallFilePlan {
  private readonly reader: PieceReader;
  private readonly writers: SmallFileWriters;
  private readonly changed: () => void;
  private readonly signal: AbortSignal | undefined;
  private stopped: Error | undefined;
  private queued: PlannedFile[] = [];
  private queuedFrames = new Set<string>();
  /** Files queued and not yet written or failed. */
  private files = 0;
  /** The plans being read, one after the other. */
  private reading: Promise<void> = Promise.resolve();

  /** `changed`: called when files are written or fail (room for more); `signal`: a cancelled restore hands over no more files. */
  constructor(reader: PieceReader, writers: SmallFileWriters, changed: () => void, signal?: AbortSignal) {
    this.reader = reader;
    this.writers = writers;
    this.changed = changed;
    this.signal = signal;
  }

  /** Whether a file entry is restored this way: one whole piece, the file's size. */
  static fits(entry: TreeEntry): boolean {
    return (
      entry.size !== undefined && entry.size <= SMALL_FILE_BYTES && entry.content?.length === 1 && !entry.extentLists && !entry.contentLists
    );
  }

  /** Whether queueing another file must wait until earlier ones are written (they will be, with no flush). */
  get full(): boolean {
    return this.files - this.queued.length >= READ_FILES;
  }

  /** Queues one file (PlanFile.fits); resolves with its size once it is written with its metadata. */
  add(entry: TreeEntry, path: Buffer, cleared: Promise<void>): Promise<number> {
    const written = Promise.withResolvers<number>();
    // Awaited only once the file's frame is opened; a file that fails first never awaits it.
    cleared.catch(() => undefined);
    const id = Buffer.from((entry.content as string[])[0] as string, 'hex');
    const frame = this.frameOf(id);
    this.queued.push({ entry, id, frame, path, cleared, written, settled: false });
    if (frame) this.queuedFrames.add(frame);
    this.files++;
    if (this.queued.length >= PLAN_FILES || this.queued.length >= FILES_PER_FRAME * Math.max(2, this.queuedFrames.size)) this.flush();
    return written.promise;
  }

  /** Opens the frames of the files queued so far (before the caller waits for anything: files may wait on them). */
  flush(): void {
    if (this.queued.length === 0) return;
    const files = this.queued;
    this.queued = [];
    this.queuedFrames = new Set();
    this.reading = this.reading.then(() => this.read(files));
  }

  /** The restore stops (a failure, even after the walk ended): files not handed to the writer yet fail with `error`. */
  stop(error: Error): void {
    this.stopped ??= error;
    for (const file of this.queued.splice(0)) this.fail(file, error);
  }

  private async read(files: PlannedFile[]): Promise<void> {
    try {
      await this.readFrames(files);
    } catch (error) {
      // Not expected (each file's failures are its own), but no file may be left waiting.
      for (const file of files) this.fail(file, error);
    }
  }

  private async readFrames(files: PlannedFile[]): Promise<void> {
    // Frame by frame, in pack order (by each piece's first indexed location, where the reader reads it first).
    const frames = new Map<string, PlannedFile[]>();
    for (const file of files) {
      // Not indexed: the read fails with the reader's own error, first.
      const key = file.frame ?? '';
      const group = frames.get(key);
      if (group) group.push(file);
      else frames.set(key, [file]);
    }
    const groups = [...frames.keys()].sort().map((key) => frames.get(key) as PlannedFile[]);
    const reads = groups.map(() => undefined as Map<string, Promise<Buffer>> | undefined);
    for (const [i, group] of groups.entries()) {
      // The next frames are fetched while this one's files are handed over: a store with tens of
      // milliseconds per read (S3) would otherwise wait that long for every frame.
      for (let ahead = i; ahead < Math.min(groups.length, i + FRAMES_AHEAD); ahead++) reads[ahead] ??= this.startReads(groups[ahead] ?? []);
      await this.handOver(group, reads[i] as Map<string, Promise<Buffer>>);
      reads[i] = undefined;
    }
  }

  /**
   * The reads of one frame's pieces, all started at once: they share the frame's one fetch, and a
   * damaged frame fails them all at once rather than being fetched again for each file. None once
   * the restore stopped.
   */
  private startReads(group: PlannedFile[]): Map<string, Promise<Buffer>> {
    const pieces = new Map<string, Promise<Buffer>>();
    if (this.stopReason()) return pieces;
    for (const file of group) {
      const key = file.id.toString('latin1');
      if (pieces.has(key)) continue;
      const piece = this.reader.read(file.id);
      piece.catch(() => undefined);
      pieces.set(key, piece);
    }
    return pieces;
  }

  /** The files of one frame, each handed to the writer thread as there is room in its queue. */
  private async handOver(group: PlannedFile[], pieces: Map<string, Promise<Buffer>>): Promise<void> {
    for (const file of group) {
      // Per file: thousands of files may share one piece, each copied for the writer.
      await this.writers.room(WRITER_QUEUE_BYTES, WRITER_QUEUE_FILES);
      const stop = this.stopReason();
      const piece = pieces.get(file.id.toString('latin1'));
      if (stop || !piece) {
        this.fail(file, stop ?? new Error('the restore stopped'));
        continue;
      }
      let written: Promise<void>;
      let size: number;
      try {
        const bytes = await piece;
        size = bytes.length;
        if (size !== file.entry.size)
          throw new DamagedError(`restored ${size} bytes, the snapshot records ${file.entry.size ?? 'no size'}`);
        await file.cleared;
        // Copied into the writer's buffer at once: the frame is not held for the file.
        written = this.writers.write({ path: file.path, pieces: [bytes], entry: file.entry });
      } catch (error) {
        this.fail(file, error);
        continue;
      }
      written.then(
        () => this.settle(file, () => file.written.resolve(size)),
        (error: unknown) => this.fail(file, error),
      );
    }
  }

  private stopReason(): Error | undefined {
    return this.stopped ?? (this.signal?.aborted ? (this.signal.reason as Error) : undefined);
  }

  private frameOf(id: Buffer): string | undefined {
    try {
      const { packId, frameOffset } = this.reader.location(id);
      return `${packId}:${String(frameOffset).padStart(16, '0')}`;
    } catch {
      return undefined;
    }
  }

  private fail(file: PlannedFile, error: unknown): void {
    this.settle(file, () => file.written.reject(error));
  }

  private settle(file: PlannedFile, how: () => void): void {
    if (file.settled) return;
    file.settled = true;
    this.files--;
    how();
    this.changed();
  }
}
