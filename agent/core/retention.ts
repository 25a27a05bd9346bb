import { z } from 'zod';
import type { KnownDamage } from './damage.ts';
import { CairnError } from './errors.ts';
import { isPartial, type Snapshot } from './snapshot.ts';
import { storedAt } from './snapshot-time.ts';

/**
 * A retention policy (restic's rules). Every count rule keeps the newest good
 * snapshot of each of the N most recent periods that have one; `keepWithin`
 * keeps every good snapshot younger than the duration, measured from the
 * newest good snapshot (not from now, so a host that stopped backing up does
 * not see its history expire).
 */
export const retentionPolicySchema = z
  .object({
    keepLast: z.number().int().min(0).optional(),
    keepHourly: z.number().int().min(0).optional(),
    keepDaily: z.number().int().min(0).optional(),
    keepWeekly: z.number().int().min(0).optional(),
    keepMonthly: z.number().int().min(0).optional(),
    keepYearly: z.number().int().min(0).optional(),
    keepWithin: z
      .string()
      .regex(/^(\d+[yMwdhm])+$/, 'a duration such as 7d, 2w, 1y6M or 36h')
      .optional(),
    keepTags: z.array(z.string().min(1)).optional(),
    /**
     * Point-in-time recovery window: every snapshot within it of the newest, and
     * the newest one before it, the base a replay to the window's start needs
     * (garbage collection then keeps that base's log: docs/pitr.md).
     */
    keepWithinPitr: z
      .string()
      .regex(/^(\d+[yMwdhm])+$/, 'a duration such as 7d, 2w, 1y6M or 36h')
      .optional(),
  })
  .strict();
export type RetentionPolicy = z.infer<typeof retentionPolicySchema>;

export interface RetentionCandidate {
  id: string;
  /** ISO-8601 start time of the snapshot. */
  time: string;
  /**
   * When the storage stored the manifest (epoch ms), if known. Newest-first order — `keepLast`,
   * the newest good snapshot, and which snapshot of a period a count rule keeps — follows it,
   * because `time` is the backing-up host's clock and may be minutes off; periods and durations
   * still follow `time`.
   */
  stored?: number;
  tags: readonly string[];
  pinned?: boolean;
  /** Marked damaged (a damage marker names it, or the `damaged` tag): kept for inspection, never counted as good. */
  damaged?: boolean;
  /**
   * A backup that could not read every file: never counted as good. Kept while it is newer than
   * the newest good snapshot (it holds the freshest copy of what it did read); older ones go
   * unless another rule (pin, tag, object lock) keeps them.
   */
  partial?: boolean;
  /** Set (by the caller, who knows the clock and the bucket's rules) while S3 Object Lock still protects the manifest. */
  lockedUntil?: string;
}

export interface RetentionDecision {
  id: string;
  time: string;
  keep: boolean;
  reasons: string[];
}

export interface RetentionResult {
  keep: RetentionDecision[];
  remove: RetentionDecision[];
}

type Bucket = 'hourly' | 'daily' | 'weekly' | 'monthly' | 'yearly';

const bucketRules: Array<[Bucket, keyof RetentionPolicy]> = [
  ['hourly', 'keepHourly'],
  ['daily', 'keepDaily'],
  ['weekly', 'keepWeekly'],
  ['monthly', 'keepMonthly'],
  ['yearly', 'keepYearly'],
];

/**
 * Decides which snapshots one group (plan/host/paths) keeps. Pure: the same
 * input gives the same output. Invariants (tested): kept + removed = all, each
 * with at least one reason; the newest good snapshot is always kept; damaged,
 * pinned and tagged snapshots are kept; a count rule never keeps more than N;
 * damaged and partial snapshots are never counted by any rule.
 */
export function applyPolicy(snapshots: readonly RetentionCandidate[], policy: RetentionPolicy): RetentionResult {
  const reasons = new Map<string, string[]>(snapshots.map((s) => [s.id, []]));
  const add = (id: string, reason: string): void => {
    reasons.get(id)?.push(reason);
  };
  const newestFirst = [...snapshots].sort(newerFirst);
  const good = newestFirst.filter((s) => !s.damaged && !s.partial);

  for (const s of newestFirst) {
    if (s.damaged) add(s.id, 'damaged: kept for inspection, not counted');
    if (s.pinned) add(s.id, 'pinned');
    if (s.lockedUntil !== undefined) add(s.id, `object lock until ${s.lockedUntil}`);
    const tag = s.tags.find((t) => policy.keepTags?.includes(t));
    if (tag !== undefined) add(s.id, `tag ${tag}`);
  }
  const newest = good[0];
  if (newest) add(newest.id, 'newest good snapshot');
  for (const s of newestFirst) {
    if (!s.partial || s.damaged) continue;
    if (newest && newerFirst(s, newest) > 0) continue;
    add(s.id, 'partial (some files unread), newer than the newest good snapshot: kept, not counted');
  }

  if (policy.keepLast !== undefined) {
    good.slice(0, policy.keepLast).forEach((s, i) => add(s.id, `last ${i + 1}/${policy.keepLast}`));
  }
  for (const [bucket, field] of bucketRules) {
    const limit = policy[field] as number | undefined;
    if (!limit) continue;
    // A set, not the previous key: in storage order a skewed host's periods need not come in a run.
    const seen = new Set<string>();
    for (const s of good) {
      if (seen.size >= limit) break;
      const key = bucketKey(new Date(s.time), bucket);
      if (seen.has(key)) continue;
      seen.add(key);
      const used = seen.size;
      add(s.id, `${bucket} ${used}/${limit} (${key})`);
    }
  }
  if (policy.keepWithin && newest) {
    const cutoff = subtractDuration(new Date(newest.time), policy.keepWithin);
    for (const s of good) if (Date.parse(s.time) >= cutoff.getTime()) add(s.id, `within ${policy.keepWithin} of the newest`);
  }

  if (policy.keepWithinPitr && newest) {
    const cutoff = subtractDuration(new Date(newest.time), policy.keepWithinPitr).getTime();
    for (const s of good) if (Date.parse(s.time) >= cutoff) add(s.id, `within the ${policy.keepWithinPitr} point-in-time window`);
    const base = good.find((s) => Date.parse(s.time) < cutoff);
    if (base) add(base.id, `base of the ${policy.keepWithinPitr} point-in-time window (replays to its start)`);
  }

  const result: RetentionResult = { keep: [], remove: [] };
  for (const s of newestFirst) {
    const why = reasons.get(s.id) ?? [];
    if (why.length > 0) result.keep.push({ id: s.id, time: s.time, keep: true, reasons: why });
    else result.remove.push({ id: s.id, time: s.time, keep: false, reasons: ['matched no keep rule'] });
  }
  return result;
}

