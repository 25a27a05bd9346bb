import { randomBytes } from 'node:crypto';
import { resolve } from 'node:path';
import type { Compression } from '../core/config.ts';
import { readDamage, withoutMarkedLocations } from '../core/damage.ts';
import { PieceReader } from '../core/piece-reader.ts';
import { GcGuard } from '../core/gc-backup-guard.ts';
import type { Repository, Who } from '../core/repository.ts';
import type { Snapshot, SnapshotSummary } from '../core/snapshot.ts';
import { CairnError } from '../core/errors.ts';
import { Archiver } from '../files/archiver.ts';
import { scan, type ScanTotals } from '../files/scanner.ts';
import { Chunker } from '../pipeline/chunker.ts';
import { PackWriter } from '../pipeline/pack-writer.ts';
import type { ProgressListener } from '../progress/progress.ts';
import { TOOL } from '../core/version.ts';
import { DEFAULT_LEASE_MS, type Lease } from '../core/locks.ts';
import type { Engine } from '../engines/engine.ts';
import { TreeSink } from '../engines/sink.ts';
import { makeEngineTemp } from '../process/engine-temp.ts';
import { runHook } from '../process/run.ts';
import { selectSnapshot } from './snapshot-selector.ts';
import type { WalkLimitOptions } from '../files/walk-limits.ts';
import { failureDetails, record, underLock, operationContext } from './operation.ts';

export interface BackupOptions extends WalkLimitOptions {
  paths: string[];
  excludes: string[];
  tags: string[];
  who: Who;
  compression?: Compression | undefined;
  concurrency: number;
  /** A snapshot id to compare against; by default the latest one of the same host and paths. */
  parent?: string | undefined;
  progress: ProgressListener;
  signal?: AbortSignal | undefined;
  leaseMs?: number | undefined;
  lockWaitMs?: number | undefined;
  /** A database engine instead of plain files; `paths` then stays empty. */
  engine?: { engine: Engine<unknown>; options: unknown; source: string } | undefined;
  /** Shell lines run before and after the backup; the post hook runs whatever happened. */
  preHook?: string | undefined;
  postHook?: string | undefined;
  /** Cold copy: stop the service before reading its files, start it again afterwards, always. */
  stopCmd?: string | undefined;
  startCmd?: string | undefined;
  env?: NodeJS.ProcessEnv | undefined;
  tempDir?: string | undefined;
  /** The orchestration plan this backup runs for (recorded in the manifest; retention and restore planning select by it). */
  plan?: string | undefined;
}

/**
 * A backup of files: pieces and packs first, then index files, then the
 * manifest. Until the manifest is written nothing lists the snapshot, so a
 * crash at any point leaves no partial snapshot (only unreferenced packs that
 * prune removes, and that the next backup may reuse through their index).
 */
export async function backup(repo: Repository, options: BackupOptions): Promise<Snapshot> {
  const ctx = operationContext(repo, options);
  return underLock(ctx, 'backup', false, async (lease) => {
    const started = Date.now();
    const paths = options.engine ? [options.engine.source] : options.paths.map((p) => resolve(p));
    await record(ctx, 'backup.started', { paths, tags: options.tags, engine: options.engine?.engine.name ?? 'files' });
    try {
      const snapshot = await backupLocked(repo, options, paths, lease);
      await record(ctx, 'backup.committed', { snapshotId: snapshot.id, paths, ...snapshot.summary });
      return snapshot;
    } catch (error) {
      await record(ctx, 'backup.failed', { paths, durationMs: Date.now() - started, ...failureDetails(error) });
      throw error;
    }
  });
}

/** What `backup --dry-run` found: the summary the backup would record, and the snapshot it compared against. */
export interface BackupDryRun {
  paths: string[];
  /** The parent snapshot's id: files unchanged since it would not be read. */
  parent?: string | undefined;
  summary: SnapshotSummary;
}

/**
 * `backup --dry-run`: the files backup's own walk, reading and cutting every file it would read
 * and building the packs it would store (so the counts are the backup's), against a pack writer
 * that counts instead of uploading. It reads the repository (keys, index, damage markers, the
 * parent's trees) and writes nothing to it: no lock (so it also runs on a locked repository, or
 * one this host may only read), no history event, no pack, index or manifest.
 */
export async function backupDryRun(repo: Repository, options: BackupOptions): Promise<BackupDryRun> {
  refuseInDryRun(options);
  const paths = options.paths.map((p) => resolve(p));
  const started = Date.now();
  const { archiver, writer, parent } = await archive(repo, options, paths, true);
  return { paths, ...(parent ? { parent: parent.id } : {}), summary: summaryOf(archiver, writer, Date.now() - started) };
}

