import { constants as fsConstants } from 'node:fs';
import {
  lchown,
  link,
  lstat,
  lutimes,
  mkdir,
  open,
  readdir,
  rm,
  chmod,
  chown,
  stat,
  symlink,
  unlink,
  utimes,
  type FileHandle,
} from 'node:fs/promises';
import { join } from 'node:path';
import { CairnError, DamagedError, errorMessage } from '../core/errors.ts';
import type { PieceReader } from '../core/piece-reader.ts';
import type { Snapshot } from '../core/snapshot.ts';
import { decodeTree, type TreeEntry } from '../core/tree.ts';
import type { ProgressListener } from '../progress/progress.ts';
import { contentIds } from '../pipeline/snapshot-writer.ts';
import { PathMatcher } from './glob.ts';
import { isErrno } from '../storage/file.ts';

export interface RestoreOptions {
  target: string;
  includes: string[];
  force: boolean;
  ignoreErrors: boolean;
  /** Bytes of pieces fetched ahead of the writer (memory bound of the restore). */
  readAheadBytes: number;
  progress: ProgressListener;
  signal?: AbortSignal | undefined;
}

export interface RestoreResult {
  files: number;
  dirs: number;
  symlinks: number;
  bytes: number;
  errors: Array<{ path: string; error: string }>;
}

type Item =
  | { kind: 'dir'; rel: string; entry: TreeEntry; included: boolean }
  | { kind: 'symlink'; rel: string; entry: TreeEntry }
  | { kind: 'file'; rel: string; entry: TreeEntry }
  | { kind: 'piece'; rel: string; id: Buffer; length: number; data: Promise<Buffer> }
  | { kind: 'end'; rel: string; entry: TreeEntry }
  | { kind: 'bad'; rel: string; error: Error };

const ZERO = Buffer.alloc(64 << 10);
/** Files written at once: small files are bound by per-file system calls, not bandwidth. */
const FILE_JOBS = 32;

type PieceItem = Extract<Item, { kind: 'piece' }>;

/** The pieces of one file, handed from the tree walk to that file's writer as they are fetched. */
class FileJob {
  readonly rel: string;
  readonly entry: TreeEntry;
  /** For the first file of a hard-link group: resolved with its path once created. */
  created: PromiseWithResolvers<string> | undefined;
  /** For the other files of the group: the first file's path. */
  linkTo: Promise<string> | undefined;
  private readonly queue: PieceItem[] = [];
  private closed = false;
  private error: Error | undefined;
  private waiter: (() => void) | undefined;
  private settled = false;

  constructor(rel: string, entry: TreeEntry) {
    this.rel = rel;
    this.entry = entry;
  }

  push(item: PieceItem): void {
    if (this.settled) {
      item.data.catch(() => undefined);
      return;
    }
    this.queue.push(item);
    this.notify();
  }

  close(): void {
    this.closed = true;
    this.notify();
  }

  fail(error: Error): void {
    this.error ??= error;
    this.close();
  }

  /** The next piece, or undefined at the end of the file; throws what the walk reported for this file. */
  async next(): Promise<PieceItem | undefined> {
    for (;;) {
      const item = this.queue.shift();
      if (item) return item;
      if (this.error) throw this.error;
      if (this.closed) return undefined;
      await new Promise<void>((resolve) => (this.waiter = resolve));
    }
  }

  /** After a failure: let go of pieces still queued. */
  drain(release: (bytes: number) => void): void {
    for (const item of this.queue.splice(0)) {
      item.data.catch(() => undefined);
      release(item.length);
    }
  }

  settle(): void {
    this.settled = true;
  }

  private notify(): void {
    const waiter = this.waiter;
    this.waiter = undefined;
    waiter?.();
  }
}
const isRoot = process.getuid?.() === 0;
const ourUid = process.getuid?.() ?? -1;
const ourGid = process.getgid?.() ?? -1;

