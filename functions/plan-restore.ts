import { describeReplay, measuredThroughputs, planPointInTime } from '../agent/core/pitr-planning.ts';
import { engineCatalog } from '../agent/core/engine-options/catalog.ts';
import { CairnError } from '../agent/core/errors.ts';
import { encodeRequest, parseOrExplain, restoreInputSchema, type RestoreInput } from '../agent/core/orchestration.ts';
import { pitrOf, type Plan } from '../agent/core/plan.ts';
import type { Repository } from '../agent/core/repository.ts';
import { planRestore, type PlannedReplay, type RestorePlan, type Throughput } from '../agent/core/restore-planning.ts';
import { handlerOf, isOnline, loadPlan, onlineInstances, openPlanRepository } from './runtime.ts';
import { markedDamaged } from '../agent/core/snapshot.ts';

export interface PlannedRestore extends RestorePlan {
  instanceIds: string[];
  /** The agent's request (base64url JSON); absent on a dry run. */
  request?: string;
  heartbeatSeconds: number;
  timeoutSeconds: number;
}

/**
 * First state of the Restore machine, and the whole of a dry run: validates
 * the console input (errors name the field), resolves the snapshot (for a
 * pointInTime on a plan with a log archive: the base snapshot and the log to
 * replay, as `cairn restore --to-time --dry-run` plans them), checks the
 * target host is online and estimates the duration from the repository's own
 * history of restores and backups.
 */
export async function planRestoreHandler(event: unknown): Promise<PlannedRestore> {
  const input = parseOrExplainInput(event);
  const plan = await loadPlan(input.planId);
  requireTarget(input, plan);
  const { repo } = await openPlanRepository(plan);
  const planInstanceIds = 'instanceIds' in plan.targets ? plan.targets.instanceIds : await onlineInstances(plan);
  const target = input.targetInstanceId ?? planInstanceIds[0];
  const online = target !== undefined && (await isOnline(target));
  return planRestoreFor(input, plan, repo, { planInstanceIds, online });
}

/** The plan for a validated input against the plan's opened repository, the target's state given. */
export async function planRestoreFor(
  input: RestoreInput,
  plan: Plan,
  repo: Repository,
  hosts: { planInstanceIds: string[]; online: boolean },
): Promise<PlannedRestore> {
  const { snapshots } = await repo.listSnapshots();
  const ofPlan = snapshots.filter((s) => (s.plan === undefined || s.plan === plan.id) && !markedDamaged(s));
  const throughputs = await measuredThroughputs(repo);
  const result = planRestore(input, {
    snapshots: ofPlan.map((s) => ({ id: s.id, time: s.time, host: s.host, engine: s.engine, totalBytes: s.summary.totalBytes })),
    throughputs,
    planInstanceIds: hosts.planInstanceIds,
    instanceOnline: () => hosts.online,
    replay: await replayFor(input, plan, repo, throughputs),
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
            ...(result.logRange && input.pointInTime !== undefined
              ? { pointInTime: new Date(input.pointInTime).toISOString(), stream: result.logRange.stream }
              : {}),
            heartbeatSeconds,
          }),
        }),
  };
}

/**
 * The replay for a pointInTime on a plan with PITR on. A target no window
 * reaches is refused (Cairn.NotFound naming the gap and the nearest
 * recoverable times); an ambiguous or impossible target is the input's fault.
 */
async function replayFor(
  input: RestoreInput,
  plan: Plan,
  repo: Repository,
  throughputs: readonly Throughput[],
): Promise<PlannedReplay | undefined> {
  const pitr = pitrOf(plan);
  if (input.pointInTime === undefined || pitr === undefined) return undefined;
  try {
    const target = { time: new Date(input.pointInTime).toISOString() };
    const planned = await planPointInTime(repo, { target, stream: pitr.archiveStream, engine: plan.engine, plan: plan.id });
    return describeReplay(planned.plan, planned.snapshot, throughputs);
  } catch (error) {
    if (error instanceof CairnError && error.code === 'Cairn.Usage') {
      throw new CairnError('Cairn.InvalidInput', `plan ${plan.id}, pointInTime ${input.pointInTime}: ${error.message}`, {
        hint: /several log archives/.test(error.message) ? "name the stream in the plan's pitr.archiveStream" : error.hint,
        cause: error,
      });
    }
    if (error instanceof CairnError && error.code === 'Cairn.NotFound') {
      throw new CairnError('Cairn.NotFound', `plan ${plan.id}: ${error.message}`, {
        hint: `${error.hint ?? ''}${error.hint ? '; ' : ''}to restore a snapshot instead, give "snapshot" in place of "pointInTime"`,
        cause: error,
      });
    }
    throw error;
  }
}

/**
 * An engine that restores into a directory (files, postgres, mariadb, etcd: the physical kind; a
 * logical engine loads into its server) needs targetPath; without it the agent would fail on the host after the plan and a
 * dry run had passed, so it is refused here, at the first state, naming the field. A dry run too:
 * it is what the console shows before the real run.
 */
function requireTarget(input: RestoreInput, plan: Plan): void {
  if (input.targetPath !== undefined) return;
  if (engineCatalog.get(plan.engine)?.capabilities.kind !== 'physical') return;
  throw new CairnError('Cairn.InvalidInput', `targetPath: required, plan ${plan.id} (${plan.engine}) restores into a directory`, {
    hint: 'give "targetPath": an absolute directory on the target host (an empty one, or a new path); the restore never writes into the live data directory',
  });
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
