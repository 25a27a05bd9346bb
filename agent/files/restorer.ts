// One unit: the tree walk, the read-ahead budget, the lanes and the writers share the state that
// bounds the restore's memory and decides what is written and what is removed after a failure;
// split apart, each part would reach into the others' internals.
import { constants as fsConstants } from 'node:fs';
import { link, lstat, open, symlink, unlink, type FileHandle } from 'node:fs/promises';
import { CairnError, DamagedError, errorMessage } from '../core/errors.ts';
import type { PieceReader } from '../core/piece-reader.ts';
import type { RootMeta, Snapshot } from '../core/snapshot.ts';
import { decodeTree, entryName, entryProblem, entryTarget, type TreeEntry } from '../core/tree.ts';
import type { ProgressListener } from '../progress/progress.ts';
import { FileJob, type PieceItem } from './file-job.ts';
import { PathMatcher } from './glob.ts';
import { sliceReads } from './slice-reads.ts';
import { LANES, feedLane, laneFile, type ReadAheadBudget } from './file-lanes.ts';
import { ThreadStoppedError } from '../pipeline/thread-pool.ts';
import { applyDirMeta, applyLinkMeta, finishFile, isZero, writeAll } from './restore-metadata.ts';
import { TargetTree } from './restore-target.ts';
import { targetWideHint } from './target-errors.ts';
import { SmallFilePlan } from './small-file-plan.ts';
import { SMALL_FILE_BYTES, SmallFileWriters, WRITER_THREADS, restoreSmallFile } from './small-file-writers.ts';

export { fetchAheadFor, prepareTarget, readAheadFor, type TargetState } from './restore-target.ts';

export interface RestoreOptions {
  target: string;
  includes: string[];
  force: boolean;
  ignoreErrors: boolean;
  /** Bytes of pieces fetched ahead of the writer (memory bound of the restore). */
  readAheadBytes: number;
  progress: ProgressListener;
  signal?: AbortSignal | undefined;
  /**
   * Whether the snapshot's own directory metadata (`root`) goes onto the target: only when the
   * restore created the target or found it empty. A --force restore into a directory that holds
   * data (say `--target /`) must not chown or chmod that directory itself.
   */
  applyRoot?: boolean | undefined;
  /** Paths in the snapshot written under their name plus `suffix`, for an engine to move into place last (engines/engine.ts RestoreToOptions). */
  partial?: { paths: ReadonlySet<string>; suffix: string } | undefined;
}

export interface RestoreResult {
  files: number;
  dirs: number;
  symlinks: number;
  bytes: number;
  errors: Array<{ path: string; error: string }>;
}

/**
 * What the tree walk hands the writer. `rel` is the path shown in messages and
 * matched by --include (names as UTF-8); `key` is the exact path: its bytes as
 * a latin1 string.
 */
type Item =
  | { kind: 'dir'; rel: string; key: string; entry: TreeEntry; included: boolean }
  | { kind: 'symlink'; rel: string; key: string; entry: TreeEntry }
  | { kind: 'file'; rel: string; key: string; entry: TreeEntry }
  | { kind: 'lane'; rel: string }
  | PieceItem
  | { kind: 'end'; rel: string; entry: TreeEntry }
  | { kind: 'bad'; rel: string; error: Error };

/**
 * Files written at once through the main thread, each holding an open file (larger files) or its
 * pieces' frames (small files of several slices). Small files of one piece are not counted: they
 * are queued and read by frame (small-file-plan.ts).
 */
const FILE_JOBS = 32;

/**
 * Writes a snapshot's tree under `target` and nowhere else: every name is
 * checked by the rule the archiver applied (core/tree.ts nameProblem) and must
 * be unique in its directory, directories on the way are created (or, with
 * --force, checked to be real directories), and files are created with
 * O_EXCL|O_NOFOLLOW, so no manifest — however crafted — can write through a
 * symlink or outside the target. Pieces are fetched ahead of the writer; a file is its slices
 * (slice-reads.ts), and one whose slices are damaged or do not add up is removed, as on a bad read.
 */