/** What a dry run cannot do honestly: engines and commands act outside the repository. */
function refuseInDryRun(options: BackupOptions): void {
  if (options.engine)
    throw new CairnError(
      'Cairn.Usage',
      `backup --dry-run previews files backups only: the ${options.engine.engine.name} engine learns what it would store only by running its dump against the server`,
      { hint: 'drop --dry-run to back the database up, or preview a files backup (cairn backup PATH --dry-run)' },
    );
  const commands = [
    ['--pre-hook', options.preHook],
    ['--post-hook', options.postHook],
    ['--stop-cmd', options.stopCmd],
    ['--start-cmd', options.startCmd],
  ].filter(([, value]) => value);
  if (commands.length > 0)
    throw new CairnError(
      'Cairn.Usage',
      `backup --dry-run runs no commands: ${commands.map(([flag]) => flag).join(', ')} would act outside the repository (a hook may change what is backed up, a stop command stops a service)`,
      { hint: 'drop them for the dry run; if a hook produces the files to back up, run it yourself first' },
    );
}

async function backupLocked(repo: Repository, options: BackupOptions, paths: string[], lease: Lease): Promise<Snapshot> {
  const started = new Date();
  const { tree, engineMetadata, archiver, writer, parent, gcGuard, reader } = await archive(repo, options, paths, false);
  // A GC generation that appeared meanwhile and names a piece this snapshot reuses fails the backup before it commits.
  await gcGuard.beforeCommit(tree, reader);
  // Commit only with a live lease, asked of the storage: a stalled process whose lock expired (or
  // was taken over) may have had its pieces pruned.
  await lease.confirmHeld((options.leaseMs ?? DEFAULT_LEASE_MS) / 4);
  const finished = new Date();
  const snapshot: Snapshot = {
    version: 1,
    id: randomBytes(32).toString('hex'),
    time: started.toISOString(),
    endTime: finished.toISOString(),
    host: options.who.host,
    user: options.who.user,
    paths,
    tags: [...new Set(options.tags)].sort(),
    engine: options.engine?.engine.name ?? 'files',
    engineMetadata,
    ...(options.plan ? { plan: options.plan } : {}),
    tree,
    ...(archiver.root ? { root: archiver.root } : {}),
    ...(parent ? { parent: parent.id } : {}),
    // Some files could not be read: committed, but not a good snapshot (docs/repository-format.md, "Partial snapshots").
    ...(archiver.counts.errors > 0 ? { partial: true as const } : {}),
    summary: summaryOf(archiver, writer, finished.getTime() - started.getTime()),
    tool: TOOL,
  };
  await repo.saveSnapshot(snapshot);
  return snapshot;
}

/** Everything a backup stores but its manifest, stored (or, for a dry run, only counted). */
async function archive(repo: Repository, options: BackupOptions, paths: string[], dryRun: boolean) {
  // Damage markers (core/damage.ts): a location a verify found damaged is never reused; its pieces are read and uploaded again.
  const { index } = withoutMarkedLocations(
    await repo.loadIndex(options.concurrency * 2, (message) => options.progress.warn(message)),
    await readDamage(repo, (message) => options.progress.warn(message)),
  );
  // Two-phase GC (core/gc-backup-guard.ts): pieces a GC generation names are uploaded again, never reused.
  const gcGuard = await GcGuard.begin(repo, index, (message) => options.progress.warn(message));
  const reader = new PieceReader(repo, index);
  const parent = options.parent
    ? await selectSnapshot(repo, options.parent)
    : await selectSnapshot(repo, 'latest', (s) => s.host === options.who.host && sameList(s.paths, paths)).catch(() => undefined);
  const writer = new PackWriter(repo, index, {
    compression: options.compression ?? repo.config.compression,
    concurrency: options.concurrency,
    dryRun,
  });
  // Counting costs a metadata pass of its own (an unchanged re-backup's lstat and readdir twice over):
  // only when someone will see the totals, and only when the parent snapshot of the same paths
  // cannot stand in for them.
  const estimate = options.progress.wantsTotals && !options.engine ? parentTotals(parent, paths) : undefined;
  const totals: ScanTotals = estimate ?? { files: 0, bytes: 0, done: false };
  const scanning =
    options.progress.wantsTotals && !options.engine && !estimate
      ? scanAfter(options.progress.totalsAfterMs ?? 0, (stop) =>
          scan(paths, options.excludes, totals, {
            signal: options.signal ? AbortSignal.any([options.signal, stop]) : stop,
            oneFileSystem: options.oneFileSystem,
            excludeIfPresent: options.excludeIfPresent,
          }),
        )
      : undefined;
  const archiver = new Archiver(repo, writer, index, reader, {
    totals,
    paths,
    excludes: options.excludes,
    oneFileSystem: options.oneFileSystem,
    excludeIfPresent: options.excludeIfPresent,
    chunking: { kind: 'cdc', chunker: new Chunker(repo.config.chunker, repo.chunkerSeed()) },
    concurrency: options.concurrency,
    progress: options.progress,
    parentTree: parent?.tree,
    signal: options.signal,
  });
  let produced: Awaited<ReturnType<typeof produce>>;
  try {
    produced = await withHooks(options, 'backup', () => produce(archiver, options));
    await writer.flush();
  } catch (error) {
    await scanning?.finish(true);
    throw error;
  }
  await scanning?.finish(false);
  const { tree, engineMetadata } = produced;
  // A scan not started (the backup ended first) or not finished: the walk has counted everything by now.
  if (!totals.done) Object.assign(totals, { files: archiver.counts.totalFiles, bytes: archiver.counts.totalBytes, done: true });
  options.signal?.throwIfAborted();
  archiver.progress.report('', true);
  return { tree, engineMetadata, archiver, writer, parent, gcGuard, reader };
}