/** Refuses a non-empty target unless forced, before anything is written. */
export async function prepareTarget(target: string, force: boolean): Promise<void> {
  let isDir: boolean;
  try {
    isDir = (await stat(target)).isDirectory();
  } catch (error) {
    if (!isErrno(error, 'ENOENT')) throw error;
    await mkdir(target, { recursive: true });
    return;
  }
  if (!isDir) throw new CairnError('Cairn.Usage', `restore target ${target} exists and is not a directory`, { hint: 'choose a directory' });
  if (!force && (await readdir(target)).length > 0) {
    throw new CairnError('Cairn.TargetNotEmpty', `restore target ${target} is not empty; nothing was written`, {
      hint: 'restore into an empty or new directory, or pass --force to overwrite what is there',
    });
  }
}

/**
 * Writes a snapshot's tree under `target` and nowhere else: every name is a
 * checked single path component, directories on the way are created (or, with
 * --force, checked to be real directories), and files are created with
 * O_EXCL|O_NOFOLLOW, so no manifest — however crafted — can write through a
 * symlink or outside the target. Pieces are fetched ahead of the writer.
 */
export class Restorer {
  readonly result: RestoreResult = { files: 0, dirs: 0, symlinks: 0, bytes: 0, errors: [] };
  private readonly reader: PieceReader;
  private readonly options: RestoreOptions;
  private readonly includes: PathMatcher;
  private readonly dirEntries = new Map<string, TreeEntry>();
  private readonly created = new Set<string>(['']);
  private readonly createdDirs: Array<{ path: string; entry: TreeEntry }> = [];
  private readonly hardlinks = new Map<string, Promise<string>>();
  private lastReport = 0;
  private totals: { totalFiles: number; totalBytes: number } | undefined;

  constructor(reader: PieceReader, options: RestoreOptions) {
    this.reader = reader;
    this.options = options;
    this.includes = new PathMatcher(options.includes);
  }

