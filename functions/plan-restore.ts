import { CairnError } from '../agent/core/errors.ts';
import { readHistory } from '../agent/core/history.ts';
import { encodeRequest, parseOrExplain, restoreInputSchema } from '../agent/core/orchestration.ts';
import { planRestore, type RestorePlan, type Throughput } from '../agent/core/restore-planning.ts';
import { handlerOf, isOnline, loadPlan, onlineInstances, openPlanRepository } from './runtime.ts';

export interface PlannedRestore extends RestorePlan {
  instanceIds: string[];
  /** The agent's request (base64url JSON); absent on a dry run. */
  request?: string;
  heartbeatSeconds: number;
  timeoutSeconds: number;
}

/**
 * First state of the Restore machine, and the whole of a dry run: validates
 * the console input (errors name the field), resolves the snapshot, checks
 * the target host is online and estimates the duration from the repository's
 * own history of restores and backups.
 */
export async function planRestoreHandler(event: unknown): Promise<PlannedRestore> {
  const input = parseOrExplainInput(event);
  const plan = await loadPlan(input.planId);
  const { repo } = await openPlanRepository(plan);
  const { snapshots } = await repo.listSnapshots();
  const ofPlan = snapshots.filter((s) => s.plan === undefined || s.plan === plan.id);
  const throughputs: Throughput[] = [];
  for (const e of await readHistory(repo)) {
    const r = e as Record<string, unknown>;
    if (e.event === 'restore.finished' && typeof r.bytes === 'number' && typeof r.durationMs === 'number') throughputs.push({ kind: 'restore', bytes: r.bytes, durationMs: r.durationMs });
    if (e.event === 'backup.committed' && typeof r.bytesRead === 'number' && typeof r.durationMs === 'number') throughputs.push({ kind: 'backup', bytes: r.bytesRead, durationMs: r.durationMs });
  }
  const planInstances = 'instanceIds' in plan.targets ? plan.targets.instanceIds : await onlineInstances(plan);
  const target = input.targetInstanceId ?? planInstances[0];
  const online = target !== undefined && (await isOnline(target));
  const result = planRestore(input, {
    snapshots: ofPlan.map((s) => ({ id: s.id, time: s.time, host: s.host, engine: s.engine, totalBytes: s.summary.totalBytes })),
    throughputs,
    planInstanceIds: planInstances,
    instanceOnline: () => online,
  });
  const { heartbeatSeconds, timeoutSeconds } = plan.timeouts;
  return {
    ...result,
    instanceIds: [result.targetInstanceId],
    heartbeatSeconds,
    timeoutSeconds,
    ...(result.dryRun
      ? {}
      : {
          request: encodeRequest({
            operation: 'restore',
            planId: plan.id,
            snapshotId: result.snapshot.id,
            ...(result.targetPath !== undefined ? { targetPath: result.targetPath } : {}),
            ...(result.targetDatabase !== undefined ? { targetDatabase: result.targetDatabase } : {}),
            heartbeatSeconds,
          }),
        }),
  };
}

function parseOrExplainInput(event: unknown): ReturnType<typeof restoreInputSchema.parse> {
  try {
    return parseOrExplain(restoreInputSchema, event, 'restore input');
  } catch (error) {
    if (error instanceof CairnError) {
      throw new CairnError('Cairn.InvalidInput', error.message, {
        hint: 'expected {"planId": "...", "snapshot"?: "latest" | "<id>", "pointInTime"?: "<ISO-8601>", "targetInstanceId"?, "targetPath"?, "targetDatabase"?, "dryRun"?: true}',
      });
    }
    throw error;
  }
}

export const handler = handlerOf('plan-restore', planRestoreHandler);
