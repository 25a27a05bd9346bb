import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { CairnError } from '../core/errors.ts';
import { engineByName } from '../engines/registry.ts';
import { RepositorySource } from '../engines/source.ts';
import { PieceReader } from '../core/piece-reader.ts';
import type { Repository, Who } from '../core/repository.ts';
import { failureDetails, record, underLock, type OperationContext } from './operation.ts';
import type { Snapshot } from '../core/snapshot.ts';
import { Restorer, prepareTarget, type RestoreResult } from '../files/restorer.ts';
import type { ProgressListener } from '../progress/progress.ts';

export interface RestoreCommandOptions {
  snapshot: string;
  /** Directory to restore into: required for files and physical engines. */
  target?: string | undefined;
  /** Database to restore into (logical engines), instead of the one backed up. */
  targetDatabase?: string | undefined;
  /** Connection and other options for the snapshot's engine. */
  engineOptions?: Record<string, unknown> | undefined;
  /** Keep looking for a snapshot this long before giving up (bootstrapping a replica while the first backup runs). */
  waitForSnapshotMs?: number | undefined;
  env?: NodeJS.ProcessEnv | undefined;
  includes: string[];
  force: boolean;
  ignoreErrors: boolean;
  concurrency: number;
  progress: ProgressListener;
  signal?: AbortSignal | undefined;
  who: Who;
  leaseMs?: number | undefined;
  lockWaitMs?: number | undefined;
}

export async function restore(repo: Repository, options: RestoreCommandOptions): Promise<{ snapshot: Snapshot; result: RestoreResult }> {
  const ctx: OperationContext = { repo, who: options.who, progress: options.progress, leaseMs: options.leaseMs, lockWaitMs: options.lockWaitMs };
  return underLock(ctx, 'restore', false, async () => {
    const started = Date.now();
    try {
      const done = await restoreLocked(repo, options);
      const { errors, ...counts } = done.result;
      await record(ctx, 'restore.finished', { snapshotId: done.snapshot.id, target: options.target ? resolve(options.target) : options.targetDatabase, ...counts, errors: errors.length, durationMs: Date.now() - started });
      return done;
    } catch (error) {
      await record(ctx, 'restore.failed', { snapshot: options.snapshot, target: options.target ? resolve(options.target) : options.targetDatabase, durationMs: Date.now() - started, ...failureDetails(error) });
      throw error;
    }
  });
}

async function restoreLocked(repo: Repository, options: RestoreCommandOptions): Promise<{ snapshot: Snapshot; result: RestoreResult }> {
  const snapshot = await findWaiting(repo, options);
  const index = await repo.loadIndex(options.concurrency * 2);
  const reader = new PieceReader(repo, index, { cacheFrames: 8 });
  const intoDirectory = async (directory: string): Promise<RestoreResult> => {
    const target = resolve(directory);
    await prepareTarget(target, options.force);
    const restorer = new Restorer(reader, {
      target,
      includes: options.includes,
      force: options.force,
      ignoreErrors: options.ignoreErrors,
      readAheadBytes: Math.max(2, options.concurrency) * (8 << 20),
      progress: options.progress,
      signal: options.signal,
    });
    return restorer.run(snapshot);
  };
  if (snapshot.engine === 'files') {
    if (!options.target) throw new CairnError('Cairn.Usage', 'restoring files needs --target DIR', { hint: 'name an empty directory to restore into' });
    return { snapshot, result: await intoDirectory(options.target) };
  }
  // The engine recorded in the manifest restores its own snapshot (Vitess's rule).
  const engine = engineByName(snapshot.engine);
  const engineOptions = engine.parseOptions(options.engineOptions ?? {});
  let result: RestoreResult = { files: 0, dirs: 0, symlinks: 0, bytes: 0, errors: [] };
  const source = new RepositorySource(snapshot, reader, async (directory) => {
    result = await intoDirectory(directory);
  });
  const tempDir = await mkdtemp(join(tmpdir(), 'cairn-engine-'));
  try {
    await engine.restore(engineOptions, source, {
      progress: options.progress,
      signal: options.signal,
      env: options.env ?? process.env,
      tempDir,
      target: { directory: options.target ? resolve(options.target) : undefined, database: options.targetDatabase },
    });
  } finally {
    await rm(tempDir, { recursive: true, force: true });
  }
  if (result.files === 0) result = { ...result, files: (await source.list()).length, bytes: snapshot.summary.totalBytes };
  return { snapshot, result };
}

async function findWaiting(repo: Repository, options: RestoreCommandOptions): Promise<Snapshot> {
  const deadline = Date.now() + (options.waitForSnapshotMs ?? 0);
  for (;;) {
    try {
      return await repo.findSnapshot(options.snapshot);
    } catch (error) {
      if (!(error instanceof CairnError && error.code === 'Cairn.NotFound') || Date.now() >= deadline) throw error;
      options.progress.warn(`no snapshot ${options.snapshot} yet; waiting`);
      await new Promise((resolve) => setTimeout(resolve, Math.min(5000, Math.max(100, deadline - Date.now()))));
      options.signal?.throwIfAborted();
    }
  }
}