  async run(snapshot: Snapshot): Promise<RestoreResult> {
    if (this.includes.empty) this.totals = { totalFiles: snapshot.summary.totalFiles, totalBytes: snapshot.summary.totalBytes };
    const jobs = new Set<Promise<void>>();
    let job: FileJob | undefined;
    try {
      for await (const item of this.walk(snapshot.tree, '')) {
        this.options.signal?.throwIfAborted();
        this.throwIfFailed();
        // Bound what is fetched but not yet written: the restore's memory.
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
              this.dirEntries.set(item.rel, item.entry);
              if (item.included) await this.ensureDir(item.rel);
              break;
            case 'symlink':
              await this.restoreSymlink(item.rel, item.entry);
              break;
            case 'file': {
              await this.ensureParent(item.rel);
              while (jobs.size >= FILE_JOBS) await Promise.race(jobs);
              job = new FileJob(item.rel, item.entry);
              this.planHardlink(job);
              const running = this.writeFile(job).finally(() => jobs.delete(running));
              jobs.add(running);
              break;
            }
            case 'piece':
              this.buffered += item.length;
              job?.push(item);
              break;
            case 'end':
              job?.close();
              job = undefined;
              break;
          }
        } catch (error) {
          this.handleError(item.rel, error);
        }
      }
      await Promise.all(jobs);
      this.throwIfFailed();
    } catch (error) {
      job?.fail(error as Error);
      await Promise.allSettled(jobs);
      throw error;
    }
    // Directory metadata last, deepest first, so writing their contents did not change it.
    for (const { path, entry } of this.createdDirs.reverse()) await applyMeta(path, entry, false);
    return this.result;
  }

  private buffered = 0;
  private wake: (() => void) | undefined;
  private failure: Error | undefined;

  private written(): Promise<void> {
    return new Promise((resolve) => (this.wake = resolve));
  }

  private release(bytes: number): void {
    this.buffered -= bytes;
    const wake = this.wake;
    this.wake = undefined;
    wake?.();
  }

  /** One file: created exclusively, pieces written in order as they arrive (holes left sparse), metadata last. */
  private async writeFile(job: FileJob): Promise<void> {
    const path = this.path(job.rel);
    let handle: FileHandle | undefined;
    try {
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
          this.report(job.rel);
        }
        await finishFile(handle, position, end, job.entry);
        await handle.close();
        handle = undefined;
      }
      this.result.files++;
    } catch (error) {
      job.drain((bytes) => this.release(bytes));
      await handle?.close().catch(() => undefined);
      await unlink(path).catch(() => undefined);
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
              hint: 'nothing damaged was written for this file; pass --ignore-errors to restore everything else',
              cause: error,
            });
      this.release(0);
      return;
    }
    this.result.errors.push({ path: rel, error: errorMessage(error) });
    this.options.progress.warn(`cannot restore ${rel}: ${errorMessage(error)}`, { path: rel });
  }

  private throwIfFailed(): void {
    if (this.failure !== undefined) throw this.failure;
  }

  private async *walk(treeId: string, rel: string): AsyncGenerator<Item> {
    let entries: TreeEntry[];
    try {
      entries = decodeTree(await this.reader.read(Buffer.from(treeId, 'hex')), treeId).entries;
    } catch (error) {
      yield { kind: 'bad', rel: rel || '.', error: error as Error };
      return;
    }
    const seen = new Set<string>();
    for (const entry of entries) {
      const unsafe = unsafeName(entry.name, seen);
      seen.add(entry.name);
      const childRel = rel === '' ? entry.name : `${rel}/${entry.name}`;
      if (unsafe) {
        yield {
          kind: 'bad',
          rel: `${rel || '.'}/${JSON.stringify(entry.name)}`,
          error: new DamagedError(`the snapshot holds ${unsafe}; refusing to write it`),
        };
        continue;
      }
      const included = this.includes.empty || this.includes.matchesSelfOrAncestor(childRel);
      if (entry.type === 'dir') {
        // With --include, read only the trees of directories that may hold a match.
        if (!included && !this.includes.mayMatchBelow(childRel)) continue;
        yield { kind: 'dir', rel: childRel, entry, included };
        if (entry.subtree) yield* this.walk(entry.subtree, childRel);
        continue;
      }
      if (!included) continue;
      if (entry.type === 'symlink') {
        yield { kind: 'symlink', rel: childRel, entry };
        continue;
      }
      yield { kind: 'file', rel: childRel, entry };
      if (!entry.hardlink || !this.hardlinkQueued(entry.hardlink)) {
        try {
          for await (const id of contentIds(entry, this.reader)) {
            const location = this.reader.location(id);
            const data = this.reader.read(id);
            data.catch(() => undefined);
            yield { kind: 'piece', rel: childRel, id, length: location.length, data };
          }
        } catch (error) {
          yield { kind: 'bad', rel: childRel, error: error as Error };
        }
      }
      yield { kind: 'end', rel: childRel, entry };
    }
  }

  private readonly queuedLinks = new Set<string>();

  /** The first file of a hard-link group carries the data; the others become links to it. */
  private hardlinkQueued(key: string): boolean {
    if (this.queuedLinks.has(key)) return true;
    this.queuedLinks.add(key);
    return false;
  }

  private path(rel: string): string {
    return join(this.options.target, ...rel.split('/'));
  }

  private async ensureDir(rel: string): Promise<void> {
    if (this.created.has(rel)) return;
    const slash = rel.lastIndexOf('/');
    await this.ensureDir(slash < 0 ? '' : rel.slice(0, slash));
    const path = this.path(rel);
    try {
      await mkdir(path, { mode: 0o700 });
    } catch (error) {
      if (!isErrno(error, 'EEXIST')) throw error;
      const existing = await lstat(path);
      if (!existing.isDirectory()) {
        // Only reachable with --force: replace what is there, never follow it.
        await unlink(path);
        await mkdir(path, { mode: 0o700 });
      }
    }
    this.created.add(rel);
    this.result.dirs++;
    const entry = this.dirEntries.get(rel);
    if (entry) this.createdDirs.push({ path, entry });
  }

  private async clearForEntry(path: string): Promise<void> {
    if (!this.options.force) return;
    try {
      const existing = await lstat(path);
      if (existing.isDirectory()) await rm(path, { recursive: true, force: true });
      else await unlink(path);
    } catch (error) {
      if (!isErrno(error, 'ENOENT')) throw error;
    }
  }

  private async restoreSymlink(rel: string, entry: TreeEntry): Promise<void> {
    await this.ensureParent(rel);
    const path = this.path(rel);
    await this.clearForEntry(path);
    await symlink(entry.target ?? '', path);
    await applyMeta(path, entry, true);
    this.result.symlinks++;
  }

  /** Decided in walk order: the first file of a hard-link group is created, the others link to it. */
  private planHardlink(job: FileJob): void {
    const key = job.entry.hardlink;
    if (!key) return;
    const first = this.hardlinks.get(key);
    if (first) {
      job.linkTo = first;
      return;
    }
    const created = Promise.withResolvers<string>();
    created.promise.catch(() => undefined);
    job.created = created;
    this.hardlinks.set(key, created.promise);
  }

  private async startFile(job: FileJob): Promise<FileHandle | 'linked'> {
    const path = this.path(job.rel);
    try {
      await this.clearForEntry(path);
      if (job.linkTo) {
        // Link once the first file exists (its writer may still be running: it is the same inode).
        await link(await job.linkTo, path);
        return 'linked';
      }
      const handle = await open(path, fsConstants.O_WRONLY | fsConstants.O_CREAT | fsConstants.O_EXCL | fsConstants.O_NOFOLLOW, 0o600);
      job.created?.resolve(path);
      return handle;
    } catch (error) {
      job.created?.reject(error);
      throw error;
    }
  }

  private async ensureParent(rel: string): Promise<void> {
    const slash = rel.lastIndexOf('/');
    await this.ensureDir(slash < 0 ? '' : rel.slice(0, slash));
  }

  private report(current: string): void {
    const now = Date.now();
    if (now - this.lastReport < 200) return;
    this.lastReport = now;
    this.options.progress.progress({ phase: 'restore', files: this.result.files, bytes: this.result.bytes, current, ...this.totals });
  }
}

