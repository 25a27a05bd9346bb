import { MetricUnit } from '@aws-lambda-powertools/metrics';
import { randomBytes } from 'node:crypto';
import { CairnError } from '../agent/core/errors.ts';
import { analyzeGarbage } from '../agent/core/garbage.ts';
import {
  DEFAULT_GC_GRACE_MS,
  markGeneration,
  readGenerations,
  settleGenerations,
  tidyGenerations,
  waitForGrace,
  type GcContext,
  type Settlement,
} from '../agent/core/gc-collect.ts';
import { recordEvent } from '../agent/core/history.ts';
import { snapshotKey } from '../agent/core/layout.ts';
import { Lease } from '../agent/core/locks.ts';
import { readDamage } from '../agent/core/damage.ts';
import { awsS3Location, targetsModeOf } from '../agent/core/plan.ts';
import { applyPolicy, keepAllIfUnsure, retentionCandidate, type RetentionDecision, type RetentionResult } from '../agent/core/retention.ts';
import { TOOL } from '../agent/core/version.ts';
import { pinnedIds } from '../agent/core/pins.ts';
import { writeWorkList } from '../agent/core/gc-work-list.ts';
import { collectLogs, type LogCollection } from '../agent/core/pitr-planning.ts';
import { controlPlaneWho, controlSeal, handlerOf, loadPlan, logger, metrics, openPlanRepository } from './runtime.ts';
import { attestationKey, attestedInstances, attestedSource } from './snapshot-attestations.ts';

export interface RetentionEvent {
  planId?: unknown;
}

/** A snapshot the policy kept or forgot, with the host its manifest names (an `each` plan's group). */
export type Kept = Pick<RetentionDecision, 'id' | 'time' | 'reasons'> & { host: string };

export interface RetentionOutcome {
  planId: string;
  skipped: boolean;
  reason?: string;
  kept: Kept[];
  forgotten: Kept[];
  gc: { generation: string; prefixes: string[]; packs: number; bytes: number };
  /** Archived log files no kept snapshot's window needs, deleted (docs/pitr.md, "Retention"); per stream. */
  logs: Array<Omit<LogCollection, 'reasons'>>;
  /**
   * What WaitGrace waits before the sweep: 0, since this function already waited the GC grace (by the
   * storage's clock) between its mark and its settlement, and the packs it hands the sweep are out of
   * every index and used by no manifest (docs/orchestration.md).
   */
  graceSeconds: number;
}

/** Seconds the mark stays pending before it is settled (GC_GRACE_SECONDS; DEFAULT_GC_GRACE_MS otherwise). */
function graceMs(): number {
  const raw = process.env.GC_GRACE_SECONDS;
  if (raw === undefined || raw === '') return DEFAULT_GC_GRACE_MS;
  const seconds = Number(raw);
  if (!Number.isFinite(seconds) || seconds < 0)
    throw new CairnError('Cairn.Config', `GC_GRACE_SECONDS: ${JSON.stringify(raw)} is not a number of seconds`);
  return seconds * 1000;
}

/** How this function waits out the grace; tests replace it (they must not sleep). */
export const gcClock = {
  wait: (ms: number): Promise<void> => new Promise<void>((resolve) => setTimeout(resolve, ms)),
};

const who = controlPlaneWho('retention');

/**
 * The plan's retention policy, then garbage collection's two phases, under the
 * repository's exclusive lock (which only keeps backups from wasting work:
 * what is deleted does not depend on it): forget the manifests the policy does
 * not keep, delete the archived log files no remaining snapshot's window needs
 * (hosts cannot delete; the control plane does), mark the packs and pieces
 * nothing uses, wait the grace, settle (keep what manifests committed since
 * use, write one index without the rest, delete the old index files), and
 * record the doomed packs for the sweep (gc-sweep, one Map item per pack
 * prefix). A repository busy with a backup is skipped, not failed: the next run
 * collects.
 */
