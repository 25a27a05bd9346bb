import { constants as fsConstants, type BigIntStats } from 'node:fs';
import { closeSync, fstatSync, lstatSync, openSync, readSync, readdirSync } from 'node:fs';
import { lstat, open, readlink } from 'node:fs/promises';
import { basename, resolve } from 'node:path';
import type { Readable } from 'node:stream';
import { setImmediate as nextTurn } from 'node:timers/promises';
import { CairnError, errorMessage } from '../core/errors.ts';
import { mapLimit } from '../core/concurrency.ts';
import type { PieceIndex } from '../core/piece-index.ts';
import type { PieceReader } from '../core/piece-reader.ts';
import type { Repository } from '../core/repository.ts';
import type { RootMeta, SnapshotSummary } from '../core/snapshot.ts';
import {
  compareEntries,
  compareNames,
  decodeTree,
  nameFields,
  nameProblem,
  targetFields,
  type Tree,
  type TreeEntry,
} from '../core/tree.ts';
import { chunkStream, type Chunking } from '../pipeline/chunker.ts';
import type { PackWriter } from '../pipeline/pack-writer.ts';
import { SnapshotWriter, contentOf, contentRoots, type FileContent, type TreeStore } from '../pipeline/snapshot-writer.ts';
import type { ProgressListener } from '../progress/progress.ts';
import { checkPathLength, PROC_FD, sameFile, SourceDirectories, type OpenedDirectory } from './source-descriptors.ts';
import { byName, childPath, childRel, entryMeta } from './walk-entries.ts';
import { WalkLimits, type WalkLimitOptions } from './walk-limits.ts';
import { WalkProgress } from './walk-progress.ts';
import { ParentFiles } from './parent-files.ts';
import { PathMatcher } from './glob.ts';
import type { ScanTotals } from './scanner.ts';

/** Files below this size are read synchronously into one reused buffer. */
const SMALL_FILE = 256 << 10;
const IS_ROOT = process.getuid?.() === 0;
/** How long the walk may keep the event loop from turning (letLoopTurn). */
const TURN_MS = 20;

export interface ArchiveOptions extends WalkLimitOptions {
  paths: string[];
  excludes: string[];
  chunking: Chunking;
  concurrency: number;
  progress: ProgressListener;
  /** The previous snapshot's root tree, for change detection. */
  parentTree?: string | undefined;
  signal?: AbortSignal | undefined;
  /** Totals counted beside the backup, for the progress line's ETA. */
  totals?: ScanTotals | undefined;
  inlinePieces?: number;
  listPieces?: number;
}

export type ArchiveCounts = Omit<SnapshotSummary, 'piecesAdded' | 'rawBytesAdded' | 'bytesAdded' | 'durationMs'>;

/**
 * Walks the paths and stores their trees: unchanged files (same size, mtime,
 * ctime, inode and device as in the parent snapshot) are not read at all;
 * other files are cut into pieces and only pieces the repository lacks are
 * uploaded. Returns the root tree id.
 */
export class Archiver implements TreeStore {
  private readonly dirs = new SourceDirectories();
  readonly counts: ArchiveCounts = {
    filesNew: 0,
    filesChanged: 0,
    filesUnchanged: 0,
    dirs: 0,
    bytesNew: 0,
    bytesChanged: 0,
    bytesUnchanged: 0,
    totalFiles: 0,
    totalBytes: 0,
    bytesRead: 0,
    errors: 0,
  };
  /** The metadata of the one directory backed up, for the manifest; undefined for several paths or one file. */
  root: RootMeta | undefined;
  /** Progress events (backup.ts reports the last one, after the last pack is stored). */
  readonly progress: WalkProgress;
  /** The snapshot-writing core this walk feeds. */
  private readonly snapshotWriter: SnapshotWriter;
  private readonly index: PieceIndex;
  private readonly reader: PieceReader;
  private readonly options: ArchiveOptions;
  private readonly excludes: PathMatcher;
  private readonly limits: WalkLimits;
  private readonly smallBuffer = Buffer.allocUnsafe(SMALL_FILE + 1);

  private readonly hardlinks = new Map<string, FileContent>();
  private readonly parentFiles: ParentFiles; // the parent's entries by path, for engine streams

