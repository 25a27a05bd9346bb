import { MetricUnit } from '@aws-lambda-powertools/metrics';
import { mapLimit } from '../agent/core/concurrency.ts';
import { CairnError } from '../agent/core/errors.ts';
import { CONFIG_KEY, KEY_CHECK_KEY, KEYS_PREFIX, PACKS_PREFIX, idFromKey, packKey } from '../agent/core/layout.ts';
import { PieceReader } from '../agent/core/piece-reader.ts';
import { collectReferences } from '../agent/core/references.ts';
import { awsS3Location } from '../agent/core/plan.ts';
import type { Repository } from '../agent/core/repository.ts';
import type { Storage } from '../agent/core/storage.ts';
import { ObjectRetention, type LockMode } from './object-retention.ts';
import { handlerOf, loadPlan, logger, metrics, openPlanRepository } from './runtime.ts';

/** Objects checked (and extended where needed) per invocation; the Backup machine loops until `done`. */
const DEFAULT_BATCH_OBJECTS = 2000;
/** Retention requests in flight at once. */
const CONCURRENCY = 16;
const DAY_MS = 86_400_000;

export interface ExtendLocksEvent {
  planId?: unknown;
  snapshotId?: unknown;
  /** The previous invocation's result (the state machine passes `$.locks` back); absent or `{}` on the first. */
  locks?: unknown;
}

export interface LocksExtended {
  planId: string;
  snapshotId: string;
  /** True when every object the snapshot uses has been checked. */
  done: boolean;
  /** The last key checked (keys are handled in sorted order); the next invocation starts after it. */
  after: string;
  mode: LockMode;
  /** Every object the snapshot uses is locked at least until then: the first invocation's time plus OBJECT_LOCK_DAYS. */
  requiredUntil: string;
  /** What a lock ending before requiredUntil is extended to: requiredUntil plus the renewal slack. */
  retainUntil: string;
  /** Totals over this and the earlier invocations of the same run. */
  checked: number;
  extended: number;
}

/**
 * The Backup machine's ExtendLocks state, after FinalizeBackup (docs/cdk.md, "Object Lock"). A
 * new snapshot reuses packs written long ago, whose default retention (the bucket's Object Lock
 * days, counted from their upload) may end long before the snapshot leaves the lock period. So
 * every object the snapshot needs to restore (its packs, the repository's config, key check and key files)
 * is kept locked at least until now plus OBJECT_LOCK_DAYS: GetObjectRetention first, and
 * PutObjectRetention only where the lock ends earlier, to that date plus a renewal slack of a
 * fifth of the lock period (so a pack every daily backup reuses is renewed about once a week,
 * not daily), in the configured mode; a lock is never shortened (COMPLIANCE refuses it anyway). Bounded work per invocation: at most OBJECT_LOCK_BATCH_OBJECTS objects
 * (2000), 16 requests at a time; the machine calls again with `locks` until `done`. The manifest
 * itself and this backup's new packs carry the bucket's default retention from their upload.
 * Index files are not locked: `cairn repair index` rebuilds them from the packs.
 */
export async function extendLocks(event: ExtendLocksEvent): Promise<LocksExtended> {
  const plan = await loadPlan(event.planId);
  if (typeof event.snapshotId !== 'string' || event.snapshotId === '')
    throw new CairnError('Cairn.InvalidInput', 'snapshotId: required (this state is fed by FinalizeBackup)');
  const { days, mode } = lockSettings();
  const previous = previousRun(event.locks, event.snapshotId);
  const now = Math.ceil(Date.now() / 1000) * 1000;
  const requiredUntil = previous?.requiredUntil ?? new Date(now + days * DAY_MS).toISOString();
  const retainUntil = previous?.retainUntil ?? new Date(now + (days + renewalSlackDays(days)) * DAY_MS).toISOString();
  const required = Date.parse(requiredUntil);
  const until = new Date(retainUntil);

  const location = awsS3Location(plan);
  if (location === undefined || location.bucket !== process.env.BUCKET_NAME) {
    // Object Lock is the environment bucket's setting; a plan elsewhere has its own rules (and this role no rights there):
    // an S3-compatible endpoint's retention is its operator's (docs/cdk.md, "S3-compatible endpoints").
    logger.info('no Object Lock to keep: the plan is not in the environment bucket', { planId: plan.id, url: plan.repository.url });
    return {
      planId: plan.id,
      snapshotId: event.snapshotId,
      done: true,
      after: '',
      mode,
      requiredUntil,
      retainUntil,
      checked: 0,
      extended: 0,
    };
  }
  const { repo, storage } = await openPlanRepository(plan);
  const keys = await objectsOfSnapshot(repo, storage, event.snapshotId);
  const after = previous?.after ?? '';
  const batch = keys.filter((k) => k > after).slice(0, batchSize());
  const retention = new ObjectRetention(plan);
  let extended = 0;
  const missing: string[] = [];
  try {
    await mapLimit(batch, CONCURRENCY, async (key) => {
      try {
        const current = await retention.get(key);
        if (current !== undefined && current.retainUntil.getTime() >= required) return;
        await retention.put(key, mode, until);
        extended++;
      } catch (error) {
        if (error instanceof CairnError && error.code === 'Cairn.NotFound') missing.push(key);
        else throw error;
      }
    });
  } finally {
    retention.destroy();
  }
  if (missing.length > 0)
    throw new CairnError(
      'Cairn.Damaged',
      `snapshot ${event.snapshotId} of plan ${plan.id} uses ${missing.length} object(s) that do not exist (${missing.sort().slice(0, 3).join(', ')}): their locks cannot be kept`,
      { hint: 'run `cairn verify`; a deleted object in a versioned bucket is restored by removing its delete marker (docs/cdk.md)' },
    );
  const last = batch.at(-1) ?? after;
  const result: LocksExtended = {
    planId: plan.id,
    snapshotId: event.snapshotId,
    done: keys.every((k) => k <= last),
    after: last,
    mode,
    requiredUntil,
    retainUntil,
    checked: (previous?.checked ?? 0) + batch.length,
    extended: (previous?.extended ?? 0) + extended,
  };
  logger.info('object locks kept', { ...result });
  metrics.addDimension('PlanId', plan.id);
  metrics.addMetric('LocksExtended', MetricUnit.Count, extended);
  return result;
}

