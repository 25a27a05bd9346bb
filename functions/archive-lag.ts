import { MetricUnit } from '@aws-lambda-powertools/metrics';
import { CairnError, errorMessage } from '../agent/core/errors.ts';
import { LOG_BATCHES_DIR, LOGS_PREFIX, logStreamPrefix } from '../agent/core/layout.ts';
import { newestArchivedEvent } from '../agent/core/log-archive.ts';
import { baseEngines, engineOfStream } from '../agent/core/log-chain.ts';
import { pitrOf, type Plan } from '../agent/core/plan.ts';
import type { Storage } from '../agent/core/storage.ts';
import { handlerOf, loadPlan, logger, metrics, planStorage } from './runtime.ts';

export interface ArchiveLagEvent {
  /** The plans with PITR on (the schedule's input, written by the CDK app). */
  planIds?: unknown;
}

export interface ArchiveLag {
  planId: string;
  stream?: string;
  /** The newest archived event (or archive time of a file with none), from the meta keys alone. */
  newestEvent?: string;
  lagSeconds?: number;
  /** Why no lag was published: the alarm treats missing data as breaching. */
  problem?: string;
}

/**
 * The archive's freshness, every few minutes: for each PITR plan, the newest
 * archived event of its stream, read from the names of the meta objects
 * (`logs/<stream>/meta/<newest event time>-<rand>`): a listing, no object
 * read and no key, so the function needs only s3:ListBucket on the plan's
 * prefix. Publishes ArchiveLagSeconds per plan; a plan with nothing archived
 * publishes nothing, which its alarm counts as breaching.
 */
export async function archiveLag(event: ArchiveLagEvent, now: () => Date = () => new Date()): Promise<ArchiveLag[]> {
  const ids = Array.isArray(event.planIds) ? event.planIds : [];
  if (ids.length === 0)
    throw new CairnError('Cairn.InvalidInput', 'planIds: a list of plan ids is required', {
      hint: 'the archive-lag schedule sends {"planIds": [...]}',
    });
  const results: ArchiveLag[] = [];
  for (const id of ids) {
    let result: ArchiveLag;
    try {
      const plan = await loadPlan(id);
      result = await lagOf(plan, await planStorage(plan), now);
    } catch (error) {
      // One plan's broken repository must not hide the others' lag.
      result = { planId: typeof id === 'string' ? id : String(id), problem: errorMessage(error) };
    }
    if (result.lagSeconds === undefined) {
      logger.warn('archive lag not published', { ...result });
    } else {
      // One metric set per plan (each with its own PlanId), flushed before the next plan's dimension is set.
      metrics.addDimension('PlanId', result.planId);
      metrics.addMetric('ArchiveLagSeconds', MetricUnit.Seconds, result.lagSeconds);
      metrics.publishStoredMetrics();
    }
    results.push(result);
  }
  return results;
}

export async function lagOf(plan: Plan, storage: Storage, now: () => Date): Promise<ArchiveLag> {
  const pitr = pitrOf(plan);
  if (pitr === undefined) return { planId: plan.id, problem: `plan ${plan.id} does not have pitr.enabled` };
  // Listing one stream's meta keys when the plan names it keeps the listing small; otherwise every stream of the engine.
  const prefix = pitr.archiveStream === undefined ? LOGS_PREFIX : `${logStreamPrefix(pitr.archiveStream)}${LOG_BATCHES_DIR}`;
  const newest = await newestArchivedEvent(storage.list(prefix));
  const candidates = [...newest].filter(([stream]) =>
    pitr.archiveStream === undefined ? baseEngines(engineOfStream(stream)).includes(plan.engine) : stream === pitr.archiveStream,
  );
  // Several streams of the engine (a replaced server): the one archiving now is the one that counts.
  const [stream, time] = candidates.sort((a, b) => b[1].localeCompare(a[1]))[0] ?? [];
  if (stream === undefined || time === undefined) {
    return {
      planId: plan.id,
      problem: `nothing is archived in ${storage.location}${pitr.archiveStream ? ` for stream ${pitr.archiveStream}` : ` for ${plan.engine}`} yet`,
    };
  }
  const lagSeconds = Math.max(0, Math.round((now().getTime() - Date.parse(time)) / 1000));
  return { planId: plan.id, stream, newestEvent: time, lagSeconds };
}

export const handler = handlerOf('archive-lag', (event: ArchiveLagEvent) => archiveLag(event));
