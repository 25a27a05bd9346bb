import { createHash } from 'node:crypto';
import { z } from 'zod';
import { AlreadyExistsError, NotFoundError } from './errors.ts';
import { LEASE_KEY, RUNS_PREFIX } from './layout.ts';
import type { DeletableStorage } from './storage.ts';

/**
 * The control plane's guard around scheduled backups (docs/orchestration.md).
 * Two plain JSON objects in the plan's repository, written and removed only by
 * the control plane's functions:
 *
 * - `orchestration/runs/<hash of scheduledTime>`: created once per scheduled
 *   time (create-if-absent), so a schedule that fires twice, or an execution
 *   retried with the same input, backs up once;
 * - `orchestration/lease`: the running backup's lease, created if absent. A
 *   second run finds it and is skipped with the holder named; a lease past its
 *   expiry (the run crashed without reaching finalize or record-failure) is
 *   taken over, so a crashed run never blocks the next one for longer than its
 *   own timeout.
 */

export const runLeaseSchema = z.object({
  planId: z.string(),
  executionId: z.string(),
  runId: z.string(),
  scheduledTime: z.string().optional(),
  acquired: z.string(),
  expires: z.string(),
});
export type RunLease = z.infer<typeof runLeaseSchema>;

export type LeaseDecision =
  { acquired: true; lease: RunLease; tookOver?: RunLease } | { acquired: false; reason: string; holder?: RunLease };

export interface AcquireRunLease {
  planId: string;
  executionId: string;
  scheduledTime?: string | undefined;
  /** How long the run may hold the lease: the agent's timeout plus the finishing steps. */
  leaseSeconds: number;
  now?: Date;
}

export function runKey(scheduledTime: string): string {
  return `${RUNS_PREFIX}${createHash('sha256').update(scheduledTime).digest('hex').slice(0, 32)}`;
}

export async function acquireRunLease(storage: DeletableStorage, request: AcquireRunLease): Promise<LeaseDecision> {
  const now = request.now ?? new Date();
  const runId = request.scheduledTime ? `${request.planId}@${request.scheduledTime}` : `${request.planId}@${request.executionId}`;
  const lease: RunLease = {
    planId: request.planId,
    executionId: request.executionId,
    runId,
    ...(request.scheduledTime ? { scheduledTime: request.scheduledTime } : {}),
    acquired: now.toISOString(),
    expires: new Date(now.getTime() + request.leaseSeconds * 1000).toISOString(),
  };
  const body = Buffer.from(JSON.stringify(lease));

  if (request.scheduledTime) {
    const key = runKey(request.scheduledTime);
    try {
      await storage.put(key, body, { ifAbsent: true });
    } catch (error) {
      if (!(error instanceof AlreadyExistsError)) throw error;
      const first = await readLease(storage, key);
      if (first?.executionId !== request.executionId) {
        return {
          acquired: false,
          reason: `the backup for scheduled time ${request.scheduledTime} was already started by execution ${first?.executionId ?? 'unknown'}`,
          ...(first ? { holder: first } : {}),
        };
      }
    }
  }

  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      await storage.put(LEASE_KEY, body, { ifAbsent: true });
      return { acquired: true, lease };
    } catch (error) {
      if (!(error instanceof AlreadyExistsError)) throw error;
    }
    const holder = await readLease(storage, LEASE_KEY);
    if (holder === undefined) continue; // released between our attempt and the read
    if (holder.executionId === request.executionId) return { acquired: true, lease: holder };
    if (Date.parse(holder.expires) > now.getTime()) {
      return {
        acquired: false,
        reason: `a backup of plan ${request.planId} is still running: execution ${holder.executionId} since ${holder.acquired} (lease until ${holder.expires})`,
        holder,
      };
    }
    // The holder crashed past its own timeout: take its lease over.
    await storage.delete(LEASE_KEY);
    try {
      await storage.put(LEASE_KEY, body, { ifAbsent: true });
      return { acquired: true, lease, tookOver: holder };
    } catch (error) {
      if (!(error instanceof AlreadyExistsError)) throw error;
      const winner = await readLease(storage, LEASE_KEY);
      return {
        acquired: false,
        reason: `another execution took over the expired lease first: ${winner?.executionId ?? 'unknown'}`,
        ...(winner ? { holder: winner } : {}),
      };
    }
  }
  return { acquired: false, reason: 'the lease changed hands while it was being acquired; the next schedule will try again' };
}

/** Removes the lease if this execution holds it (finalize and record-failure call this). */
export async function releaseRunLease(storage: DeletableStorage, executionId: string): Promise<boolean> {
  const holder = await readLease(storage, LEASE_KEY);
  if (holder?.executionId !== executionId) return false;
  await storage.delete(LEASE_KEY);
  return true;
}

export async function readLease(storage: DeletableStorage, key: string = LEASE_KEY): Promise<RunLease | undefined> {
  try {
    return runLeaseSchema.parse(JSON.parse((await storage.get(key)).toString('utf8')));
  } catch (error) {
    if (error instanceof NotFoundError) return undefined;
    throw error;
  }
}