function summaryOf(archiver: Archiver, writer: PackWriter, durationMs: number): SnapshotSummary {
  return {
    ...archiver.counts,
    piecesAdded: writer.stats.piecesAdded,
    rawBytesAdded: writer.stats.rawBytesAdded,
    bytesAdded: writer.stats.bytesAdded,
    durationMs,
  };
}

/** The engine's output (or the walked paths) as a tree, and what the engine recorded. */
async function produce(archiver: Archiver, options: BackupOptions): Promise<{ tree: string; engineMetadata: Record<string, unknown> }> {
  const chosen = options.engine;
  if (!chosen) {
    try {
      if (options.stopCmd)
        await runHook('stop', options.stopCmd, { env: options.env, onStderr: (l) => options.progress.warn(`stop command: ${l}`) });
      return { tree: await archiver.run(), engineMetadata: {} };
    } finally {
      // The service comes back whatever happened to the copy (even a stop command that half-failed).
      if (options.startCmd)
        await runHook('start', options.startCmd, { env: options.env, onStderr: (l) => options.progress.warn(`start command: ${l}`) });
    }
  }
  const temp = await makeEngineTemp('engine', options.tempDir, (message) => options.progress.warn(message));
  try {
    const ctx = { progress: options.progress, signal: options.signal, env: options.env ?? process.env, tempDir: temp.path };
    await chosen.engine.check(chosen.options, ctx);
    const sink = new TreeSink(archiver);
    const engineMetadata = await chosen.engine.backup(chosen.options, sink, ctx);
    const c = archiver.counts;
    c.filesNew += sink.counts.files;
    c.totalFiles += sink.counts.files;
    c.bytesNew += sink.counts.bytes;
    c.totalBytes += sink.counts.bytes;
    return { tree: await sink.finish(), engineMetadata };
  } finally {
    await temp.remove();
  }
}

/** Runs the pre hook, then the work, then the post hook whatever happened; both are logged. */
export async function withHooks<T>(
  options: Pick<BackupOptions, 'preHook' | 'postHook' | 'env' | 'progress'>,
  what: string,
  work: () => Promise<T>,
): Promise<T> {
  const env = { ...(options.env ?? process.env), CAIRN_OPERATION: what };
  if (options.preHook) await runHook('pre-hook', options.preHook, { env, onStderr: (l) => options.progress.warn(`pre-hook: ${l}`) });
  let failed = false;
  try {
    return await work();
  } catch (error) {
    failed = true;
    throw error;
  } finally {
    if (options.postHook) {
      await runHook('post-hook', options.postHook, {
        env: { ...env, CAIRN_RESULT: failed ? 'failure' : 'success' },
        onStderr: (l) => options.progress.warn(`post-hook: ${l}`),
      }).catch((error: unknown) => {
        if (!failed) throw error;
        options.progress.warn(`the post-hook failed too: ${error instanceof Error ? error.message : String(error)}`);
      });
    }
  }
}

/**
 * Starts `start` after `ms` (at once for 0). `finish` cancels a scan not started yet and waits for
 * one running, or, when the backup failed, stops it (`start` is given the signal). JSON progress
 * shows totals only from its second event, 10 s on: a scan started a little later has time enough,
 * and a backup done before then makes no second metadata pass.
 */
function scanAfter(ms: number, start: (signal: AbortSignal) => Promise<void>): { finish: (failed: boolean) => Promise<void> } {
  const stop = new AbortController();
  let running: Promise<void> | undefined;
  const begin = (): void => {
    running = start(stop.signal);
  };
  const timer = ms > 0 ? setTimeout(begin, ms) : undefined;
  if (!timer) begin();
  return {
    finish: async (failed) => {
      clearTimeout(timer);
      if (failed) stop.abort();
      await running;
    },
  };
}

/**
 * The parent snapshot's files and bytes as the totals of a backup of the same paths: what a
 * re-backup usually finds again, known before the walk starts, at no cost. An estimate: the
 * progress drops it once the walk counts past it (WalkProgress).
 */
function parentTotals(parent: Snapshot | undefined, paths: string[]): ScanTotals | undefined {
  if (!parent || parent.engine !== 'files' || !sameList(parent.paths, paths)) return undefined;
  return { files: parent.summary.totalFiles, bytes: parent.summary.totalBytes, done: true, estimated: true };
}

function sameList(a: string[], b: string[]): boolean {
  return a.length === b.length && [...a].sort().every((v, i) => v === [...b].sort()[i]);
}
