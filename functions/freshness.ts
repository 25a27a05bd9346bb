import { MetricUnit } from '@aws-lambda-powertools/metrics';
import { CairnError, errorMessage } from '../agent/core/errors.ts';
import { targetsModeOf, type Plan } from '../agent/core/plan.ts';
import type { Repository } from '../agent/core/repository.ts';
import { readDamage, type KnownDamage } from '../agent/core/damage.ts';
import { INSTANCE_TAG_PREFIX, sourceOf, type Snapshot } from '../agent/core/snapshot.ts';
import { attestedInstances, attestedSource } from './snapshot-attestations.ts';
import { handlerOf, loadPlan, logger, metrics, openPlanRepository } from './runtime.ts';

export interface FreshnessEvent {
  /** Every plan of the environment (the freshness schedule's input, written by the CDK app). */
  planIds?: unknown;
}

export interface Freshness {
  planId: string;
  /** The newest good snapshot: neither tagged damaged nor partial. */
  newest?: { id: string; time: string };
  ageSeconds?: number;
  /** Why no age was published: the freshness alarm treats missing data as breaching. */
  problem?: string;
  /**
   * A `targets.mode: each` plan: each host's newest good snapshot, published with the Host
   * dimension; the plan's own age (what its alarm watches) is then the oldest host's.
   */
  hosts?: HostFreshness[];
}

export interface HostFreshness {
  /** The host name its snapshots carry. */
  host: string;
  /** The instance that made them (their instance tag), when they say: host names may repeat, so it is the Host dimension then. */
  instanceId?: string;
  newest?: { id: string; time: string };
  ageSeconds?: number;
  problem?: string;
}

/** The metric the freshness alarm watches (cdk/lib/cairn-monitoring.ts); only this function emits it. */
export const NEWEST_GOOD_BACKUP_AGE = 'NewestGoodBackupAgeSeconds';

/**
 * On its own schedule (every 15 minutes, docs/cdk.md "Schedules and alarms"): for each plan, the age
 * of its newest good snapshot, published as NewestGoodBackupAgeSeconds. Measured from the
 * repository, not from the last backup run, so the alarm means "the newest good backup is older
 * than the RPO" whether backups fail, stop being scheduled, or succeed only partially. A plan
 * with no good snapshot, or whose repository cannot be read, publishes nothing, which the alarm
 * counts as breaching.
 */
export async function freshness(event: FreshnessEvent, now: () => Date = () => new Date()): Promise<Freshness[]> {
  const ids = Array.isArray(event.planIds) ? event.planIds : [];
  if (ids.length === 0)
    throw new CairnError('Cairn.InvalidInput', 'planIds: a list of plan ids is required', {
      hint: 'the freshness schedule sends {"planIds": [...]}',
    });
  const results: Freshness[] = [];
  for (const id of ids) {
    let result: Freshness;
    try {
      const plan = await loadPlan(id);
      const { repo } = await openPlanRepository(plan);
      result = await freshnessOf(plan, repo, now());
    } catch (error) {
      // One plan's broken repository must not hide the others' age.
      result = { planId: typeof id === 'string' ? id : String(id), problem: errorMessage(error) };
    }
    for (const host of result.hosts ?? []) {
      if (host.ageSeconds === undefined) continue;
      // One dimension set {PlanId, Host} (addDimensions would add a set of its own beside {PlanId}, and a host's
      // datum under {PlanId} alone would let the freshest host hide a stale one from the plan's alarm).
      metrics.addDimension('PlanId', result.planId);
      metrics.addDimension('Host', host.instanceId ?? host.host);
      metrics.addMetric(NEWEST_GOOD_BACKUP_AGE, MetricUnit.Seconds, host.ageSeconds);
      metrics.publishStoredMetrics();
    }
    if (result.ageSeconds === undefined) {
      logger.warn('backup age not published', { ...result });
    } else {
      metrics.addDimension('PlanId', result.planId);
      metrics.addMetric(NEWEST_GOOD_BACKUP_AGE, MetricUnit.Seconds, result.ageSeconds);
      metrics.publishStoredMetrics();
    }
    results.push(result);
  }
  return results;
}

/**
 * The newest snapshot of the plan that is neither damaged nor partial, and its age at `at`. For an
 * `each` plan, per host (as its manifests name it): the plan's age is the oldest host's, and a host
 * with snapshots but none good leaves the plan without an age (the alarm fires).
 */
export async function freshnessOf(plan: Plan, repo: Repository, at: Date): Promise<Freshness> {
  const { snapshots } = await repo.listSnapshots();
  // A snapshot a damage marker names is not good either (verify or a drill found its data damaged).
  const damage = await readDamage(repo, (message) => logger.warn(message));
  const ofPlan = snapshots.filter((s) => s.plan === undefined || s.plan === plan.id);
  const newestGood = (of: ReadonlyArray<Snapshot & { id: string }>, what: string) => newestGoodOf(of, damage, at, what);
  if (targetsModeOf(plan) !== 'each') return { planId: plan.id, ...newestGood(ofPlan, `plan ${plan.id}`) };
  // One group per source: the instance tag the orchestrated agent adds, else the host name (as retention groups).
  // Only a snapshot the control plane recorded as that instance's run's counts as its freshness (read without the
  // seal key: hosts may not write where the records are); one claiming it unconfirmed counts for nothing.
  const attested = await attestedInstances(repo.storage);
  const confirmed = (s: Snapshot): boolean => attestedSource(s, attested) !== undefined;
  // Grouped by what they claim, so an instance with only unconfirmed snapshots is still watched (and stale).
  const hosts = [...new Set(ofPlan.map(sourceOf))].sort().map((source): HostFreshness => {
    const claimed = ofPlan.filter((s) => sourceOf(s) === source);
    const own = claimed.filter(confirmed);
    const host = (own.at(-1) ?? claimed.at(-1))?.host ?? '';
    const instanceId = source.startsWith(INSTANCE_TAG_PREFIX) ? source.slice(INSTANCE_TAG_PREFIX.length) : undefined;
    return {
      host,
      ...(instanceId !== undefined ? { instanceId } : {}),
      ...newestGood(own, `host ${host}${instanceId !== undefined ? ` (${instanceId})` : ''} of plan ${plan.id}`),
    };
  });
  if (hosts.length === 0) return { planId: plan.id, problem: `plan ${plan.id} has no good snapshot yet`, hosts };
  const stale = hosts.find((h) => h.ageSeconds === undefined);
  if (stale) return { planId: plan.id, problem: stale.problem ?? `host ${stale.host} has no good snapshot`, hosts };
  const oldest = hosts.reduce((a, h) => ((h.ageSeconds ?? 0) > (a.ageSeconds ?? 0) ? h : a));
  return { planId: plan.id, ...(oldest.newest ? { newest: oldest.newest } : {}), ageSeconds: oldest.ageSeconds ?? 0, hosts };
}

function newestGoodOf(
  snapshots: ReadonlyArray<Snapshot & { id: string }>,
  damage: KnownDamage,
  at: Date,
  what: string,
): { newest?: { id: string; time: string }; ageSeconds?: number; problem?: string } {
  const good = snapshots.filter((s) => damage.notGood(s) === undefined);
  const newest = good.reduce<(typeof good)[number] | undefined>((a, s) => (a === undefined || s.time > a.time ? s : a), undefined);
  if (newest === undefined) return { problem: `${what} has no good snapshot yet` };
  return { newest: { id: newest.id, time: newest.time }, ageSeconds: Math.max(0, (at.getTime() - Date.parse(newest.time)) / 1000) };
}

export const handler = handlerOf('freshness', freshness);
