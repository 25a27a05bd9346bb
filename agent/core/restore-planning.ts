import { CairnError } from './errors.ts';
import type { RestoreInput } from './orchestration.ts';
import { chooseLatest, newestFirst, noLatestError, passedOverWarning, resolveSnapshotId } from './snapshot-choice.ts';
import { shortId } from './snapshot.ts';

/** What the planner needs to know of a snapshot. */
export interface PlannableSnapshot {
  id: string;
  time: string;
  host: string;
  engine: string;
  totalBytes: number;
  /**
   * Why the snapshot is not good, when it is damaged (a damage marker names it, or the `damaged`
   * tag; `KnownDamage.damaged` in core/damage.ts): `latest` and a time pass over it with a warning,
   * and only its id restores it.
   */
  damaged?: string | undefined;
}

/** A past transfer, for the duration estimate: bytes moved in so many milliseconds. */
export interface Throughput {
  kind: 'restore' | 'backup';
  bytes: number;
  durationMs: number;
}

/** The archived log a point-in-time restore replays after its base snapshot. */
export interface LogRange {
  stream: string;
  /** Where the replay stops, as the planner describes it ("time 2026-11-23T02:55:00.000Z"). */
  target: string;
  /** The database's names of the first and last file to replay. */
  firstFile: string;
  lastFile: string;
  files: number;
  bytes: number;
  /** The base snapshot's recoverable window: from its end to the last archived event before a gap. */
  window: { from: string; to: string };
}

/**
 * A replay the log archive allows: agent/core/pitr-planning.ts describeReplay, the
 * plan `cairn restore --to-time --dry-run` prints, so the console and the CLI
 * agree on the base, the log range and the steps.
 */
export interface PlannedReplay {
  snapshot: PlannableSnapshot;
  logRange: LogRange;
  /** Restore the base, then replay: in order. */
  steps: string[];
}

export interface RestorePlan {
  planId: string;
  dryRun: boolean;
  snapshot: PlannableSnapshot;
  /** Why this snapshot: "latest", "requested id", "newest at or before <time>". */
  selectedBy: string;
  targetInstanceId: string;
  targetPath?: string;
  targetDatabase?: string;
  /** The log replayed after the snapshot (point-in-time recovery from the plan's archive); null for a snapshot restore. */
  logRange: LogRange | null;
  bytes: number;
  estimatedSeconds: number;
  /** Bytes per second the estimate used, and where it came from. */
  throughput: { bytesPerSecond: number; basis: string };
  steps: string[];
  warnings: string[];
}

/** Assumed when the repository has no history of transfers yet; said so in the plan's warnings. */
export const DEFAULT_RESTORE_BYTES_PER_SECOND = 50 * 1024 * 1024;

export interface PlanRestoreContext {
  snapshots: readonly PlannableSnapshot[];
  throughputs: readonly Throughput[];
  /** Instances the plan targets (the default restore target is the first). */
  planInstanceIds: readonly string[];
  /** Is the target instance online in SSM (checked by the caller). */
  instanceOnline: (instanceId: string) => boolean;
  /** For a pointInTime on a plan with a log archive: the replay its archive allows (the base is its snapshot). */
  replay?: PlannedReplay | undefined;
  now?: Date;
}

/**
 * Resolves the console's restore input to a concrete plan: which snapshot,
 * where, how many bytes and roughly how long. Pure: the caller fetched the
 * snapshots, the throughputs and the instance's state. Every refusal names
 * what was asked and what exists instead.
 */
