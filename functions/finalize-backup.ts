import { MetricUnit } from '@aws-lambda-powertools/metrics';
import { CairnError } from '../agent/core/errors.ts';
import { recordEvent } from '../agent/core/history.ts';
import { parseOrExplain, runSummarySchema } from '../agent/core/orchestration.ts';
import { releaseRunLease } from '../agent/core/run-lease.ts';
import { INSTANCE_TAG_PREFIX, sourceOf } from '../agent/core/snapshot.ts';
import { TOOL } from '../agent/core/version.ts';
import { hostRecordsSeal, hostRecordsStorage } from './host-records.ts';
import { attestSnapshot } from './snapshot-attestations.ts';
import { controlPlaneWho, controlSeal, handlerOf, loadPlan, metrics, openPlanRepository } from './runtime.ts';

export interface FinalizeEvent {
  planId?: unknown;
  /** The PlanBackup result (a BackupHosts item for an `each` plan: its instanceId names the host's lease); its executionId holds the run lease. */
  plan?: { executionId?: unknown; instanceId?: unknown };
  agent?: unknown;
}

export interface Finalized {
  snapshotId: string;
  snapshotTime: string;
  /** The host the manifest names (what retention groups an `each` plan's snapshots by). */
  host: string;
  /** The instance the BackupHosts item ran on (`each` plans). */
  instanceId?: string;
  durationSeconds: number;
  bytesRead: number;
  bytesAdded: number;
  dedupeRatio: number;
}

/**
 * After the agent reported success: confirms the snapshot's manifest exists
 * (an agent's word is not a backup), records the run in the repository
 * history, releases the run lease and emits the run's metrics.
 */
export async function finalizeBackup(event: FinalizeEvent): Promise<Finalized> {
  const plan = await loadPlan(event.planId);
  const executionId = event.plan?.executionId;
  const instanceId = typeof event.plan?.instanceId === 'string' ? event.plan.instanceId : undefined;
  const summary = parseOrExplain(runSummarySchema, event.agent, 'agent summary');
  if (!summary.snapshotId) throw new CairnError('Cairn.Failure', `the agent reported success for plan ${plan.id} without a snapshot id`);
  const { repo, storage } = await openPlanRepository(plan);
  let snapshot;
  try {
    snapshot = await repo.readSnapshot(summary.snapshotId);
  } catch (error) {
    throw new CairnError(
      'Cairn.NotFound',
      `the agent reported snapshot ${summary.snapshotId}, but its manifest cannot be read: ${error instanceof Error ? error.message : String(error)}`,
      { cause: error },
    );
  }
  if (instanceId !== undefined) {
    // An `each` plan: the control plane's word that this instance's run made the snapshot (snapshot-attestations.ts).
    const claimed = sourceOf(snapshot);
    if (claimed.startsWith(INSTANCE_TAG_PREFIX) && claimed !== `${INSTANCE_TAG_PREFIX}${instanceId}`)
      throw new CairnError(
        'Cairn.Failure',
        `the run on ${instanceId} reported snapshot ${snapshot.id.slice(0, 8)}, whose manifest names ${claimed}: not recorded as this instance's`,
        { hint: 'a host that holds the repository key may have written it; check that instance' },
      );
    await attestSnapshot(storage, await controlSeal(), instanceId, snapshot.id);
  }
  const durationSeconds = snapshot.summary.durationMs / 1000;
  const bytesRead = snapshot.summary.bytesRead;
  const bytesAdded = snapshot.summary.bytesAdded;
  const dedupeRatio = snapshot.summary.totalBytes / Math.max(1, snapshot.summary.rawBytesAdded);
  await recordEvent(repo, controlPlaneWho('finalize'), TOOL, 'orchestration.backup.finalized', {
    planId: plan.id,
    executionId,
    snapshotId: snapshot.id,
    host: snapshot.host,
    ...(instanceId ? { instanceId } : {}),
  });
  if (typeof executionId === 'string') {
    const seal = await controlSeal();
    if (instanceId === undefined) await releaseRunLease(storage, executionId, seal);
    else await releaseRunLease(hostRecordsStorage(storage, instanceId), executionId, hostRecordsSeal(seal, instanceId));
  }

  metrics.addDimension('PlanId', plan.id);
  metrics.addMetric('BackupSucceeded', MetricUnit.Count, 1);
  // Saved, but not a good snapshot: the agent's summary or the manifest says so (the PartialBackup alarm).
  if (summary.partial === true || snapshot.partial === true) metrics.addMetric('PartialBackup', MetricUnit.Count, 1);
  metrics.addMetric('DurationSeconds', MetricUnit.Seconds, durationSeconds);
  metrics.addMetric('BytesRead', MetricUnit.Bytes, bytesRead);
  metrics.addMetric('BytesAdded', MetricUnit.Bytes, bytesAdded);
  metrics.addMetric('DedupeRatio', MetricUnit.Count, dedupeRatio);
  metrics.addMetric('SnapshotAgeSeconds', MetricUnit.Seconds, Math.max(0, (Date.now() - Date.parse(snapshot.time)) / 1000));
  return {
    snapshotId: snapshot.id,
    snapshotTime: snapshot.time,
    host: snapshot.host,
    ...(instanceId ? { instanceId } : {}),
    durationSeconds,
    bytesRead,
    bytesAdded,
    dedupeRatio,
  };
}

export const handler = handlerOf('finalize-backup', finalizeBackup);