  constructor(repo: Repository, writer: PackWriter, index: PieceIndex, reader: PieceReader, options: ArchiveOptions) {
    this.index = index;
    this.reader = reader;
    this.options = options;
    // An absolute --exclude under a path backed up is taken relative to it, as the snapshot will hold it.
    this.excludes = new PathMatcher(
      options.excludes,
      options.paths.map((p) => resolve(p)),
    );
    this.limits = new WalkLimits(options);
    this.parentFiles = new ParentFiles(options.parentTree, (id) => this.loadTree(id));
    this.snapshotWriter = new SnapshotWriter(repo, writer, {
      chunking: options.chunking,
      signal: options.signal,
      inlinePieces: options.inlinePieces,
      listPieces: options.listPieces,
      pages: repo.pageFiles ? { index, reader } : undefined,
      onPiece: (rel, bytes) => {
        this.counts.bytesRead += bytes;
        this.progress.report(rel);
      },
    });
    this.progress = new WalkProgress(this.counts, writer, options.progress, options.totals);
  }

  async run(): Promise<string> {
    if (IS_ROOT && !PROC_FD)
      this.options.progress.warn(
        '/proc is not mounted: the walk looks entries up by path, so a user who can swap a directory being backed up for a symlink could have another tree read in its place; mount /proc for the backup',
      );
    const paths = this.options.paths.map((p) => resolve(p));
    const parent = this.options.parentTree ? await this.loadTree(this.options.parentTree) : undefined;
    const first = paths[0];
    if (paths.length === 1 && first !== undefined) {
      const stats = await this.statSource(first);
      // One directory: the snapshot root is its contents, so a restore lands them directly in the target,
      // and the directory's own metadata goes into the manifest (`root`) for the restore to give the target.
      if (stats.isDirectory()) {
        const { mode, uid, gid, mtimeNs } = entryMeta(stats);
        this.root = { mode, uid, gid, mtimeNs };
        return this.archiveDir(Buffer.from(first), '', parent, stats);
      }
    }
    // Every name is checked and every path found before any is read: a refused argument list uploads nothing.
    const seen = new Set<string>();
    for (const path of paths) {
      const name = basename(path);
      const problem = nameProblem(Buffer.from(name));
      if (problem)
        throw new CairnError('Cairn.Usage', `cannot back up ${path} beside other paths: its name is ${problem}`, {
          hint: 'back it up alone (its contents become the snapshot root)',
        });
      if (seen.has(name))
        throw new CairnError('Cairn.Usage', `two backup paths share the name ${JSON.stringify(name)}`, {
          hint: 'back them up in separate snapshots, or back up their common parent',
        });
      seen.add(name);
    }
    const sources: Array<{ path: string; name: string; stats: BigIntStats }> = [];
    for (const path of paths) sources.push({ path, name: basename(path), stats: await this.statSource(path) });
    const entries: TreeEntry[] = [];
    for (const { path, name, stats } of sources) {
      const entry = await this.archiveEntry(Buffer.from(path), Buffer.from(name), name, stats, parent ? byName(parent) : undefined);
      if (entry) entries.push(entry);
    }
    entries.sort(compareEntries);
    return this.snapshotWriter.storeTree({ version: 1, entries });
  }

  private async statSource(path: string): Promise<BigIntStats> {
    try {
      return await lstat(path, { bigint: true });
    } catch (error) {
      throw new CairnError('Cairn.Usage', `cannot back up ${path}: ${errorMessage(error)}`, {
        hint: 'check that the path exists and is readable',
        cause: error,
      });
    }
  }

  /** One directory, read through its descriptor (source-descriptors.ts). */
  private async archiveDir(dir: Buffer, rel: string, parent: Tree | undefined, listed: BigIntStats): Promise<string> {
    this.options.signal?.throwIfAborted();
    this.counts.dirs++;
    let names: Buffer[];
    let opened: OpenedDirectory | undefined;
    try {
      opened = this.dirs.openListed(dir, listed);
      // Names as the bytes the filesystem holds: not every name is UTF-8.
      names = readdirSync(opened.base, { encoding: 'buffer' }).sort(compareNames);
    } catch (error) {
      // Reported while the descriptor still maps to the directory's path (the message names it).
      this.fail(rel || '.', error);
      if (opened) this.dirs.close(opened.fd);
      return this.snapshotWriter.storeTree({ version: 1, entries: [] });
    }
    try {
      return await this.archiveEntries(opened, names, rel, parent);
    } finally {
      this.dirs.close(opened.fd);
    }
  }