export function planRestore(input: RestoreInput, ctx: PlanRestoreContext): RestorePlan {
  const warnings: string[] = [];
  const replay = input.pointInTime !== undefined ? ctx.replay : undefined;
  const { snapshot, selectedBy } = replay
    ? { snapshot: plannable(replay.snapshot), selectedBy: `newest base snapshot whose log window reaches ${replay.logRange.target}` }
    : selectSnapshot(input, ctx.snapshots, warnings);
  const logRange = replay?.logRange ?? null;

  const targetInstanceId = input.targetInstanceId ?? ctx.planInstanceIds[0];
  if (targetInstanceId === undefined) {
    throw new CairnError('Cairn.InvalidInput', `plan ${input.planId} targets instances by tag; name the host to restore to`, {
      hint: 'add "targetInstanceId": "i-…" to the input',
    });
  }
  if (!ctx.instanceOnline(targetInstanceId)) {
    throw new CairnError('Cairn.InvalidInput', `targetInstanceId ${targetInstanceId} is not online in Systems Manager`, {
      hint: 'start the instance or its SSM agent, or choose another targetInstanceId',
    });
  }
  if (input.targetInstanceId !== undefined && !ctx.planInstanceIds.includes(input.targetInstanceId)) {
    warnings.push(
      `restoring onto ${input.targetInstanceId}, which is not one of the plan's hosts: the target path or database must not be in use there`,
    );
  }

  if (replay && input.targetPath === undefined) {
    // The replay runs against a restored data directory, never the live one (agent/commands/restore.ts).
    const why = 'a point-in-time restore needs targetPath: an empty directory for the restored data directory';
    if (!input.dryRun) throw new CairnError('Cairn.InvalidInput', why, { hint: 'add "targetPath": "/var/lib/…/restored" to the input' });
    warnings.push(`${why}; add it to run this plan`);
  }

  const throughput = estimateThroughput(ctx.throughputs);
  if (throughput.basis === 'default') warnings.push('no past restore or backup to measure throughput from: the estimate assumes 50 MiB/s');
  const bytes = snapshot.totalBytes + (logRange?.bytes ?? 0);
  const estimatedSeconds = Math.max(1, Math.ceil(bytes / throughput.bytesPerSecond));

  const where = input.targetPath ?? (input.targetDatabase ? `database ${input.targetDatabase}` : "the plan's own target");
  const onto = `onto ${targetInstanceId}, into ${where}`;
  const steps = [
    `check that ${targetInstanceId} is online (done: it is)`,
    ...(replay
      ? [
          `${replay.steps[0] ?? `restore base snapshot ${shortId(snapshot.id)}`} ${onto}, then replay logs to ${replay.logRange.target}`,
          ...replay.steps.slice(1),
        ]
      : [`restore snapshot ${shortId(snapshot.id)} (${snapshot.engine}, taken ${snapshot.time} on ${snapshot.host}) ${onto}`]),
    'the agent refuses a non-empty target directory and reports progress through heartbeats',
    'record the result in the repository history',
  ];
  return {
    planId: input.planId,
    dryRun: Boolean(input.dryRun),
    snapshot,
    selectedBy,
    targetInstanceId,
    ...(input.targetPath !== undefined ? { targetPath: input.targetPath } : {}),
    ...(input.targetDatabase !== undefined ? { targetDatabase: input.targetDatabase } : {}),
    logRange,
    bytes,
    estimatedSeconds,
    throughput,
    steps,
    warnings,
  };
}

function plannable(s: PlannableSnapshot): PlannableSnapshot {
  return { id: s.id, time: s.time, host: s.host, engine: s.engine, totalBytes: s.totalBytes };
}

/**
 * Which snapshot the input means, by the rules every CLI command follows (core/snapshot-choice.ts):
 * an id or unique prefix (a damaged one restores as asked, with a warning), `latest` (the newest
 * good one, naming each damaged one passed over), or for a plan without a log archive the newest
 * good one at or before `pointInTime`.
 */
function selectSnapshot(
  input: RestoreInput,
  all: readonly PlannableSnapshot[],
  warnings: string[],
): { snapshot: PlannableSnapshot; selectedBy: string } {
  const where = `of plan ${input.planId}`;
  const ref = input.snapshot ?? 'latest';
  if (input.pointInTime === undefined && ref !== 'latest') {
    const id = resolveSnapshotId(
      ref,
      all.map((s) => s.id),
      where,
    );
    const requested = all.find((s) => s.id === id) as PlannableSnapshot;
    if (requested.damaged !== undefined)
      warnings.push(
        `snapshot ${requested.id} is damaged (${requested.damaged}): restoring it as requested; files in damaged data may fail`,
      );
    return { snapshot: plannable(requested), selectedBy: 'requested id' };
  }
  const at = input.pointInTime === undefined ? undefined : Date.parse(input.pointInTime);
  const choice = chooseLatest(at === undefined ? all : all.filter((s) => Date.parse(s.time) <= at));
  for (const { snapshot, why } of choice.passedOver) warnings.push(passedOverWarning(snapshot, why));
  if (!choice.chosen) {
    const good = newestFirst(all.filter((s) => s.damaged === undefined));
    const oldest = good[good.length - 1];
    if (at !== undefined && oldest !== undefined)
      throw new CairnError(
        'Cairn.NotFound',
        `plan ${input.planId} has no snapshot at or before ${input.pointInTime}; the oldest is ${shortId(oldest.id)} at ${oldest.time}`,
        { hint: 'choose a later pointInTime' },
      );
    throw noLatestError(choice, where, { by: 'sourceHost', others: false });
  }
  const chosen = plannable(choice.chosen);
  if (at === undefined) return { snapshot: chosen, selectedBy: 'latest' };
  warnings.push(
    `plan ${input.planId} has no log archive: this restores the snapshot taken at ${chosen.time}, not the state at ${input.pointInTime}`,
  );
  return { snapshot: chosen, selectedBy: `newest snapshot at or before ${input.pointInTime}` };
}

/** The median of recent restores, else of recent backups (bytes read per second), else the default. */
export function estimateThroughput(throughputs: readonly Throughput[]): { bytesPerSecond: number; basis: string } {
  for (const kind of ['restore', 'backup'] as const) {
    const rates = throughputs
      .filter((t) => t.kind === kind && t.durationMs > 0 && t.bytes > 0)
      .slice(-10)
      .map((t) => (t.bytes * 1000) / t.durationMs)
      .sort((a, b) => a - b);
    if (rates.length > 0)
      return { bytesPerSecond: rates[Math.floor(rates.length / 2)] as number, basis: `median of the last ${rates.length} ${kind}(s)` };
  }
  return { bytesPerSecond: DEFAULT_RESTORE_BYTES_PER_SECOND, basis: 'default' };
}
