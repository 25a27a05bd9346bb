import { createHash, createHmac, timingSafeEqual } from 'node:crypto';
import { z } from 'zod';
import { AlreadyExistsError, NotFoundError } from './errors.ts';
import { LEASE_KEY, RUNS_PREFIX } from './layout.ts';
import type { DeletableStorage } from './storage.ts';

/**
 * The control plane's guard around scheduled backups (docs/orchestration.md).
 * Two JSON objects in the plan's repository, written and removed only by
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
 *
 * Both are sealed (docs/orchestration.md, "Sealed records"): an HMAC under the control plane's
 * seal key, a Secrets Manager secret only the functions may read, over the object's name and
 * its JSON. Hosts can read everything in their plan's prefix and hold the repository's master
 * key, so a seal under anything they have would prove nothing. A record whose seal does not
 * verify (written by anyone else, or before sealing existed) is ignored as forged: a forged
 * lease is deleted and taken over, a forged run record is overwritten, and neither skips a run.
 */

/** The seal key's Secrets Manager secret, and the Parameter Store reference the functions read it through. */
export function controlSealSecretName(envName: string): string {
  return `cairn-${envName}-control-seal`;
}
export function controlSealParameterName(envName: string): string {
  return `/aws/reference/secretsmanager/${controlSealSecretName(envName)}`;
}

/** Signs and checks the control plane's records; the key never leaves the functions. */
export interface RecordSeal {
  sign(name: string, json: string): string;
  verify(name: string, json: string, seal: string): boolean;
}

export function hmacSeal(key: Buffer): RecordSeal {
  if (key.length < 32) throw new Error('the control plane seal key must be at least 32 bytes');
  const mac = (name: string, json: string): Buffer => createHmac('sha256', key).update(`cairn/v1/control|${name}|${json}`).digest();
  return {
    sign: (name, json) => mac(name, json).toString('hex'),
    verify: (name, json, seal) => {
      const expected = mac(name, json);
      const given = Buffer.from(seal, 'hex');
      return given.length === expected.length && timingSafeEqual(given, expected);
    },
  };
}

/** A sealed record's bytes: the seal in hex, a newline, the JSON it seals. */
function sealed(seal: RecordSeal, name: string, lease: RunLease): Buffer {
  const json = JSON.stringify(lease);
  return Buffer.from(`${seal.sign(name, json)}\n${json}`);
}

type Read = { state: 'absent' } | { state: 'valid'; lease: RunLease } | { state: 'forged'; why: string };

async function readSealed(storage: DeletableStorage, key: string, seal: RecordSeal): Promise<Read> {
  let raw: string;
  try {
    raw = (await storage.get(key)).toString('utf8');
  } catch (error) {
    if (error instanceof NotFoundError) return { state: 'absent' };
    throw error;
  }
  const newline = raw.indexOf('\n');
  if (newline < 0) return { state: 'forged', why: 'it carries no seal' };
  const json = raw.slice(newline + 1);
  if (!seal.verify(key, json, raw.slice(0, newline))) return { state: 'forged', why: 'its seal does not verify' };
  let value: unknown;
  try {
    value = JSON.parse(json);
  } catch {
    return { state: 'forged', why: 'it is sealed but not JSON' };
  }
  const parsed = runLeaseSchema.safeParse(value);
  // Sealed by the control plane yet not a lease: a record of a newer version; treated like a forgery, never trusted.
  return parsed.success ? { state: 'valid', lease: parsed.data } : { state: 'forged', why: 'it is sealed but not a lease record' };
}

export const runLeaseSchema = z.object({
  planId: z.string(),
  executionId: z.string(),
  runId: z.string(),
  scheduledTime: z.string().optional(),
  acquired: z.string(),
  expires: z.string(),
});
export type RunLease = z.infer<typeof runLeaseSchema>;

export type LeaseDecision = (
  { acquired: true; lease: RunLease; tookOver?: RunLease } | { acquired: false; reason: string; holder?: RunLease }
) & {
  /** Records found that the control plane did not write (`<name>: <why>`), ignored and replaced. */
  forged?: string[];
};

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

export async function acquireRunLease(storage: DeletableStorage, request: AcquireRunLease, seal: RecordSeal): Promise<LeaseDecision> {
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
  const forged: string[] = [];
  const withForged = (decision: LeaseDecision): LeaseDecision => (forged.length > 0 ? { ...decision, forged } : decision);

  if (request.scheduledTime) {
    const key = runKey(request.scheduledTime);
    try {
      await storage.put(key, sealed(seal, key, lease), { ifAbsent: true });
    } catch (error) {
      if (!(error instanceof AlreadyExistsError)) throw error;
      const first = await readSealed(storage, key, seal);
      if (first.state === 'forged') {
        // Not the control plane's: this scheduled time has not run. Ours replaces it.
        forged.push(`${key}: ${first.why}`);
        await storage.put(key, sealed(seal, key, lease));
      } else if (first.state === 'valid' && first.lease.executionId !== request.executionId) {
        return withForged({
          acquired: false,
          reason: `the backup for scheduled time ${request.scheduledTime} was already started by execution ${first.lease.executionId}`,
          holder: first.lease,
        });
      }
    }
  }

  const body = sealed(seal, LEASE_KEY, lease);
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      await storage.put(LEASE_KEY, body, { ifAbsent: true });
      return withForged({ acquired: true, lease });
    } catch (error) {
      if (!(error instanceof AlreadyExistsError)) throw error;
    }
    const read = await readSealed(storage, LEASE_KEY, seal);
    if (read.state === 'absent') continue; // released between our attempt and the read
    const holder = read.state === 'valid' ? read.lease : undefined;
    if (holder?.executionId === request.executionId) return withForged({ acquired: true, lease: holder });
    if (holder !== undefined && Date.parse(holder.expires) > now.getTime()) {
      return withForged({
        acquired: false,
        reason: `a backup of plan ${request.planId} is still running: execution ${holder.executionId} since ${holder.acquired} (lease until ${holder.expires})`,
        holder,
      });
    }
    // The holder crashed past its own timeout, or the lease is not the control plane's: take it over.
    if (read.state === 'forged') forged.push(`${LEASE_KEY}: ${read.why}`);
    await storage.delete(LEASE_KEY);
    try {
      await storage.put(LEASE_KEY, body, { ifAbsent: true });
      return withForged({ acquired: true, lease, ...(holder ? { tookOver: holder } : {}) });
    } catch (error) {
      if (!(error instanceof AlreadyExistsError)) throw error;
      const winner = await readLease(storage, LEASE_KEY, seal);
      return withForged({
        acquired: false,
        reason: `another execution took over the expired lease first: ${winner?.executionId ?? 'unknown'}`,
        ...(winner ? { holder: winner } : {}),
      });
    }
  }
  return withForged({ acquired: false, reason: 'the lease changed hands while it was being acquired; the next schedule will try again' });
}

/** Removes the lease if this execution holds it (finalize and record-failure call this). */
export async function releaseRunLease(storage: DeletableStorage, executionId: string, seal: RecordSeal): Promise<boolean> {
  const holder = await readLease(storage, LEASE_KEY, seal);
  if (holder?.executionId !== executionId) return false;
  await storage.delete(LEASE_KEY);
  return true;
}

/** The record at `key` when the control plane sealed it; undefined when absent or forged. */
export async function readLease(storage: DeletableStorage, key: string, seal: RecordSeal): Promise<RunLease | undefined> {
  const read = await readSealed(storage, key, seal);
  return read.state === 'valid' ? read.lease : undefined;
}
