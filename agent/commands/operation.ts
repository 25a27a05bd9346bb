import { CairnError, errorMessage } from '../core/errors.ts';
import { recordEvent } from '../core/history.ts';
import { Lease } from '../core/locks.ts';
import type { Repository, Who } from '../core/repository.ts';
import type { ProgressListener } from '../progress/progress.ts';
import { TOOL } from '../core/version.ts';

/** Who runs an operation, where its warnings go and how it locks: what every repository command is given. */
export interface OperationOptions {
  who: Who;
  progress: ProgressListener;
  leaseMs?: number | undefined;
  lockWaitMs?: number | undefined;
  /** The lease clock (Date.now unless a test injects one: see AcquireOptions.now). */
  now?: (() => number) | undefined;
}

export interface OperationContext extends OperationOptions {
  repo: Repository;
}

/** The one place an operation's context is built from its options (which may carry more than the context needs). */
export function operationContext(repo: Repository, options: OperationOptions): OperationContext {
  return {
    repo,
    who: options.who,
    progress: options.progress,
    leaseMs: options.leaseMs,
    lockWaitMs: options.lockWaitMs,
    now: options.now,
  };
}

/**
 * Runs `fn` under a lease lock (shared for backup/restore/verify, exclusive
 * for forget/prune), reporting and recording any stale lock it took over, and
 * releasing the lock whatever happens.
 */
export async function underLock<T>(
  ctx: OperationContext,
  operation: string,
  exclusive: boolean,
  fn: (lease: Lease) => Promise<T>,
): Promise<T> {
  const lease = await Lease.acquire(ctx.repo, {
    operation,
    exclusive,
    who: ctx.who,
    leaseMs: ctx.leaseMs,
    waitMs: ctx.lockWaitMs,
    now: ctx.now,
    onWarning: (message) => ctx.progress.warn(message),
    onTakeover: async (stale, state) => {
      // The lease ran out by the storage's clock, not by the dead holder's own timestamps.
      const expired = new Date(state.effectiveExpiry).toISOString();
      ctx.progress.warn(
        `took over a stale lock: ${stale.operation} by ${stale.user}@${stale.host} pid ${stale.pid}, started ${stale.started}, lease expired ${expired}`,
        {
          staleHolder: stale.holder,
        },
      );
      await record(ctx, 'lock.takeover', {
        staleHolder: stale.holder,
        staleOperation: stale.operation,
        staleHost: stale.host,
        stalePid: stale.pid,
        expired,
      });
    },
  });
  let result: T;
  try {
    result = await fn(lease);
  } catch (error) {
    await lease.release().catch((releaseError: unknown) => ctx.progress.warn(`could not release the lock: ${errorMessage(releaseError)}`));
    throw error;
  }
  try {
    await lease.release();
  } catch (error) {
    // A lease taken over while we worked means another operation (a prune) may have run beside
    // us: that is a failure to report, not a warning (the work itself finished; check says whether
    // anything it wrote lost data).
    if (error instanceof CairnError && error.code === 'Cairn.Locked') throw error;
    ctx.progress.warn(`could not release the lock: ${errorMessage(error)}`);
  }
  return result;
}

export async function record(ctx: OperationContext, event: string, details: Record<string, unknown> = {}): Promise<void> {
  try {
    await recordEvent(ctx.repo, ctx.who, TOOL, event, details);
  } catch (error) {
    // The audit trail must not turn a finished backup into a failure; say so loudly instead.
    ctx.progress.warn(`could not record the ${event} event in the repository history: ${errorMessage(error)}`);
  }
}

export function failureDetails(error: unknown): Record<string, unknown> {
  return error instanceof CairnError
    ? { code: error.code, message: error.message }
    : { code: 'Cairn.Failure', message: errorMessage(error) };
}
