import { MetricUnit } from '@aws-lambda-powertools/metrics';
import { sweepPrefix } from '../agent/core/collection.ts';
import { readWorkList } from '../agent/core/gc-work-list.ts';
import { CairnError } from '../agent/core/errors.ts';
import { listGenerations } from '../agent/core/gc-generation.ts';
import { controlSeal, handlerOf, loadPlan, logger, metrics, openPlanRepository } from './runtime.ts';

export interface SweepEvent {
  planId?: unknown;
  generation?: unknown;
  prefix?: unknown;
}

/**
 * One item of the GC Map: deletes the doomed packs of one pack prefix (packs/<2 hex>/). Only
 * packs that a sealed GC generation marked and that the generation's settlement confirmed (its
 * `gc/<generation>.swept` record exists: the packs are out of every index and no manifest
 * committed after the mark uses them) are deleted. The work list must carry the control plane's
 * seal (a list anyone else wrote is refused, Cairn.Damaged, and nothing is deleted), and even a
 * sealed one only narrows what the settled generations allow.
 */
export async function gcSweep(event: SweepEvent): Promise<{ prefix: string; deleted: number; bytes: number }> {
  const plan = await loadPlan(event.planId);
  if (typeof event.generation !== 'string' || typeof event.prefix !== 'string') {
    throw new CairnError('Cairn.InvalidInput', 'generation and prefix: required (this state is fed by apply-retention)');
  }
  const { repo, storage } = await openPlanRepository(plan);
  const collection = await readWorkList(storage, await controlSeal(), event.generation);
  const settled = (await listGenerations(repo, (message) => logger.warn(message))).filter(
    (g) => g.swept !== undefined && (collection.generations ?? []).includes(g.generation),
  );
  const marked = new Set(settled.flatMap((g) => g.packs));
  const result = await sweepPrefix(storage, collection, event.prefix, marked);
  metrics.addDimension('PlanId', plan.id);
  metrics.addMetric('BytesFreed', MetricUnit.Bytes, result.bytes);
  return { prefix: event.prefix, ...result };
}

export const handler = handlerOf('gc-sweep', gcSweep);
