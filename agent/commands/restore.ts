import { readdir } from 'node:fs/promises';
import { resolve } from 'node:path';
import type { EngineSpec } from '../core/engine-options/spec.ts';
import { CairnError } from '../core/errors.ts';
import { engineRegistry, type EngineRegistry } from '../engines/registry.ts';
import { PARTIAL_SUFFIX } from '../engines/engine.ts';
import { placeLast, stoppedRestoreIn } from '../engines/engine-helpers.ts';
import { RepositorySource } from '../engines/source.ts';
import { PieceReader } from '../core/piece-reader.ts';
import { FRAME_THREADS, FrameThreads } from '../pipeline/frame-threads.ts';
import type { Repository, Who } from '../core/repository.ts';
import { failureDetails, record, underLock, operationContext } from './operation.ts';
import type { Snapshot } from '../core/snapshot.ts';
import { Restorer, fetchAheadFor, prepareTarget, readAheadFor, type RestoreResult } from '../files/restorer.ts';
import { unmatchedIncludes } from '../files/unmatched-includes.ts';
import type { ProgressListener } from '../progress/progress.ts';
import { LogArchive } from '../core/log-archive.ts';
import type { RecoveryTarget, ReplayPlan } from '../core/log-chain.ts';
import { shortId } from '../core/snapshot.ts';
import { replayerFor } from '../pitr/replayers.ts';
import { makeEngineTemp } from '../process/engine-temp.ts';
import type { ReplayResult } from '../pitr/replay.ts';
import { planPointInTime } from '../core/pitr-planning.ts';
import { waitForSnapshot, type SnapshotFilter } from './snapshot-selector.ts';

export interface RestoreCommandOptions {
  snapshot: string;
  /** What `latest` is narrowed to (--host, --path, --tag); an id is taken as it is. */
  latestFilter?: SnapshotFilter | undefined;
  /** Directory to restore into: required for files and physical engines. */
  target?: string | undefined;
  /** Database to restore into (logical engines), instead of the one backed up. */
  targetDatabase?: string | undefined;
  /**
   * Connection and other options for the snapshot's engine, or how to read
   * them for that engine's spec (the CLI: the engine's own flags, once the
   * snapshot names the engine).
   */
  engineOptions?: Record<string, unknown> | ((spec: EngineSpec) => Record<string, unknown>) | undefined;
  /** The engines a snapshot's engine is looked up in (default: the shipped ones). */
  engines?: EngineRegistry | undefined;
  /** Keep looking for a snapshot this long before giving up (bootstrapping a replica while the first backup runs). */
  waitForSnapshotMs?: number | undefined;
  env?: NodeJS.ProcessEnv | undefined;
  /** Where engines that need local files (pg_restore --jobs, log replay) write them; default: the system temp dir. */
  tempDir?: string | undefined;
  includes: string[];
  force: boolean;
  ignoreErrors: boolean;
  concurrency: number;
  progress: ProgressListener;
  signal?: AbortSignal | undefined;
  who: Who;
  leaseMs?: number | undefined;
  lockWaitMs?: number | undefined;
  /** `--no-lock`: no lease, no history record (a read-only repository: OperationOptions.noLock). */
  noLock?: boolean | undefined;
  /** Point-in-time recovery (docs/pitr.md): restore the base the target needs, then replay the archived log to it. */
  pointInTime?: PointInTimeRestore | undefined;
}

export interface PointInTimeRestore {
  target: RecoveryTarget;
  /** The log stream (needed only when the repository holds several of the engine's). */
  stream?: string | undefined;
  /** How a restored PostgreSQL calls cairn back for WAL: [node, cairn.js, --repo, URL, …]. */
  cairnArgv: string[];
}

export interface RestoreDone {
  snapshot: Snapshot;
  result: RestoreResult;
  replay?: ReplayResult & { plan: ReplayPlan };
}