  private async archiveEntries(opened: OpenedDirectory, names: Buffer[], rel: string, parent: Tree | undefined): Promise<string> {
    const dir = opened.base;
    const parentEntries = parent ? byName(parent) : undefined;
    const device = this.limits.deviceOf(opened.listed);
    const mountPoints = new Set<number>();
    const slots = new Array<TreeEntry | undefined>(names.length);
    const small: number[] = [];
    const large: number[] = [];
    const dirs: number[] = [];
    const stats = names.map((name, i) => {
      const relPath = childRel(rel, name);
      if (this.excludes.matches(relPath)) return undefined;
      const problem = nameProblem(name);
      if (problem) {
        this.fail(relPath, new Error(`the filesystem returned ${problem}`));
        return undefined;
      }
      try {
        // Synchronous: from the inode cache this is microseconds, a promise round trip costs far more.
        checkPathLength(opened.bytes + 1 + name.length);
        const child = childPath(dir, name);
        const st = lstatSync(child, { bigint: true });
        const marker = this.limits.markerIn(child, st);
        if (marker !== undefined) {
          this.options.progress.warn(`left out ${relPath}: it holds ${marker} (--exclude-if-present)`, { path: relPath });
          return undefined;
        }
        if (this.limits.isMountPoint(st, device)) mountPoints.add(i);
        (st.isDirectory() ? dirs : st.isFile() && st.size >= SMALL_FILE ? large : small).push(i);
        return st;
      } catch (error) {
        this.fail(relPath, error);
        return undefined;
      }
    });
    const entry = async (i: number): Promise<void> => {
      const name = names[i] as Buffer;
      if (mountPoints.has(i)) {
        // --one-file-system: the mount point, not what is mounted on it.
        const empty = await this.snapshotWriter.storeTree({ version: 1, entries: [] });
        slots[i] = { ...nameFields(name), ...entryMeta(stats[i] as BigIntStats), type: 'dir', subtree: empty };
        return;
      }
      slots[i] = await this.archiveEntry(childPath(dir, name), name, childRel(rel, name), stats[i] as BigIntStats, parentEntries);
      await this.letLoopTurn();
    };
    // Small files one after another with synchronous reads into one buffer; large
    // files in parallel (they share the pack writer); directories depth first.
    for (const i of small) await entry(i);
    await mapLimit(large, this.options.concurrency, entry);
    for (const i of dirs) await entry(i);
    return this.snapshotWriter.storeTree({ version: 1, entries: slots.filter((e): e is TreeEntry => e !== undefined) });
  }

  private async archiveEntry(
    path: Buffer,
    name: Buffer,
    rel: string,
    st: BigIntStats,
    parent: Map<string, TreeEntry> | undefined,
  ): Promise<TreeEntry | undefined> {
    const base = { ...nameFields(name), ...entryMeta(st) };
    const previous = parent?.get(name.toString('latin1'));
    try {
      if (st.isDirectory()) {
        const parentTree =
          previous?.type === 'dir' && previous.subtree ? await this.loadTree(previous.subtree).catch(() => undefined) : undefined;
        return { ...base, type: 'dir', subtree: await this.archiveDir(path, rel, parentTree, st) };
      }
      if (st.isSymbolicLink()) {
        return { ...base, type: 'symlink', ...targetFields(await readlink(path, { encoding: 'buffer' })) };
      }
      if (st.isFile()) return { ...base, type: 'file', ...(await this.archiveFile(path, rel, st, previous)) };
      this.options.progress.warn(`skipped ${rel}: sockets, FIFOs and device files are not backed up`, { path: rel });
      return undefined;
    } catch (error) {
      // A file we cannot read is reported and skipped; anything else (storage, damage, cancel) stops the backup.
      if (!isFileSystemError(error)) throw error;
      this.fail(rel, error);
      return undefined;
    }
  }

  private async archiveFile(
    path: Buffer,
    rel: string,
    st: BigIntStats,
    previous: TreeEntry | undefined,
  ): Promise<FileContent & Pick<TreeEntry, 'hardlink'>> {
    const size = Number(st.size);
    this.counts.totalFiles++;
    this.counts.totalBytes += size;
    const hardlink = st.nlink > 1n ? `${st.dev}:${st.ino}` : undefined;
    const linked = hardlink ? this.hardlinks.get(hardlink) : undefined;
    if (linked) {
      this.counts.filesUnchanged++;
      this.counts.bytesUnchanged += size;
      this.progress.report(rel);
      return { ...linked, hardlink };
    }
    let result: FileContent;
    if (previous && this.unchanged(previous, st)) {
      this.counts.filesUnchanged++;
      this.counts.bytesUnchanged += size;
      result = { ...contentOf(previous), size };
    } else {
      if (previous?.type === 'file') {
        this.counts.filesChanged++;
        this.counts.bytesChanged += size;
      } else {
        this.counts.filesNew++;
        this.counts.bytesNew += size;
      }
      result = await this.readContent(path, rel, st, previous?.type === 'file' ? previous : undefined);
    }
    if (hardlink) this.hardlinks.set(hardlink, result);
    this.progress.report(rel);
    return hardlink ? { ...result, hardlink } : result;
  }

