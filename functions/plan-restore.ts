import { describeReplay, measuredThroughputs, planPointInTime } from '../agent/core/pitr-planning.ts';
import { engineCatalog } from '../agent/core/engine-options/catalog.ts';
import { CairnError } from '../agent/core/errors.ts';
import { encodeRequest, parseOrExplain, restoreInputSchema, type RestoreInput } from '../agent/core/orchestration.ts';
import { pitrOf, targetsModeOf, type Plan } from '../agent/core/plan.ts';
import { DescribeInstanceInformationCommand } from '@aws-sdk/client-ssm';
import type { Repository } from '../agent/core/repository.ts';
import { planRestore, type PlannedReplay, type RestorePlan, type Throughput } from '../agent/core/restore-planning.ts';
import { handlerOf, isOnline, loadPlan, onlineInstances, openPlanRepository, ssmClient } from './runtime.ts';
import { readDamage } from '../agent/core/damage.ts';
import { INSTANCE_TAG_PREFIX, sourceOf, type Snapshot } from '../agent/core/snapshot.ts';
import { INSTANCE_ID_PATTERN } from '../agent/core/plan-fields.ts';
import { attestedInstances, attestedSource } from './snapshot-attestations.ts';

export interface PlannedRestore extends RestorePlan {
  instanceIds: string[];
  /** The host whose snapshots the restore chose from (required for an `each` plan). */
  sourceHost?: string;
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
  const sourceHost = input.sourceHost;
  const plan = await loadPlan(input.planId);
  requireTarget(input, plan);
  requireSourceHost(sourceHost, plan);
  const { repo } = await openPlanRepository(plan);
  const planInstanceIds = 'instanceIds' in plan.targets ? plan.targets.instanceIds : await onlineInstances(plan);
  const each = targetsModeOf(plan) === 'each';
  // A source given as an instance id (host names may repeat) is also the default target.
  const sourceInstance = sourceHost !== undefined && INSTANCE_ID_PATTERN.test(sourceHost) ? sourceHost : undefined;
  // A source given as a host name: the instance Systems Manager knows by it (the snapshots' own host names are their writers' claim).
  const namedInstance =
    each && sourceHost !== undefined && sourceInstance === undefined ? await instanceNamed(plan, sourceHost) : undefined;
  const target = input.targetInstanceId ?? (each && sourceHost !== undefined ? (sourceInstance ?? namedInstance) : planInstanceIds[0]);
  if (target === undefined && each)
    throw new CairnError(
      'Cairn.InvalidInput',
      `targetInstanceId: required, no single instance of plan ${plan.id} is named ${sourceHost ?? ''}`,
      {
        hint: 'give "targetInstanceId": the instance to restore onto (Systems Manager knows each instance\'s host name as its ComputerName)',
      },
    );
  const online = target !== undefined && (await isOnline(target));
  return planRestoreFor({ ...input, ...(target !== undefined ? { targetInstanceId: target } : {}) }, plan, repo, {
    planInstanceIds,
    online,
    namedInstance,
  });
}