function isZero(data: Buffer): boolean {
  for (let at = 0; at < data.length; at += ZERO.length) {
    const end = Math.min(data.length, at + ZERO.length);
    if (data.compare(ZERO, 0, end - at, at, end) !== 0) return false;
  }
  return true;
}

function unsafeName(name: string, seen: Set<string>): string | undefined {
  if (name === '' || name === '.' || name === '..') return `the path component ${JSON.stringify(name)}`;
  if (name.includes('/') || name.includes('\\') || name.includes('\0')) return `a name with a separator or NUL: ${JSON.stringify(name)}`;
  if (seen.has(name)) return `the name ${JSON.stringify(name)} twice in one directory`;
  return undefined;
}

async function writeAll(handle: FileHandle, data: Buffer, position: number): Promise<void> {
  let done = 0;
  while (done < data.length) {
    const { bytesWritten } = await handle.write(data, done, data.length - done, position + done);
    done += bytesWritten;
  }
}

/**
 * Size, owner, mode, mtime. Each is a system call on a latency-bound pool, so
 * the ones that would change nothing are skipped: truncate only when the file
 * ends in a hole, chown only when the owner differs from ours.
 */
async function finishFile(handle: FileHandle, size: number, written: number, entry: TreeEntry): Promise<void> {
  if (entry.size !== undefined && entry.size !== size) throw new DamagedError(`restored ${size} bytes, the snapshot records ${entry.size}`);
  if (written < size) await handle.truncate(size);
  if (isRoot && (entry.uid !== ourUid || entry.gid !== ourGid)) await handle.chown(entry.uid, entry.gid);
  await handle.chmod(entry.mode);
  const mtime = nsToSeconds(entry.mtimeNs);
  await handle.utimes(mtime, mtime);
}

async function applyMeta(path: string, entry: TreeEntry, isLink: boolean): Promise<void> {
  const mtime = nsToSeconds(entry.mtimeNs);
  if (isLink) {
    if (isRoot) await lchown(path, entry.uid, entry.gid);
    await lutimes(path, mtime, mtime);
    return;
  }
  if (isRoot) await chown(path, entry.uid, entry.gid);
  await chmod(path, entry.mode);
  await utimes(path, mtime, mtime);
}

function nsToSeconds(ns: string): number {
  const value = BigInt(ns);
  return Number(value / 1_000_000_000n) + Number(value % 1_000_000_000n) / 1e9;
}

function isStorageFailure(error: unknown): boolean {
  return error instanceof CairnError && (error.code === 'Cairn.Storage' || error.code === 'Cairn.Cancelled');
}
