import { MetricUnit } from '@aws-lambda-powertools/metrics';
import { CairnError } from '../agent/core/errors.ts';
import { encodeRequest } from '../agent/core/orchestration.ts';
import { targetsModeOf, type Plan, type TargetsMode } from '../agent/core/plan.ts';
import { acquireRunLease, type LeaseDecision, type RecordSeal } from '../agent/core/run-lease.ts';
import type { DeletableStorage } from '../agent/core/storage.ts';
import { hostRecordsSeal, hostRecordsStorage } from './host-records.ts';
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
  /** `any`: RunAgent on instanceIds; `each`: the BackupHosts Map over `hosts`. */
  mode: TargetsMode;
  runId?: string;
  instanceIds: string[];
  request?: string;
  heartbeatSeconds: number;
  timeoutSeconds: number;
  /** `each`: one item per host whose lease this run holds, each backed up on its own (empty for `any`). */
  hosts: PlannedHost[];
  /** `each`: hosts skipped because their own lease is held or their scheduled time already ran. */
  skippedHosts: Array<{ instanceId: string; reason: string }>;
}

/** One BackupHosts Map item: what RunAgent, FinalizeHostBackup and RecordHostFailure need for the host. */
export interface PlannedHost {
  planId: string;
  executionId: string;
  instanceId: string;
  instanceIds: [string];
  runId: string;
  request: string;
  heartbeatSeconds: number;
  timeoutSeconds: number;
}

/** The lease outlives the agent's own timeout by the time finalize and retention may take. */
const LEASE_MARGIN_SECONDS = 30 * 60;

/**
 * First state of the Backup machine: loads the plan, skips the run (with the
 * reason in the execution's output) when another run of the plan holds the
 * lease or this scheduled time already ran, and otherwise hands the agent its
 * request. A plan with `targets.mode: each` gets one request per online host,
 * each under that host's own lease (the BackupHosts Map runs them); a plan
 * with `any` (the default) runs on the first online host.
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
  const storage = await planStorage(plan);
  const seal = await controlSeal();
  const lease = { planId: plan.id, executionId, scheduledTime, leaseSeconds: timeoutSeconds + LEASE_MARGIN_SECONDS };
  const requestFor = (runId: string): string =>
    encodeRequest({
      operation: 'backup',
      planId: plan.id,
      runId,
      ...(scheduledTime ? { scheduledTime: new Date(scheduledTime).toISOString() } : {}),
      heartbeatSeconds,
    });

  if (targetsModeOf(plan) === 'each') {
    // Every matching host is its own source: its own lease, so a host still busy skips only itself.
    const hosts: PlannedHost[] = [];
    const skippedHosts: PlannedRun['skippedHosts'] = [];
    for (const instanceId of instances) {
      const decision = await takeLease(plan, hostRecordsStorage(storage, instanceId), hostRecordsSeal(seal, instanceId), {
        ...lease,
        host: instanceId,
      });
      if (!decision.acquired) {
        skippedHosts.push({ instanceId, reason: decision.reason });
        continue;
      }
      const runId = `${decision.lease.runId}#${instanceId}`;
      hosts.push({ ...base, instanceId, instanceIds: [instanceId], runId, request: requestFor(runId) });
    }
    const instanceIds = hosts.map((h) => h.instanceId);
    if (hosts.length === 0) {
      const reason = skippedHosts.map((h) => `${h.instanceId}: ${h.reason}`).join('; ');
      return { ...base, mode: 'each', skip: true, reason, instanceIds, hosts, skippedHosts };
    }
    return { ...base, mode: 'each', skip: false, instanceIds, hosts, skippedHosts };
  }

  const decision = await takeLease(plan, storage, seal, lease);
  if (!decision.acquired)
    return { ...base, mode: 'any', skip: true, reason: decision.reason, instanceIds: [], hosts: [], skippedHosts: [] };
  const runId = decision.lease.runId;
  return {
    ...base,
    mode: 'any',
    skip: false,
    runId,
    instanceIds: [instances[0] as string],
    request: requestFor(runId),
    hosts: [],
    skippedHosts: [],
  };
}

/** The run lease (the plan's, or one host's through its records view), with forged records and skips logged and counted. */
async function takeLease(
  plan: Plan,
  storage: DeletableStorage,
  seal: RecordSeal,
  request: Parameters<typeof acquireRunLease>[1] & { host?: string },
): Promise<LeaseDecision> {
  const { host, ...lease } = request;
  const where = { planId: plan.id, ...(host ? { host } : {}) };
  const decision = await acquireRunLease(storage, lease, seal);
  if (decision.forged) {
    // Someone other than the control plane wrote these (a host is denied orchestration/*): ignored and replaced.
    logger.error('ignored control records that the control plane did not seal', { ...where, forged: decision.forged });
    metrics.addDimension('PlanId', plan.id);
    metrics.addMetric('ForgedControlRecord', MetricUnit.Count, decision.forged.length);
  }
  if (!decision.acquired) {
    logger.warn('backup skipped', { ...where, reason: decision.reason });
    metrics.addDimension('PlanId', plan.id);
    metrics.addMetric('BackupSkipped', MetricUnit.Count, 1);
  } else if (decision.tookOver) {
    logger.warn('took over the lease of a run that crashed', { ...where, stale: decision.tookOver });
  }
  return decision;
}

export const handler = handlerOf('plan-backup', planBackup);