/** The plan for a validated input against the plan's opened repository, the target's state given. */
export async function planRestoreFor(
  input: RestoreInput,
  plan: Plan,
  repo: Repository,
  hosts: { planInstanceIds: string[]; online: boolean; namedInstance?: string | undefined },
): Promise<PlannedRestore> {
  const { snapshots } = await repo.listSnapshots();
  const sourceHost = input.sourceHost;
  // An `each` plan: a snapshot counts for the instance its tag names only when the control plane recorded that
  // instance's run made it (snapshot-attestations.ts; read without the seal key, which this function does not hold:
  // hosts may not write where the records are). One that claims an unconfirmed instance is nobody's.
  const attested = sourceHost !== undefined && targetsModeOf(plan) === 'each' ? await attestedInstances(repo.storage) : undefined;
  const sourceOfSnapshot = (s: Snapshot): string | undefined => (attested ? attestedSource(s, attested) : sourceOf(s));
  const fromSource = (s: Snapshot): boolean => {
    if (sourceHost === undefined) return true;
    const source = sourceOfSnapshot(s);
    if (source === undefined) return false;
    if (INSTANCE_ID_PATTERN.test(sourceHost)) return source === `${INSTANCE_TAG_PREFIX}${sourceHost}`;
    // By name, in an `each` plan whose instances Systems Manager knows by that name: that instance's recorded
    // snapshots only (a host can put any name in its manifests, with or without an instance tag). A name it does
    // not know goes by the manifests' names, refused below when they are of more than one source.
    if (attested && hosts.namedInstance !== undefined) return source === `${INSTANCE_TAG_PREFIX}${hosts.namedInstance}`;
    return s.host === sourceHost;
  };
  // Damaged snapshots stay candidates, with why (markers and the damaged tag, as the CLI's latest reads them):
  // latest passes over them naming each, and an id still restores one, with a warning (core/snapshot-choice.ts).
  const markerWarnings: string[] = [];
  const damage = await readDamage(repo, (message) => markerWarnings.push(message));
  const ofPlan = snapshots.filter((s) => (s.plan === undefined || s.plan === plan.id) && fromSource(s));
  // A host name can stand for more than one source (names repeat, and a host with the key can write a manifest
  // under any name without an instance tag): an instance's confirmed snapshots and others under the same name,
  // or several instances, are never a guess.
  const sources = [...new Set(ofPlan.map(sourceOfSnapshot))].sort();
  if (sourceHost !== undefined && !INSTANCE_ID_PATTERN.test(sourceHost) && attested && sources.length > 1)
    throw new CairnError(
      'Cairn.InvalidInput',
      `sourceHost: ${JSON.stringify(sourceHost)} names snapshots of more than one source of plan ${plan.id} (${sources.map((source) => source?.replace(/^instance:/, 'instance ').replace(/^host:/, 'untagged, host ')).join('; ')})`,
      { hint: 'give the instance id as sourceHost, or a snapshot id' },
    );
  if (sourceHost !== undefined && ofPlan.length === 0) {
    const known = [...new Set(snapshots.filter((s) => s.plan === undefined || s.plan === plan.id).map((s) => s.host))].sort();
    throw new CairnError('Cairn.NotFound', `sourceHost: plan ${plan.id} has no good snapshot of host ${JSON.stringify(sourceHost)}`, {
      hint: known.length > 0 ? `its snapshots are of ${known.join(', ')}` : 'the plan has no snapshot yet',
    });
  }
  const throughputs = await measuredThroughputs(repo);
  const result = planRestore(input, {
    snapshots: ofPlan.map((s) => ({
      id: s.id,
      time: s.time,
      host: s.host,
      engine: s.engine,
      totalBytes: s.summary.totalBytes,
      damaged: damage.damagedReason(s),
    })),
    throughputs,
    planInstanceIds: hosts.planInstanceIds,
    instanceOnline: () => hosts.online,
    replay: await replayFor(input, plan, repo, throughputs),
  });
  const { heartbeatSeconds, timeoutSeconds } = plan.timeouts;
  return {
    ...result,
    warnings: [...markerWarnings, ...result.warnings],
    ...(sourceHost !== undefined ? { sourceHost } : {}),
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

/**
 * An `each` plan's hosts are independent sources, so "latest" means nothing until the input says
 * whose: refused at this first state, naming the field, like a missing targetPath.
 */
function requireSourceHost(sourceHost: string | undefined, plan: Plan): void {
  if (sourceHost !== undefined || targetsModeOf(plan) !== 'each') return;
  throw new CairnError('Cairn.InvalidInput', `sourceHost: required, plan ${plan.id} backs up each of its hosts on its own`, {
    hint: 'give "sourceHost": the host whose snapshot to restore, as its snapshots name it (cairn snapshots shows the host; the freshness metric\'s Host dimension too)',
  });
}

/**
 * The plan's instance whose host name (Systems Manager's ComputerName) is the source host, the
 * default target of an `each` plan's restore; undefined when none or several match. The short
 * name counts too: an instance may report ip-10-0-1-17.ec2.internal where its manifests say ip-10-0-1-17.
 */
async function instanceNamed(plan: Plan, hostName: string): Promise<string | undefined> {
  const filters =
    'instanceIds' in plan.targets
      ? [{ Key: 'InstanceIds', Values: plan.targets.instanceIds }]
      : [{ Key: `tag:${plan.targets.tag.key}`, Values: [plan.targets.tag.value] }];
  const short = (name: string): string => name.split('.')[0] ?? name;
  const matches: string[] = [];
  let token: string | undefined;
  do {
    const page = await ssmClient().send(new DescribeInstanceInformationCommand({ Filters: filters, NextToken: token, MaxResults: 50 }));
    for (const info of page.InstanceInformationList ?? []) {
      const name = info.ComputerName;
      if (info.InstanceId && name && (name === hostName || short(name) === short(hostName))) matches.push(info.InstanceId);
    }
    token = page.NextToken;
  } while (token);
  return matches.length === 1 ? matches[0] : undefined;
}

function parseOrExplainInput(event: unknown): ReturnType<typeof restoreInputSchema.parse> {
  try {
    return parseOrExplain(restoreInputSchema, event, 'restore input');
  } catch (error) {
    if (error instanceof CairnError) {
      throw new CairnError('Cairn.InvalidInput', error.message, {
        hint: 'expected {"planId": "...", "snapshot"?: "latest" | "<id>", "pointInTime"?: "<ISO-8601>", "targetInstanceId"?, "sourceHost"? (required for a targets.mode each plan), "targetPath"?, "targetDatabase"?, "dryRun"?: true}',
      });
    }
    throw error;
  }
}

export const handler = handlerOf('plan-restore', planRestoreHandler);
