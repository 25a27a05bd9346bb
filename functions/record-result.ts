import { MetricUnit } from '@aws-lambda-powertools/metrics';
import { recordEvent } from '../agent/core/history.ts';
import { runSummarySchema } from '../agent/core/orchestration.ts';
import { ORCHESTRATION_PREFIX } from '../agent/core/layout.ts';
import { targetsModeOf, type Plan } from '../agent/core/plan.ts';
import { releaseRunLease } from '../agent/core/run-lease.ts';
import type { DeletableStorage } from '../agent/core/storage.ts';
import { hostLeaseKey, hostRecordsSeal, isInstanceId, hostRecordsStorage } from './host-records.ts';
import { TOOL } from '../agent/core/version.ts';
import { controlPlaneWho, controlSeal, handlerOf, loadPlan, logger, metrics, openPlanRepository } from './runtime.ts';

export interface RecordEvent {
  planId?: unknown;
  operation?: unknown;
  executionId?: unknown;
  /** RecordHostFailure (an `each` plan's BackupHosts item): the host whose backup failed, whose lease is given back. */
  instanceId?: unknown;
  /** Absent on success; the Catch's `$.error` ({Error, Cause}) on failure. */
  error?: { Error?: unknown; Cause?: unknown };
  summary?: unknown;
}

export interface Recorded {
  planId: string;
  operation: string;
  outcome: 'success' | 'failure';
  error?: string;
  cause?: string;
  metrics: string[];
}

const OPERATIONS = new Set(['backup', 'restore', 'verify', 'drill', 'retention']);

/**
 * Last state of every machine: the outcome goes to the repository history
 * (the audit trail beside the execution history) and to metrics the alarms
 * watch; a failed backup also gives its run lease back. Recording must not
 * hide the original failure, so a history write that fails is only logged.
 */
export async function recordResult(event: RecordEvent): Promise<Recorded> {
  const operation = typeof event.operation === 'string' && OPERATIONS.has(event.operation) ? event.operation : 'backup';
  const failed = event.error !== undefined && event.error !== null;
  const error = failed ? (typeof event.error?.Error === 'string' ? event.error.Error : 'Cairn.Failure') : undefined;
  const cause = failed ? causeText(event.error?.Cause) : undefined;
  const planId = typeof event.planId === 'string' ? event.planId : 'unknown';
  const instanceId = typeof event.instanceId === 'string' ? event.instanceId : undefined;
  const emitted: string[] = [];
  const Op = `${operation[0]?.toUpperCase() ?? ''}${operation.slice(1)}`;
  metrics.addDimension('PlanId', planId);
  if (failed) {
    emitted.push(`${Op}Failed`);
    if (error === 'States.HeartbeatTimeout') emitted.push('AgentHeartbeatTimeout');
  } else {
    emitted.push(`${Op}Succeeded`);
    // A drill that ran to the end can still find the restored data wrong: its summary says drill.ok false.
    if (operation === 'drill' && drillFailed(event.summary)) emitted.push('DrillFailed');
  }
  for (const name of emitted) metrics.addMetric(name, MetricUnit.Count, 1);

  try {
    const plan = await loadPlan(event.planId);
    const { repo, storage } = await openPlanRepository(plan);
    await recordEvent(repo, controlPlaneWho('record'), TOOL, `orchestration.${operation}.${failed ? 'failed' : 'succeeded'}`, {
      planId: plan.id,
      executionId: event.executionId,
      ...(instanceId ? { instanceId } : {}),
      ...(failed ? { code: error, message: cause } : { summary: event.summary }),
    });
    if (operation === 'backup' && typeof event.executionId === 'string') await releaseLeases(plan, storage, event.executionId, instanceId);
  } catch (recordError) {
    logger.error('could not record the outcome in the repository history', { planId, operation, error: recordError });
  }
  if (failed) logger.error(`${operation} failed`, { planId, ...(instanceId ? { instanceId } : {}), error, cause });
  return { planId, operation, outcome: failed ? 'failure' : 'success', ...(failed ? { error, cause } : {}), metrics: emitted };
}

/**
 * Gives back what this execution holds: the plan's run lease, or for an `each` plan one host's
 * (RecordHostFailure names it) or, when the whole execution failed, every host lease it holds.
 */
async function releaseLeases(plan: Plan, storage: DeletableStorage, executionId: string, instanceId: string | undefined): Promise<void> {
  const seal = await controlSeal();
  if (instanceId !== undefined) {
    await releaseRunLease(hostRecordsStorage(storage, instanceId), executionId, hostRecordsSeal(seal, instanceId));
    return;
  }
  await releaseRunLease(storage, executionId, seal);
  if (targetsModeOf(plan) !== 'each') return;
  const hostsPrefix = `${ORCHESTRATION_PREFIX}hosts/`;
  for await (const info of storage.list(hostsPrefix)) {
    const host = info.key.slice(hostsPrefix.length).split('/')[0] ?? '';
    // releaseRunLease removes a lease only when this execution holds it.
    if (isInstanceId(host) && info.key === hostLeaseKey(host))
      await releaseRunLease(hostRecordsStorage(storage, host), executionId, hostRecordsSeal(seal, host));
  }
}

function drillFailed(summary: unknown): boolean {
  const parsed = runSummarySchema.safeParse(summary);
  return parsed.success && parsed.data.drill?.ok === false;
}

/** A Lambda failure's Cause is JSON ({errorMessage, errorType, ...}); an agent's is its message. */
function causeText(cause: unknown): string {
  if (typeof cause !== 'string') return cause === undefined ? '' : JSON.stringify(cause);
  try {
    const parsed = JSON.parse(cause) as { errorMessage?: unknown };
    if (typeof parsed.errorMessage === 'string') return parsed.errorMessage;
  } catch {
    // plain text
  }
  return cause;
}

export const handler = handlerOf('record-result', recordResult);