export async function restore(repo: Repository, options: RestoreCommandOptions): Promise<RestoreDone> {
  const ctx = operationContext(repo, options);
  return underLock(ctx, 'restore', false, async () => {
    const started = Date.now();
    try {
      const done = await restoreLocked(repo, options);
      const { errors, ...counts } = done.result;
      const replay = done.replay
        ? {
            pointInTime: done.replay.plan.describe,
            logStream: done.replay.plan.stream,
            logFiles: done.replay.plan.files.length,
            logBytes: done.replay.plan.bytes,
          }
        : {};
      await record(ctx, 'restore.finished', {
        snapshotId: done.snapshot.id,
        target: options.target ? resolve(options.target) : options.targetDatabase,
        ...counts,
        ...replay,
        errors: errors.length,
        durationMs: Date.now() - started,
      });
      return done;
    } catch (error) {
      await record(ctx, 'restore.failed', {
        snapshot: options.snapshot,
        target: options.target ? resolve(options.target) : options.targetDatabase,
        durationMs: Date.now() - started,
        ...failureDetails(error),
      });
      throw error;
    }
  });
}

async function restoreLocked(repo: Repository, options: RestoreCommandOptions): Promise<RestoreDone> {
  let replayPlan: ReplayPlan | undefined;
  let snapshot: Snapshot;
  if (options.pointInTime) {
    const base = options.snapshot === 'latest' ? undefined : options.snapshot;
    const planned = await planPointInTime(repo, { target: options.pointInTime.target, stream: options.pointInTime.stream, base });
    replayPlan = planned.plan;
    snapshot = planned.snapshot;
    if (!options.target)
      throw new CairnError('Cairn.Usage', 'a point-in-time restore needs --target DIR', {
        hint: 'name an empty directory for the restored data directory',
      });
    options.progress.warn(
      `restoring base snapshot ${shortId(snapshot.id)} (${snapshot.time}), then replaying ${planned.plan.files.length} archived log file(s) of ${planned.plan.stream} to ${planned.plan.describe}`,
    );
  } else {
    snapshot = await waitForSnapshot(repo, options.snapshot, { ...options, waitMs: options.waitForSnapshotMs });
  }
  const index = await repo.loadIndex(options.concurrency * 2, (message) => options.progress.warn(message));
  // Frames are opened on a worker thread: the main thread is the restore's bottleneck (pipeline/frame-threads.ts).
  const frames = new FrameThreads(repo.pieceIdKey(), FRAME_THREADS);
  const reader = new PieceReader(repo, index, { cacheFrames: 8, opener: frames, fetchBytes: fetchAheadFor(options.concurrency) });
  const intoDirectory = async (directory: string, partial: readonly string[] = []): Promise<RestoreResult> => {
    const target = resolve(directory);
    await refuseUnmatchedIncludes(reader, snapshot, options.includes);
    const state = await prepareTarget(target, options.force);
    const restorer = new Restorer(reader, {
      target,
      applyRoot: state !== 'holds-data',
      includes: options.includes,
      force: options.force,
      ignoreErrors: options.ignoreErrors,
      readAheadBytes: readAheadFor(options.concurrency),
      progress: options.progress,
      signal: options.signal,
      partial: { paths: new Set(partial), suffix: PARTIAL_SUFFIX },
    });
    try {
      return await restorer.run(snapshot);
    } catch (error) {
      // Written: what this restore counted, or (a target it found empty) anything in it now; a file being written
      // when the restore failed is not counted, and is removed only if the writer saw the failure.
      const { files, dirs, symlinks } = restorer.result;
      const wrote = files + dirs + symlinks > 0 || (state !== 'holds-data' && (await readdir(target).catch(() => [])).length > 0);
      throw wrote ? partlyRestored(error, target) : error;
    }
  };
  if (snapshot.engine === 'files') {
    if (!options.target)
      throw new CairnError('Cairn.Usage', 'restoring files needs --target DIR', { hint: 'name an empty directory to restore into' });
    try {
      return { snapshot, result: await intoDirectory(options.target) };
    } finally {
      await frames.close();
    }
  }
  // The engine recorded in the manifest restores its own snapshot (Vitess's rule).
  const engine = (options.engines ?? engineRegistry).byName(snapshot.engine);
  const raw = typeof options.engineOptions === 'function' ? options.engineOptions(engine.spec) : options.engineOptions;
  const engineOptions = engine.parseOptions(raw ?? {});
  let result: RestoreResult = { files: 0, dirs: 0, symlinks: 0, bytes: 0, errors: [] };
  const source = new RepositorySource(snapshot, reader, async (directory, restoreTo) => {
    result = await intoDirectory(directory, restoreTo.partial);
  });
  const temp = await makeEngineTemp('engine', options.tempDir, (message) => options.progress.warn(message));
  const tempDir = temp.path;
  const env = options.env ?? process.env;
  // The files the engine held back go into place last of all: after the replay of a point-in-time restore.
  const replaying = Boolean(replayPlan && options.pointInTime && options.target);
  let heldBack: { directory: string; paths: readonly string[] } | undefined;
  try {
    await engine.restore(engineOptions, source, {
      progress: options.progress,
      signal: options.signal,
      env,
      tempDir,
      target: { directory: options.target ? resolve(options.target) : undefined, database: options.targetDatabase },
      placeLast: async (directory, paths) => {
        if (replaying) heldBack = { directory, paths };
        else await placeLast(directory, paths, env, options.progress);
      },
    });
    if (result.files === 0) result = { ...result, files: (await source.list()).length, bytes: snapshot.summary.totalBytes };
  } finally {
    await frames.close();
    await temp.remove();
  }
  if (!replayPlan || !options.pointInTime || !options.target) return { snapshot, result };
  const replayDir = await makeEngineTemp('replay', options.tempDir, (message) => options.progress.warn(message));
  const replayTemp = replayDir.path;
  try {
    const replay = await replayerFor(snapshot.engine);
    const owner =
      typeof engineOptions === 'object' && engineOptions !== null && 'owner' in engineOptions && typeof engineOptions.owner === 'string'
        ? engineOptions.owner
        : undefined;
    const done = await replay({
      directory: resolve(options.target),
      plan: replayPlan,
      archive: new LogArchive(repo, replayPlan.stream),
      cairnArgv: options.pointInTime.cairnArgv,
      owner,
      env,
      signal: options.signal,
      progress: options.progress,
      tempDir: replayTemp,
    });
    if (heldBack) await placeLast(heldBack.directory, heldBack.paths, env, options.progress);
    return { snapshot, result, replay: { ...done, plan: replayPlan } };
  } finally {
    await replayDir.remove();
  }
}