export class Restorer implements ReadAheadBudget {
  readonly result: RestoreResult = { files: 0, dirs: 0, symlinks: 0, bytes: 0, errors: [] };
  private readonly reader: PieceReader;
  private readonly options: RestoreOptions;
  /** The --include patterns, absolute ones taken relative to the paths the snapshot was taken of (set by run). */
  private includes = new PathMatcher([]);
  private readonly target: TargetTree;
  private readonly smallFiles = new SmallFileWriters(WRITER_THREADS);
  private readonly plan: SmallFilePlan;
  private readonly hardlinks = new Map<string, Promise<Buffer>>();
  private readonly queuedLinks = new Set<string>();
  private lastReport = 0;
  private totals: { totalFiles: number; totalBytes: number } | undefined;
  private buffered = 0;
  private wakers: Array<() => void> = [];
  private failure: Error | undefined;
  /** Set when the walk ends early: lanes waiting for read-ahead room give up. */
  private stopped: Error | undefined;
  private readonly lanes = new Set<Promise<void>>();
  /** Hard links waiting for their group's first member to be complete. */
  private linkWaiters = 0;
  /** The key of a file whose writing never started: the walk yields none of its pieces. */
  private skipping: string | undefined;

  constructor(reader: PieceReader, options: RestoreOptions) {
    this.reader = reader;
    this.options = options;
    this.target = new TargetTree(options.target, options.force, () => this.result.dirs++);
    this.plan = new SmallFilePlan(reader, this.smallFiles, () => this.wake(), options.signal);
  }

  async run(snapshot: Snapshot): Promise<RestoreResult> {
    this.includes = new PathMatcher(this.options.includes, snapshot.paths);
    if (this.includes.empty) this.totals = { totalFiles: snapshot.summary.totalFiles, totalBytes: snapshot.summary.totalBytes };
    const jobs = new Set<Promise<void>>();
    /** The jobs counted against FILE_JOBS. */
    const counted = new Set<Promise<void>>();
    let failed = false;
    let job: FileJob | undefined;
    try {
      for await (const item of this.walk(snapshot.tree, '', '', new Set())) {
        this.options.signal?.throwIfAborted();
        this.throwIfFailed();
        // Bound what is fetched but not yet written: the restore's memory. (The files writing it wait for
        // nothing queued in the small-file plan.)
        while (this.buffered >= this.options.readAheadBytes) await this.written();
        try {
          switch (item.kind) {
            case 'bad':
              if (job && item.rel === job.rel) {
                job.fail(item.error);
                break;
              }
              throw item.error;
            case 'dir':
              this.target.noteDir(item.key, item.entry);
              if (item.included) await this.target.ensureDir(item.key);
              break;
            case 'symlink':
              await this.restoreSymlink(item.key, item.entry);
              break;
            case 'file': {
              await this.target.ensureParent(item.key);
              const planned = !this.followsLink(item.entry) && SmallFilePlan.fits(item.entry);
              while (planned ? this.plan.full : counted.size >= FILE_JOBS) {
                this.throwIfFailed();
                // A hard link waiting for its group's first member, queued in the plan: the plan is read now
                // (otherwise only when it is full, which suits files scattered over many frames).
                if (this.linkWaiters > 0) this.plan.flush();
                await (planned ? this.written() : Promise.race(counted));
              }
              job = new FileJob(item.rel, item.key, item.entry);
              this.planHardlink(job);
              if (planned) {
                const running = this.writePlanned(job).finally(() => jobs.delete(running));
                jobs.add(running);
                break;
              }
              const running = this.writeFile(job).finally(() => {
                jobs.delete(running);
                counted.delete(running);
              });
              jobs.add(running);
              counted.add(running);
              break;
            }
            case 'lane':
              if (job) this.startLane(job);
              break;
            case 'piece':
              this.buffered += item.length;
              if (!job?.push(item)) this.release(item.length);
              break;
            case 'end':
              if (!job?.fedByLane) job?.close();
              job = undefined;
              break;
          }
        } catch (error) {
          // A file that could not even start (its directory cannot be created): the walk skips its pieces,
          // which nothing would write or release (under --ignore-errors the read-ahead would never drain).
          // (Nor does it count as its hard-link group's first member: the next one carries the data.)
          if (item.kind === 'file') this.skipping = item.key;
          this.handleError(item.rel, error);
        }
      }
      this.plan.flush();
      await Promise.all(jobs);
      await Promise.all(this.lanes);
      this.throwIfFailed();
    } catch (error) {
      job?.fail(error as Error);
      this.stopped = error as Error;
      this.plan.stop(error as Error);
      this.release(0);
      await Promise.allSettled([...jobs, ...this.lanes]);
      failed = true;
      throw error;
    } finally {
      await this.smallFiles.close();
      // Nothing writes any more: the directories taken over from other users get their owner and mode back
      // (the snapshot's are applied only at the end of a restore that got there).
      if (failed)
        for (const failure of await this.target.giveBack())
          this.options.progress.warn(`could not give a directory back its owner and mode after the failure: ${failure}`);
    }
    // Directory metadata last, deepest first, so writing their contents did not change it;
    // the target itself last of all, from the directory the snapshot was taken of.
    for (const { path, entry, rel } of this.target.createdDirs.reverse()) {
      try {
        await applyDirMeta(path, entry);
      } catch (error) {
        this.handleError(rel, error);
      }
    }
    if (snapshot.root && this.options.applyRoot !== false) await this.applyRoot(snapshot.root);
    else if (snapshot.root)
      this.options.progress.warn(
        `restore target ${this.options.target} held data before this restore (--force): it keeps its own owner, mode and times (the snapshot's were not applied)`,
        { path: '.' },
      );
    this.throwIfFailed();
    return this.result;
  }

