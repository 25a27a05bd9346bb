import { MetricUnit } from '@aws-lambda-powertools/metrics';
import { readCollection, sweepPrefix } from '../agent/core/collection.ts';
import { CairnError } from '../agent/core/errors.ts';
import { handlerOf, loadPlan, metrics, planStorage } from './runtime.ts';

export interface SweepEvent {
  planId?: unknown;
  generation?: unknown;
  prefix?: unknown;
}

/** One item of the GC Map: deletes the doomed packs of one pack prefix (packs/<2 hex>/). */
export async function gcSweep(event: SweepEvent): Promise<{ prefix: string; deleted: number; bytes: number }> {
  const plan = await loadPlan(event.planId);
  if (typeof event.generation !== 'string' || typeof event.prefix !== 'string') {
    throw new CairnError('Cairn.InvalidInput', 'generation and prefix: required (this state is fed by apply-retention)');
  }
  const storage = await planStorage(plan);
  const result = await sweepPrefix(storage, await readCollection(storage, event.generation), event.prefix);
  metrics.addDimension('PlanId', plan.id);
  metrics.addMetric('BytesFreed', MetricUnit.Bytes, result.bytes);
  return { prefix: event.prefix, ...result };
}

export const handler = handlerOf('gc-sweep', gcSweep);