/** A restore whose --include patterns do not all match something fails before it writes anything (the target is not even created). */
async function refuseUnmatchedIncludes(reader: PieceReader, snapshot: Snapshot, includes: string[]): Promise<void> {
  const unmatched = await unmatchedIncludes(reader, snapshot, includes);
  if (unmatched.length === 0) return;
  const id = shortId(snapshot.id);
  const named = unmatched.map((p) => `--include ${JSON.stringify(p)}`).join(', ');
  throw new CairnError(
    'Cairn.NotFound',
    `${named} ${unmatched.length === 1 ? 'matches' : 'match'} nothing in snapshot ${id}; nothing was restored`,
    {
      hint: `see what it holds with \`cairn ls ${id} / --recursive\` or \`cairn find PATTERN --snapshot ${id}\`; a pattern with a slash matches the path from the snapshot root, an absolute one a path under ${snapshot.paths.length === 1 ? 'the path' : 'the paths'} the snapshot was taken of (${snapshot.paths.join(', ') || 'none'})`,
    },
  );
}

/**
 * `--if-empty` (bootstrapping a replica): the restore is skipped when its target directory already
 * holds data, but not when that data is a physical restore that stopped part-way: the server would
 * refuse it, and a script looping on "already holds data" would never get a replica.
 */
export async function targetAlreadyHoldsData(options: { ifEmpty?: boolean | undefined; target?: string | undefined }): Promise<boolean> {
  if (!options.ifEmpty || !options.target) return false;
  if ((await readdir(options.target).catch(() => [])).length === 0) return false;
  const stopped = await stoppedRestoreIn(options.target);
  if (stopped) throw stopped;
  return true;
}

/**
 * A restore that failed after it wrote something: the error says the target now holds part of the
 * snapshot, and what to do (a rerun without --force would only say the target is not empty).
 */
function partlyRestored(error: unknown, target: string): unknown {
  if (!(error instanceof CairnError) || error.code === 'Cairn.Cancelled') return error;
  const note = `${target} now holds part of the snapshot, restored before the failure: once the cause is fixed, run the restore again with --force, or remove what it wrote`;
  return new CairnError(error.code, error.message, { hint: error.hint ? `${error.hint}. ${note}` : note, cause: error.cause ?? error });
}