  /** The snapshot's own directory metadata onto the target: never through a symlink, errors like any entry's. */
  private async applyRoot(root: RootMeta): Promise<void> {
    try {
      await applyDirMeta(this.target.path(''), root);
    } catch (error) {
      const code = error instanceof Error ? (error as NodeJS.ErrnoException).code : undefined;
      if ((code === 'ELOOP' || code === 'ENOTDIR') && (await lstat(this.target.path('')).catch(() => undefined))?.isSymbolicLink()) {
        this.options.progress.warn(
          `restore target ${this.options.target} is a symlink: the directory it points to keeps its owner, mode and times (the snapshot's were not applied)`,
          { path: '.' },
        );
        return;
      }
      this.handleError(". (the target's own metadata)", error);
    }
  }

  private written(): Promise<void> {
    return new Promise((resolve) => this.wakers.push(resolve));
  }

  release(bytes: number): void {
    this.buffered -= bytes;
    this.wake();
  }

  /** Wakes what waits for room: the walk (read-ahead, the small-file plan's files in flight) and the lanes. */
  private wake(): void {
    for (const wake of this.wakers.splice(0)) wake();
  }

  async reserve(bytes: number): Promise<void> {
    for (;;) {
      const stop = this.stopped ?? this.failure;
      if (stop) throw stop;
      this.options.signal?.throwIfAborted();
      if (this.buffered < this.options.readAheadBytes) break;
      await this.written();
    }
    this.buffered += bytes;
  }

  private startLane(job: FileJob): void {
    job.fedByLane = true;
    const lane = feedLane(job, this.reader, this).finally(() => this.lanes.delete(lane));
    this.lanes.add(lane);
  }

  /**
   * A small file of one piece: queued, read when its frame is opened and written whole by the writer
   * thread (small-file-plan.ts), created exclusively like any other. The first file of a hard-link
   * group resolves `job.created` once it is complete.
   */
  private async writePlanned(job: FileJob): Promise<void> {
    const path = this.target.path(job.key);
    try {
      // Queued at once (the walk checked the plan's bound); the path is cleared meanwhile.
      const written = this.plan.add(job.entry, path, this.target.clearForEntry(path));
      // Awaited first: `bytes += await …` would add to the count as read before the wait, losing files finished meanwhile.
      const size = await written;
      job.created?.resolve(path);
      this.result.bytes += size;
      this.report(job.rel);
      this.result.files++;
    } catch (error) {
      // Nothing of it is left on disk: the writer thread removes a file it created and could not finish.
      job.created?.reject(error);
      this.handleError(job.rel, error);
    } finally {
      job.settle();
    }
  }

