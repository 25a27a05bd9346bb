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
  /**
   * `--no-lock`: take no lease and record no history, so a read-only operation works on a
   * repository this host cannot write (a replica, a read-only mount, a read-only role). Only the
   * operations in READ_ONLY_OPERATIONS accept it; a concurrent prune may then remove what it reads.
   */
  noLock?: boolean | undefined;
}

/** The operations `--no-lock` may run: they write nothing to the repository but their lease and history. */
export const READ_ONLY_OPERATIONS: ReadonlySet<string> = new Set(['restore', 'verify', 'ls', 'find', 'dump', 'diff', 'snapshots']);

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
    noLock: options.noLock,
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
  if (ctx.noLock) {
    if (exclusive || !READ_ONLY_OPERATIONS.has(operation))
      throw new CairnError(
        'Cairn.Usage',
        `--no-lock is for read-only operations; ${operation} writes to the repository and must hold a lock`,
        {
          hint: `drop --no-lock; it is accepted by ${[...READ_ONLY_OPERATIONS].join(', ')}`,
        },
      );
    // Read-only operations never consult their lease (they write nothing it would guard): a stand-in that holds nothing.
    return fn(NO_LEASE);
  }
  let lease: Lease;
  try {
    lease = await acquireLease(ctx, operation, exclusive);
  } catch (error) {
    throw lockWriteFailure(error, operation);
  }
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

const NO_LEASE = {
  holder: 'no-lock',
  assertHeld: () => undefined,
  confirmHeld: () => Promise.resolve(),
  refresh: () => Promise.resolve(),
  release: () => Promise.resolve(),
} as unknown as Lease;

/**
 * A lease that could not be written (the storage refuses writes) says what `--no-lock` is for,
 * when the operation could run without one.
 */
function lockWriteFailure(error: unknown, operation: string): unknown {
  if (!(error instanceof CairnError) || error.code !== 'Cairn.Storage' || !READ_ONLY_OPERATIONS.has(operation)) return error;
  return new CairnError('Cairn.Storage', `${operation} could not write its lock to the repository: ${error.message}`, {
    hint: `if this repository is read-only for this host (a replica, a read-only mount or role), pass --no-lock: ${operation} then takes no lock, and a prune running meanwhile could remove what it reads`,
    cause: error,
  });
}

async function acquireLease(ctx: OperationContext, operation: string, exclusive: boolean): Promise<Lease> {
  return Lease.acquire(ctx.repo, {
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
}

export async function record(ctx: OperationContext, event: string, details: Record<string, unknown> = {}): Promise<void> {
  if (ctx.noLock) return; // --no-lock: the repository may be read-only; nothing is written to it
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