/**
 * The keys a restore of the snapshot reads that a later forget cannot rewrite: the config, the
 * key files, and every pack holding a piece the snapshot uses (each location of it: an extra index
 * entry naming another pack costs a lock, never a lost piece). Sorted, so invocations share a cursor.
 */
export async function objectsOfSnapshot(repo: Repository, storage: Storage, snapshotId: string): Promise<string[]> {
  const snapshot = await repo.readSnapshot(snapshotId);
  const index = await repo.loadIndex(CONCURRENCY);
  if (index.unreadable.length > 0)
    throw new CairnError(
      'Cairn.Damaged',
      `index file(s) ${index.unreadable.map((u) => u.name).join(', ')} cannot be read: the packs snapshot ${snapshotId} uses are not all known, so their locks cannot all be kept`,
      { hint: '`cairn repair index` rebuilds the index from the packs' },
    );
  const used = await collectReferences([snapshot], new PieceReader(repo, index));
  const packs = new Set<string>();
  for (const entry of index.entries()) if (used.has(entry.id)) packs.add(entry.packId);
  const existing = new Set<string>();
  for await (const object of storage.list(PACKS_PREFIX)) {
    const id = idFromKey(object.key, PACKS_PREFIX);
    if (id) existing.add(id);
  }
  const keys = [CONFIG_KEY];
  // Repositories made before the key check existed have none.
  if ((await storage.stat(KEY_CHECK_KEY)) !== undefined) keys.push(KEY_CHECK_KEY);
  for await (const object of storage.list(KEYS_PREFIX)) keys.push(object.key);
  // A location no pack holds while another one of the piece does is a stale index entry, not a missing object.
  for (const id of packs) if (existing.has(id) || !anyLocationExists(index, used, id, existing)) keys.push(packKey(id));
  return [...new Set(keys)].sort();
}

/** Whether the pieces the snapshot uses in pack `packId` are all held by some existing pack anyway. */
function anyLocationExists(
  index: Awaited<ReturnType<Repository['loadIndex']>>,
  used: Awaited<ReturnType<typeof collectReferences>>,
  packId: string,
  existing: ReadonlySet<string>,
): boolean {
  for (const entry of index.entries()) {
    if (entry.packId !== packId || !used.has(entry.id)) continue;
    if (!index.locations(entry.id).some((l) => existing.has(l.packId))) return false;
  }
  return true;
}

/** OBJECT_LOCK_DAYS and OBJECT_LOCK_MODE, which the stack sets from the environment's repository.objectLock. */
function lockSettings(): { days: number; mode: LockMode } {
  const days = Number(process.env.OBJECT_LOCK_DAYS ?? '');
  const mode = process.env.OBJECT_LOCK_MODE;
  if (!Number.isInteger(days) || days < 1 || (mode !== 'COMPLIANCE' && mode !== 'GOVERNANCE'))
    throw new CairnError(
      'Cairn.Config',
      `OBJECT_LOCK_DAYS (${JSON.stringify(process.env.OBJECT_LOCK_DAYS)}) and OBJECT_LOCK_MODE (${JSON.stringify(mode)}) must be a number of days and COMPLIANCE or GOVERNANCE`,
      { hint: 'deploy through the Cairn CDK app with repository.objectLock in the environment config; it sets both' },
    );
  return { days, mode };
}

/** How far past the required date a renewed lock reaches: a fifth of the lock period, at least a day. */
export function renewalSlackDays(days: number): number {
  return Math.max(1, Math.round(days / 5));
}

function batchSize(): number {
  const n = Number(process.env.OBJECT_LOCK_BATCH_OBJECTS ?? DEFAULT_BATCH_OBJECTS);
  return Number.isInteger(n) && n > 0 ? n : DEFAULT_BATCH_OBJECTS;
}

/** The earlier invocation's cursor, when it was for the same snapshot. */
function previousRun(locks: unknown, snapshotId: string): LocksExtended | undefined {
  if (typeof locks !== 'object' || locks === null) return undefined;
  const l = locks as Partial<LocksExtended>;
  if (l.snapshotId !== snapshotId || typeof l.after !== 'string') return undefined;
  if (typeof l.retainUntil !== 'string' || typeof l.requiredUntil !== 'string') return undefined;
  if (Number.isNaN(Date.parse(l.retainUntil)) || Number.isNaN(Date.parse(l.requiredUntil))) return undefined;
  return l as LocksExtended;
}

export const handler = handlerOf('extend-locks', extendLocks);
