import { MetricUnit } from '@aws-lambda-powertools/metrics';
import { CairnError } from '../agent/core/errors.ts';
import { encodeRequest } from '../agent/core/orchestration.ts';
import { acquireRunLease } from '../agent/core/run-lease.ts';
import { controlSeal, handlerOf, loadPlan, logger, metrics, onlineInstances, planStorage } from './runtime.ts';

export interface PlanBackupEvent {
  planId?: unknown;
  /** The execution's input ({planId, scheduledTime}) as the state machine passes it. */
  input?: { scheduledTime?: unknown };
  scheduledTime?: unknown;
  executionId?: unknown;
}

export interface PlannedRun {
  skip: boolean;
  reason?: string;
  planId: string;
  /** The execution holding the lease: finalize and record-failure give it back. */
  executionId: string;
  runId?: string;
  instanceIds: string[];
  request?: string;
  heartbeatSeconds: number;
  timeoutSeconds: number;
}

/** The lease outlives the agent's own timeout by the time finalize and retention may take. */
const LEASE_MARGIN_SECONDS = 30 * 60;

/**
 * First state of the Backup machine: loads the plan, skips the run (with the
 * reason in the execution's output) when another run of the plan holds the
 * lease or this scheduled time already ran, and otherwise hands the agent its
 * request.
 */
export async function planBackup(event: PlanBackupEvent): Promise<PlannedRun> {
  const plan = await loadPlan(event.planId);
  const executionId = typeof event.executionId === 'string' && event.executionId !== '' ? event.executionId : `manual-${Date.now()}`;
  const rawTime = event.scheduledTime ?? event.input?.scheduledTime;
  const scheduledTime = typeof rawTime === 'string' && rawTime !== '' ? rawTime : undefined;
  if (scheduledTime !== undefined && Number.isNaN(Date.parse(scheduledTime))) {
    throw new CairnError('Cairn.InvalidInput', `scheduledTime: ${JSON.stringify(scheduledTime)} is not a time`, {
      hint: 'the schedule passes <aws.scheduler.scheduled-time>',
    });
  }
  const { heartbeatSeconds, timeoutSeconds } = plan.timeouts;
  const base = { planId: plan.id, executionId, heartbeatSeconds, timeoutSeconds };

  const instances = await onlineInstances(plan);
  if (instances.length === 0) {
    throw new CairnError('Cairn.InvalidInput', `no host of plan ${plan.id} is online in Systems Manager`, {
      hint: 'check the instances and their SSM agent',
    });
  }
  const decision = await acquireRunLease(
    await planStorage(plan),
    { planId: plan.id, executionId, scheduledTime, leaseSeconds: timeoutSeconds + LEASE_MARGIN_SECONDS },
    await controlSeal(),
  );
  if (decision.forged) {
    // Someone other than the control plane wrote these (a host is denied orchestration/*): ignored and replaced.
    logger.error('ignored control records that the control plane did not seal', { planId: plan.id, forged: decision.forged });
    metrics.addDimension('PlanId', plan.id);
    metrics.addMetric('ForgedControlRecord', MetricUnit.Count, decision.forged.length);
  }
  if (!decision.acquired) {
    logger.warn('backup skipped', { planId: plan.id, reason: decision.reason });
    metrics.addDimension('PlanId', plan.id);
    metrics.addMetric('BackupSkipped', MetricUnit.Count, 1);
    return { ...base, skip: true, reason: decision.reason, instanceIds: [] };
  }
  if (decision.tookOver) logger.warn('took over the lease of a run that crashed', { planId: plan.id, stale: decision.tookOver });
  const runId = decision.lease.runId;
  const instanceIds = [instances[0] as string];
  return {
    ...base,
    skip: false,
    runId,
    instanceIds,
    request: encodeRequest({
      operation: 'backup',
      planId: plan.id,
      runId,
      ...(scheduledTime ? { scheduledTime: new Date(scheduledTime).toISOString() } : {}),
      heartbeatSeconds,
    }),
  };
}

export const handler = handlerOf('plan-backup', planBackup);