  /** One file: created exclusively, pieces written in order as they arrive (holes left sparse), metadata last. */
  private async writeFile(job: FileJob): Promise<void> {
    const path = this.target.path(job.key);
    let handle: FileHandle | undefined;
    // Bytes of this file counted so far: taken back if it fails (it is removed), so the summary counts restored files only.
    let bytesCounted = 0;
    try {
      if (writtenWhole(job)) {
        // Written whole by the writer thread once its pieces are in (small-file-writers.ts).
        await this.target.clearForEntry(path);
        // Awaited first: `bytes += await …` would add to the count as read before the wait, losing files finished meanwhile.
        const size = await restoreSmallFile(this.smallFiles, job, path, (bytes) => this.release(bytes));
        this.result.bytes += size;
        this.report(job.rel);
        this.result.files++;
        return;
      }
      const created = await this.startFile(job);
      if (created !== 'linked') {
        handle = created;
        let position = 0;
        let end = 0;
        for (let item = await job.next(); item; item = await job.next()) {
          let data: Buffer;
          try {
            data = await item.data;
          } finally {
            this.release(item.length);
          }
          if (!(data.length >= 4096 && isZero(data))) {
            await writeAll(handle, data, position);
            end = position + data.length;
          }
          position += data.length;
          this.result.bytes += data.length;
          bytesCounted += data.length;
          this.report(job.rel);
        }
        await finishFile(handle, position, end, job.entry);
        await handle.close();
        handle = undefined;
        // The group's other members link to it only now: a link made earlier would keep a file that fails
        // (the first member is then removed) under their names, empty or cut short.
        job.created?.resolve(path);
      }
      this.result.files++;
    } catch (error) {
      // Settled before the drain: the drain's release wakes the walk and the lanes, and a piece pushed
      // while this file is being removed would be held by nobody (its bytes lost to the read-ahead).
      job.settle();
      // The other members of its hard-link group wait for this file: they fail with it rather than wait
      // forever. Here, where every failure of a file passes (a missing piece, a target that cannot be cleared, a write).
      job.created?.reject(error);
      job.drain((bytes) => this.release(bytes));
      await handle?.close().catch(() => undefined);
      await unlink(path).catch(() => undefined);
      this.result.bytes -= bytesCounted;
      this.handleError(job.rel, error);
    } finally {
      job.settle();
    }
  }

  private handleError(rel: string, error: unknown): void {
    if ((error instanceof Error && error.name === 'AbortError') || isStorageFailure(error) || !this.options.ignoreErrors) {
      this.failure ??=
        (error instanceof Error && error.name === 'AbortError') || isStorageFailure(error)
          ? (error as Error)
          : new CairnError(error instanceof CairnError ? error.code : 'Cairn.Failure', `cannot restore ${rel}: ${errorMessage(error)}`, {
              hint: targetWideHint(error) ?? 'nothing damaged was written for this file; pass --ignore-errors to restore everything else',
              cause: error,
            });
      // The plan's files stop too, also once the walk has ended (nothing else would stop them).
      this.plan.stop(this.failure);
      this.release(0);
      return;
    }
    this.result.errors.push({ path: rel, error: errorMessage(error) });
    this.options.progress.warn(`cannot restore ${rel}: ${errorMessage(error)}`, { path: rel });
  }

  private throwIfFailed(): void {
    if (this.failure !== undefined) throw this.failure;
  }

  /**
   * `ancestors`: the tree ids on the way down. An honest tree can never hold
   * itself (ids are keyed hashes of the content), but a crafted pack can claim
   * any id for any bytes, and a loop would otherwise be walked forever under
   * --ignore-errors.
   */
  private async *walk(treeId: string, rel: string, key: string, ancestors: Set<string>): AsyncGenerator<Item> {
    if (ancestors.has(treeId)) {
      yield {
        kind: 'bad',
        rel: rel || '.',
        error: new DamagedError(`tree ${treeId} holds itself (a loop of directories); refusing to write it`),
      };
      return;
    }
    let entries: TreeEntry[];
    try {
      entries = decodeTree(await this.reader.read(Buffer.from(treeId, 'hex')), treeId).entries;
    } catch (error) {
      yield { kind: 'bad', rel: rel || '.', error: error as Error };
      return;
    }
    const seen = new Set<string>();
    for (const entry of entries) {
      const name = entryName(entry);
      const nameKey = name.toString('latin1');
      const unsafe =
        entryProblem(entry) ?? (seen.has(nameKey) ? `the name ${JSON.stringify(entry.name)} twice in one directory` : undefined);
      seen.add(nameKey);
      if (unsafe) {
        yield {
          kind: 'bad',
          rel: `${rel || '.'}/${JSON.stringify(entry.name)}`,
          error: new DamagedError(`the snapshot holds ${unsafe}; refusing to write it`),
        };
        continue;
      }
      const childRel = rel === '' ? entry.name : `${rel}/${entry.name}`;
      let childKey = key === '' ? nameKey : `${key}/${nameKey}`;
      if (entry.type !== 'dir' && this.options.partial?.paths.has(childRel)) childKey += this.options.partial.suffix;
      const included = this.includes.empty || this.includes.matchesSelfOrAncestor(childRel);
      if (entry.type === 'dir') {
        // With --include, read only the trees of directories that may hold a match.
        if (!included && !this.includes.mayMatchBelow(childRel)) continue;
        yield { kind: 'dir', rel: childRel, key: childKey, entry, included };
        if (entry.subtree) {
          ancestors.add(treeId);
          yield* this.walk(entry.subtree, childRel, childKey, ancestors);
          ancestors.delete(treeId);
        }
        continue;
      }
      if (!included) continue;
      if (entry.type === 'symlink') {
        yield { kind: 'symlink', rel: childRel, key: childKey, entry };
        continue;
      }
      yield { kind: 'file', rel: childRel, key: childKey, entry };
      if (this.skipping !== childKey && (!entry.hardlink || !this.hardlinkQueued(entry.hardlink))) {
        if (SmallFilePlan.fits(entry)) {
          // Read when its frame is opened (small-file-plan.ts), not here in walk order.
          yield { kind: 'end', rel: childRel, entry };
          continue;
        }
        if (this.lanes.size < LANES && laneFile(entry)) {
          yield { kind: 'lane', rel: childRel };
          yield { kind: 'end', rel: childRel, entry };
          continue;
        }
        try {
          // A slice of a recent piece starts no read, but is charged its own bytes: a page file whose
          // extents keep returning to cached pieces still queues no more than the read-ahead's worth.
          for await (const read of sliceReads(entry, this.reader))
            yield { kind: 'piece', rel: childRel, id: read.id, length: read.started || read.length, data: read.data };
        } catch (error) {
          yield { kind: 'bad', rel: childRel, error: error as Error };
        }
      }
      yield { kind: 'end', rel: childRel, entry };
    }
  }