export async function applyRetention(event: RetentionEvent): Promise<RetentionOutcome> {
  const plan = await loadPlan(event.planId);
  const { repo, storage } = await openPlanRepository(plan);
  const empty: RetentionOutcome['gc'] = { generation: '', prefixes: [], packs: 0, bytes: 0 };
  let lease: Lease;
  try {
    lease = await Lease.acquire(repo, { operation: 'retention', exclusive: true, who });
  } catch (error) {
    if (error instanceof CairnError && error.code === 'Cairn.Locked') {
      logger.warn('retention skipped: repository busy', { planId: plan.id, reason: error.message });
      // The RetentionSkipped alarm: a repository busy at every retention run is never collected.
      metrics.addDimension('PlanId', plan.id);
      metrics.addMetric('RetentionSkipped', MetricUnit.Count, 1);
      return { planId: plan.id, skipped: true, reason: error.message, kept: [], forgotten: [], gc: empty, logs: [], graceSeconds: 0 };
    }
    throw error;
  }
  try {
    const { snapshots, unreadable } = await repo.listSnapshots();
    for (const u of unreadable)
      logger.warn('snapshot cannot be read; it is neither counted nor deleted', { snapshotId: u.id, error: u.error });
    const pins = await pinnedIds(repo);
    // The bucket's Object Lock governs AWS S3 repositories; an S3-compatible endpoint's retention is its operator's (docs/cdk.md).
    const lockDays = awsS3Location(plan) !== undefined ? Number(process.env.OBJECT_LOCK_DAYS ?? '0') : 0;
    const now = Date.now();
    // Damaged (marker or tag) and partial snapshots are kept but never counted as good, as `cairn forget` does.
    const damage = await readDamage(repo, (message) => logger.warn(message));
    const candidate = (s: (typeof snapshots)[number]) => {
      const lockedUntil = lockDays > 0 ? new Date(Date.parse(s.time) + lockDays * 86_400_000) : undefined;
      return {
        ...retentionCandidate(s, pins, damage),
        ...(lockedUntil && lockedUntil.getTime() > now ? { lockedUntil: lockedUntil.toISOString() } : {}),
      };
    };
    const ofPlan = snapshots.filter((s) => s.plan === undefined || s.plan === plan.id);
    // An `each` plan's hosts are independent sources: the policy keeps each host's own snapshots
    // (its newest good one included), told apart by the instance tag the agent adds (host names
    // may repeat) when the control plane recorded that instance's run made it, or by host name for
    // snapshots made without one. A snapshot claiming an instance unconfirmed is kept, never counted.
    const attested =
      targetsModeOf(plan) === 'each' ? await attestedInstances(storage, await controlSeal(), (message) => logger.warn(message)) : undefined;
    const source = (s: (typeof ofPlan)[number]): string | undefined => (attested ? attestedSource(s, attested) : '');
    const unconfirmed: RetentionDecision[] = ofPlan
      .filter((s) => source(s) === undefined)
      .map((s) => ({
        id: s.id,
        time: s.time,
        keep: true,
        reasons: ['kept, never counted: its instance tag is not confirmed by the control plane'],
      }));
    const counted = ofPlan.filter((s) => source(s) !== undefined);
    const groups = attested ? bySource(counted, (s) => source(s) as string) : [counted];
    const decided = mergeDecisions(groups.map((group) => keepAllIfUnsure(applyPolicy(group.map(candidate), plan.retention), damage)));
    const decision = { keep: mergeDecisions([{ keep: [...decided.keep, ...unconfirmed], remove: [] }]).keep, remove: decided.remove };
    const hostOf = new Map(ofPlan.map((s) => [s.id, s.host]));
    for (const d of decision.remove) {
      lease.assertHeld();
      await storage.delete(snapshotKey(d.id));
      const instance = attested?.get(d.id);
      if (instance !== undefined) await storage.delete(attestationKey(instance, d.id));
    }
    const brief = (d: RetentionDecision): Kept => ({ id: d.id, time: d.time, host: hostOf.get(d.id) ?? '', reasons: d.reasons });
    await recordEvent(repo, who, TOOL, 'forget', {
      planId: plan.id,
      policy: plan.retention,
      removed: decision.remove.map(brief),
      kept: decision.keep.map(brief),
    });

    // A manifest that cannot be read may be a base whose log is still needed: collect no log until every one reads.
    let logs: RetentionOutcome['logs'] = [];
    if (unreadable.length > 0) {
      logger.warn('archived logs not collected: some snapshots cannot be read', { unreadable: unreadable.length });
    } else {
      const collected = await collectLogs(repo, storage, { dryRun: false, assertHeld: () => lease.assertHeld() });
      logs = collected.map((c) => ({ stream: c.stream, filesRemoved: c.filesRemoved, bytesRemoved: c.bytesRemoved }));
      const removed = collected.filter((c) => c.filesRemoved > 0);
      if (removed.length > 0) await recordEvent(repo, who, TOOL, 'logs.collected', { planId: plan.id, streams: removed });
    }

    // Two-phase GC (agent/core/gc-collect.ts): this run's mark is written, its grace waited by the
    // storage's clock, and it is settled:
    // what a manifest committed since the mark uses is kept, the rest leaves the index, and the
    // sweep (one Map item per pack prefix) deletes those packs. The lock only saves wasted work.
    const gcCtx: GcContext = {
      repo,
      storage,
      who,
      concurrency: 8,
      assertHeld: () => lease.assertHeld(),
      warn: (message) => logger.warn(message),
    };
    const grace = graceMs();
    const settlements: Settlement[] = [];
    // A mark left pending by another run (killed, or forged by a host: hosts hold the repository key)
    // is never settled; this run's analysis marks again whatever is still garbage.
    await tidyGenerations(gcCtx, await readGenerations(gcCtx), grace);
    const analysis = await analyzeGarbage(repo, storage, { maxUnused: 1, concurrency: 8 });
    const mark = await markGeneration(gcCtx, analysis, analysis.remove, 'retention');
    if (mark) {
      const state = await waitForGrace(gcCtx, mark.generation, grace, gcClock.wait);
      settlements.push(await settleGenerations(gcCtx, state, grace, [mark]));
    }
    const doomed = [...new Set(settlements.flatMap((s) => s.packs))].sort();
    let gc = empty;
    if (doomed.length > 0) {
      const generation = `${new Date(now).toISOString().replace(/[-:.]/g, '')}-${randomBytes(4).toString('hex')}`;
      const bytes = doomed.reduce((sum, id) => sum + (analysis.packSizes.get(id) ?? 0), 0);
      // Sealed: the sweep deletes only what a list the control plane wrote names (agent/core/gc-work-list.ts).
      await writeWorkList(storage, await controlSeal(), {
        generation,
        planId: plan.id,
        packs: doomed,
        created: new Date(now).toISOString(),
        generations: settlements.flatMap((s) => s.generations),
      });
      gc = { generation, prefixes: [...new Set(doomed.map((id) => id.slice(0, 2)))].sort(), packs: doomed.length, bytes };
    }
    const rescued = settlements.reduce((n, s) => n + s.rescuedPacks.length, 0);
    if (rescued > 0) logger.info('GC kept packs that snapshots committed after the mark use', { rescued });
    await recordEvent(repo, who, TOOL, 'gc.marked', {
      planId: plan.id,
      generation: gc.generation,
      marked: mark?.generation,
      settled: settlements.flatMap((s) => s.generations),
      packs: gc.packs,
      bytes: gc.bytes,
      rescued,
    });
    const newest = snapshots.filter((s) => decision.keep.some((k) => k.id === s.id)).at(-1);
    metrics.addDimension('PlanId', plan.id);
    metrics.addMetric('SnapshotsForgotten', MetricUnit.Count, decision.remove.length);
    if (newest) metrics.addMetric('SnapshotAgeSeconds', MetricUnit.Seconds, Math.max(0, (now - Date.parse(newest.time)) / 1000));
    metrics.addMetric(
      'LogFilesRemoved',
      MetricUnit.Count,
      logs.reduce((n, l) => n + l.filesRemoved, 0),
    );
    return {
      planId: plan.id,
      skipped: false,
      kept: decision.keep.map(brief),
      forgotten: decision.remove.map(brief),
      gc,
      logs,
      graceSeconds: 0,
    };
  } finally {
    await lease.release().catch((error: unknown) => logger.warn('could not release the retention lock', { error }));
  }
}

/** Snapshots grouped by their source, in a stable order. */
function bySource<S>(snapshots: readonly S[], sourceOf: (s: S) => string): S[][] {
  const groups = new Map<string, S[]>();
  for (const s of snapshots) groups.set(sourceOf(s), [...(groups.get(sourceOf(s)) ?? []), s]);
  return [...groups.keys()].sort().map((source) => groups.get(source) ?? []);
}

/** The groups' decisions as one, newest first as applyPolicy orders them. */
function mergeDecisions(results: readonly RetentionResult[]): RetentionResult {
  const order = (a: RetentionDecision, b: RetentionDecision): number => Date.parse(b.time) - Date.parse(a.time) || (a.id < b.id ? 1 : -1);
  return { keep: results.flatMap((r) => r.keep).sort(order), remove: results.flatMap((r) => r.remove).sort(order) };
}

export const handler = handlerOf('apply-retention', applyRetention);