  private unchanged(previous: TreeEntry, st: BigIntStats): boolean {
    if (previous.type !== 'file' || previous.size !== Number(st.size)) return false;
    if (previous.mtimeNs !== st.mtimeNs.toString() || previous.ctimeNs !== st.ctimeNs.toString()) return false;
    if (previous.inode !== st.ino.toString() || previous.dev !== st.dev.toString()) return false;
    // Reuse only what the repository still holds (a damaged or pruned piece is read again).
    return contentRoots(previous).every((id) => this.index.has(Buffer.from(id, 'hex')));
  }

  private async readContent(path: Buffer, rel: string, st: BigIntStats, previous: TreeEntry | undefined): Promise<FileContent> {
    // O_NONBLOCK: a FIFO swapped in for the file since it was listed would block open() for good (no effect on a
    // regular file's reads). The opened file must be the one listed (sameFile).
    const flags = fsConstants.O_RDONLY | fsConstants.O_NOFOLLOW | fsConstants.O_NONBLOCK | (IS_ROOT ? fsConstants.O_NOATIME : 0);
    if (st.size < BigInt(SMALL_FILE)) {
      const fd = openSync(path, flags);
      try {
        sameFile(fstatSync(fd, { bigint: true }), st);
        const read = async (buffer: Buffer): Promise<number> => readSync(fd, buffer, 0, buffer.length, null);
        const result = await this.snapshotWriter.storeContent(chunkStream(read, this.options.chunking, undefined, this.smallBuffer), rel);
        this.checkUnchangedWhileRead(fstatSync(fd, { bigint: true }), st, rel);
        return result;
      } finally {
        closeSync(fd);
      }
    }
    const handle = await open(path, flags);
    try {
      sameFile(await handle.stat({ bigint: true }), st);
      const read = async (buffer: Buffer): Promise<number> => (await handle.read(buffer, 0, buffer.length, null)).bytesRead;
      const result = await this.snapshotWriter.storeRead(read, rel, previous);
      this.checkUnchangedWhileRead(await handle.stat({ bigint: true }), st, rel);
      return result;
    } finally {
      await handle.close();
    }
  }

  private checkUnchangedWhileRead(after: BigIntStats, before: BigIntStats, rel: string): void {
    if (after.size !== before.size || after.mtimeNs !== before.mtimeNs)
      this.options.progress.warn(`${rel} changed while it was read; the snapshot holds the bytes as read`, { path: rel });
  }

  /** An engine's sink writes through the same core and counts (TreeStore); the parent's entry lets a page file store changed pages only. */
  async storeStream(data: Readable | AsyncIterable<Buffer>, rel: string): Promise<FileContent> {
    return this.snapshotWriter.storeStream(data, rel, await this.parentFiles.entry(rel));
  }

  storeTree(tree: Tree): Promise<string> {
    return this.snapshotWriter.storeTree(tree);
  }

  private async loadTree(id: string): Promise<Tree> {
    return decodeTree(await this.reader.read(Buffer.from(id, 'hex')), id);
  }

  private turnAt = 0;

  /**
   * Small files are read synchronously, and a walk of many may not turn the event loop for
   * seconds: finished uploads would wait to be counted (`added 0 B`) and to free their buffers,
   * the scan beside the backup would not count (no total), nor a signal be heard. So every
   * TURN_MS the walk lets the loop turn once.
   */
  private async letLoopTurn(): Promise<void> {
    const now = performance.now();
    if (now < this.turnAt) return;
    await nextTurn();
    this.turnAt = performance.now() + TURN_MS;
  }

  private fail(rel: string, error: unknown): void {
    this.counts.errors++;
    // A system error names the path it was given: a directory's descriptor, shown as the directory.
    const message = this.dirs.shown(errorMessage(error));
    this.options.progress.warn(`cannot back up ${rel}: ${message}`, { path: rel, error: message });
  }
}

function isFileSystemError(error: unknown): boolean {
  return error instanceof Error && typeof (error as NodeJS.ErrnoException).syscall === 'string' && !(error instanceof CairnError);
}
