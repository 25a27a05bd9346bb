import { resolve } from 'node:path';
import { PieceReader } from '../core/piece-reader.ts';
import type { Repository, Who } from '../core/repository.ts';
import { failureDetails, record, underLock, type OperationContext } from './operation.ts';
import type { Snapshot } from '../core/snapshot.ts';
import { Restorer, prepareTarget, type RestoreResult } from '../files/restorer.ts';
import type { ProgressListener } from '../progress/progress.ts';

export interface RestoreCommandOptions {
  snapshot: string;
  target: string;
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
      await record(ctx, 'restore.finished', { snapshotId: done.snapshot.id, target: resolve(options.target), ...counts, errors: errors.length, durationMs: Date.now() - started });
      return done;
    } catch (error) {
      await record(ctx, 'restore.failed', { snapshot: options.snapshot, target: resolve(options.target), durationMs: Date.now() - started, ...failureDetails(error) });
      throw error;
    }
  });
}

async function restoreLocked(repo: Repository, options: RestoreCommandOptions): Promise<{ snapshot: Snapshot; result: RestoreResult }> {
  const snapshot = await repo.findSnapshot(options.snapshot);
  const target = resolve(options.target);
  await prepareTarget(target, options.force);
  const index = await repo.loadIndex(options.concurrency * 2);
  const reader = new PieceReader(repo, index, { cacheFrames: 8 });
  const restorer = new Restorer(reader, {
    target,
    includes: options.includes,
    force: options.force,
    ignoreErrors: options.ignoreErrors,
    readAheadBytes: Math.max(2, options.concurrency) * (8 << 20),
    progress: options.progress,
    signal: options.signal,
  });
  return { snapshot, result: await restorer.run(snapshot) };
}