/**
 * Newest first: by storage time when both are known (no host clock moves it), else by `time`;
 * ties by id, so the order is total and the same everywhere.
 */
function newerFirst(a: RetentionCandidate, b: RetentionCandidate): number {
  const byStored = a.stored !== undefined && b.stored !== undefined ? b.stored - a.stored : 0;
  return byStored || Date.parse(b.time) - Date.parse(a.time) || (a.id < b.id ? 1 : -1);
}

/**
 * A snapshot as retention sees it: pinned, damaged (a damage marker or the `damaged` tag) and
 * partial said. `cairn forget` and the control plane's retention build candidates the same way.
 */
export function retentionCandidate(s: Snapshot, pins: ReadonlySet<string>, damage: KnownDamage): RetentionCandidate {
  const stored = storedAt(s);
  return {
    id: s.id,
    time: s.time,
    ...(stored !== undefined ? { stored } : {}),
    tags: s.tags,
    pinned: pins.has(s.id),
    ...(damage.damaged(s) ? { damaged: true } : {}),
    ...(isPartial(s) ? { partial: true } : {}),
  };
}

/**
 * An unreadable damage marker may name any snapshot, so the policy cannot tell good from damaged:
 * everything is kept (with that reason) until the marker reads or an operator deletes it.
 */
export function keepAllIfUnsure(decision: RetentionResult, damage: KnownDamage): RetentionResult {
  if (damage.unreadable.length === 0) return decision;
  const why = `kept: damage marker(s) ${damage.unreadable.map((u) => u.name).join(', ')} cannot be read, so which snapshots are good is unknown`;
  const keep = [...decision.keep, ...decision.remove.map((d) => ({ ...d, keep: true, reasons: [why] }))];
  keep.sort((a, b) => Date.parse(b.time) - Date.parse(a.time) || (a.id < b.id ? 1 : -1));
  return { keep, remove: [] };
}

export function isEmptyPolicy(policy: RetentionPolicy): boolean {
  return (
    !policy.keepLast &&
    !policy.keepHourly &&
    !policy.keepDaily &&
    !policy.keepWeekly &&
    !policy.keepMonthly &&
    !policy.keepYearly &&
    !policy.keepWithin &&
    !policy.keepWithinPitr &&
    !policy.keepTags?.length
  );
}

/** Period keys in UTC: 2026-11-23T14, 2026-11-23, 2026-W48, 2026-11, 2026. */
export function bucketKey(date: Date, bucket: Bucket): string {
  const iso = date.toISOString();
  switch (bucket) {
    case 'hourly':
      return iso.slice(0, 13);
    case 'daily':
      return iso.slice(0, 10);
    case 'monthly':
      return iso.slice(0, 7);
    case 'yearly':
      return iso.slice(0, 4);
    case 'weekly': {
      // ISO week: the Thursday of this week decides the year.
      const day = new Date(Date.UTC(date.getUTCFullYear(), date.getUTCMonth(), date.getUTCDate()));
      const weekday = day.getUTCDay() || 7;
      day.setUTCDate(day.getUTCDate() + 4 - weekday);
      const yearStart = Date.UTC(day.getUTCFullYear(), 0, 1);
      const week = Math.ceil(((day.getTime() - yearStart) / 86_400_000 + 1) / 7);
      return `${day.getUTCFullYear()}-W${String(week).padStart(2, '0')}`;
    }
  }
}

export function subtractDuration(from: Date, duration: string): Date {
  const parts = [...duration.matchAll(/(\d+)([yMwdhm])/g)];
  if (parts.length === 0 || parts.map((p) => p[0]).join('') !== duration) {
    throw new CairnError('Cairn.Usage', `invalid duration ${JSON.stringify(duration)}`, {
      hint: 'use a number and a unit: y, M (months), w, d, h, m (minutes), e.g. 7d or 1y6M',
    });
  }
  const d = new Date(from.getTime());
  for (const [, amount, unit] of parts) {
    const n = Number(amount);
    if (unit === 'y') d.setUTCFullYear(d.getUTCFullYear() - n);
    else if (unit === 'M') d.setUTCMonth(d.getUTCMonth() - n);
    else if (unit === 'w') d.setUTCDate(d.getUTCDate() - 7 * n);
    else if (unit === 'd') d.setUTCDate(d.getUTCDate() - n);
    else if (unit === 'h') d.setUTCHours(d.getUTCHours() - n);
    else d.setUTCMinutes(d.getUTCMinutes() - n);
  }
  return d;
}