  /** The first file of a hard-link group carries the data; the others become links to it. */
  private hardlinkQueued(group: string): boolean {
    if (this.queuedLinks.has(group)) return true;
    this.queuedLinks.add(group);
    return false;
  }

  private async restoreSymlink(key: string, entry: TreeEntry): Promise<void> {
    await this.target.ensureParent(key);
    const path = this.target.path(key);
    await this.target.clearForEntry(path);
    await symlink(entryTarget(entry), path);
    await applyLinkMeta(path, entry);
    this.result.symlinks++;
  }

  /** Whether the file links to an earlier file of its hard-link group (planned before it: walk order). */
  private followsLink(entry: TreeEntry): boolean {
    return entry.hardlink !== undefined && this.hardlinks.has(entry.hardlink);
  }

  /** Decided in walk order: the first file of a hard-link group is created, the others link to it. */
  private planHardlink(job: FileJob): void {
    const group = job.entry.hardlink;
    if (!group) return;
    const first = this.hardlinks.get(group);
    if (first) {
      job.linkTo = first;
      // Counted from now, before its job runs: the walk decides on it before it waits (run).
      this.linkWaiters++;
      const done = (): void => {
        this.linkWaiters--;
      };
      first.then(done, done);
      return;
    }
    const created = Promise.withResolvers<Buffer>();
    created.promise.catch(() => undefined);
    job.created = created;
    this.hardlinks.set(group, created.promise);
  }

  private async startFile(job: FileJob): Promise<FileHandle | 'linked'> {
    const path = this.target.path(job.key);
    await this.target.clearForEntry(path);
    if (job.linkTo) {
      // Link once the first file is complete (writeFile resolves `created` then).
      await link(await job.linkTo, path);
      return 'linked';
    }
    return open(path, fsConstants.O_WRONLY | fsConstants.O_CREAT | fsConstants.O_EXCL | fsConstants.O_NOFOLLOW, 0o600);
  }

  private report(current: string): void {
    const now = Date.now();
    if (now - this.lastReport < 200) return;
    this.lastReport = now;
    this.options.progress.progress({ phase: 'restore', files: this.result.files, bytes: this.result.bytes, current, ...this.totals });
  }
}

/** Whether a file is gathered whole and written by the writer thread (small-file-writers.ts), not here through an open file. */
function writtenWhole(job: FileJob): boolean {
  return !job.linkTo && job.entry.size !== undefined && job.entry.size <= SMALL_FILE_BYTES;
}

/** Failures that say nothing about one file's data (storage, cancellation, a stopped thread): they stop the restore even under --ignore-errors. */
function isStorageFailure(error: unknown): boolean {
  return (
    error instanceof ThreadStoppedError ||
    (error instanceof CairnError && (error.code === 'Cairn.Storage' || error.code === 'Cairn.Cancelled'))
  );
}
