import { CairnError } from '../core/errors.ts';
import type { AgentRequest, RunSummary } from '../core/orchestration.ts';
import { engineOptionsOfPlan, pitrOf, walCairnArgs, type Plan } from '../core/plan.ts';
import { INSTANCE_ID_PATTERN } from '../core/plan-fields.ts';
import { INSTANCE_TAG_PREFIX } from '../core/snapshot.ts';
import type { DeletableStorage } from '../core/storage.ts';
import { engineRegistry, type EngineRegistry } from '../engines/registry.ts';
import { PlanSource } from '../orchestration/plan-source.ts';
import type { ArchivedBinlog, PushSummary } from '../pitr/binlog-push.ts';
import { backup } from './backup.ts';
import { binlogPush } from './binlog-push.ts';
import { drill, drillFailure, drillRunSummary, type DrillRunSummary } from './drill.ts';
import type { OperationOptions } from './operation.ts';
import { openPlanStorage } from './plan-storage.ts';
import { restore } from './restore.ts';
import { verify } from './verify.ts';

export interface AgentRunOptions extends OperationOptions {
  concurrency: number;
  signal: AbortSignal;
  env: NodeJS.ProcessEnv;
  /** A repository's storage as the CLI opens it: bandwidth limits, the transfer cap, cancellation and the storage hook apply. */
  /** The plan's storage wrapped as the CLI wraps any (limits, cancellation, hook); `base`: an endpoint storage already opened with its own key. */
  openStorage: (url: string, base?: DeletableStorage) => Promise<DeletableStorage>;
  /** How a restored PostgreSQL calls this program back for its WAL: [node, cairn.js]. */
  cairnProgram: string[];
  /** archive: each binlog archived, then the push's summary. */
  onArchived: (stream: string, file: ArchivedBinlog) => void;
  onPushed: (stream: string, summary: PushSummary) => void;
  /** The engines plans are run with (default: the shipped ones; a test passes its own). */
  engines?: EngineRegistry | undefined;
}

/**
 * One orchestrated operation for a plan (docs/orchestration.md): the plan
 * and its secrets from Parameter Store, then the backup, restore, verify,
 * restore drill or binlog push it asks for. Returns what Step Functions gets
 * back; a failure is thrown as the CairnError it is, so its code reaches the
 * state machine's Catch.
 */
export async function runAgentOperation(request: AgentRequest, options: AgentRunOptions): Promise<RunSummary> {
  const source = new PlanSource(options.env);
  const plan = await source.plan(request.planId);
  const env = { ...options.env };
  if (plan.engineOptions.passwordParameter) env.CAIRN_DB_PASSWORD = await source.secret(plan.engineOptions.passwordParameter);
  const startedAt = new Date().toISOString();
  const base = { operation: request.operation, planId: plan.id, host: options.who.host, startedAt };
  if (request.operation === 'archive') {
    await pushBinlogs(plan, env, source, options);
    return { ...base, finishedAt: new Date().toISOString() };
  }
  const repo = await source.openRepository(plan, await openPlanStorage(plan, source, options));
  const engines = options.engines ?? engineRegistry;
  const common = {
    who: options.who,
    progress: options.progress,
    concurrency: options.concurrency,
    signal: options.signal,
    leaseMs: options.leaseMs,
    lockWaitMs: options.lockWaitMs,
  };

  switch (request.operation) {
    case 'backup': {
      const engine = plan.engine === 'files' ? undefined : engines.byName(plan.engine);
      const snapshot = await backup(repo, {
        ...common,
        paths: plan.engine === 'files' ? (plan.engineOptions.paths ?? []) : [],
        excludes: [],
        // Which instance made it: an `each` plan's retention groups by it (host names may repeat).
        tags: instanceTags(env),
        plan: plan.id,
        env,
        engine: engine
          ? { engine, options: engine.parseOptions(engineOptionsOfPlan(plan)), source: `${engine.name}:plan ${plan.id}` }
          : undefined,
      });
      const s = snapshot.summary;
      return {
        ...base,
        finishedAt: new Date().toISOString(),
        snapshotId: snapshot.id,
        engine: snapshot.engine,
        bytesRead: s.bytesRead,
        bytesAdded: s.bytesAdded,
        totalBytes: s.totalBytes,
        files: { new: s.filesNew, changed: s.filesChanged, unchanged: s.filesUnchanged },
        engineMetadata: snapshot.engineMetadata,
        // Some files could not be read: still a success (the snapshot is committed), reported so the control plane can alarm on it.
        ...(snapshot.partial ? { partial: true } : {}),
      };
    }
    case 'restore': {
      // A restored PostgreSQL fetches its WAL through this same program, with the plan's repository and passphrase file.
      const cairnArgv = [...options.cairnProgram, ...walCairnArgs(plan, env.AWS_REGION ?? env.AWS_DEFAULT_REGION)];
      const { snapshot, result, replay } = await restore(repo, {
        ...common,
        snapshot: request.snapshotId,
        target: request.targetPath,
        targetDatabase: request.targetDatabase,
        engineOptions: engineOptionsOfPlan(plan),
        engines,
        env,
        includes: [],
        force: false,
        ignoreErrors: false,
        ...(request.pointInTime !== undefined
          ? { pointInTime: { target: { time: request.pointInTime }, stream: request.stream, cairnArgv } }
          : {}),
      });
      if (result.errors.length > 0)
        throw new CairnError(
          'Cairn.PartialFailure',
          `${result.errors.length} file(s) could not be restored, e.g. ${result.errors[0]?.path ?? ''}: ${result.errors[0]?.error ?? ''}`,
        );
      return {
        ...base,
        finishedAt: new Date().toISOString(),
        snapshotId: snapshot.id,
        engine: snapshot.engine,
        totalBytes: result.bytes,
        target: request.targetPath ?? request.targetDatabase ?? 'the server',
        ...(replay
          ? {
              replay: {
                pointInTime: replay.plan.describe,
                stream: replay.plan.stream,
                files: replay.files,
                bytes: replay.bytes,
                summary: replay.summary,
              },
            }
          : {}),
      };
    }
    case 'verify': {
      const report = await verify(repo, { ...common, readData: request.readDataSubset, markDamage: true });
      if (!report.ok) {
        throw new CairnError(
          'Cairn.Damaged',
          `verify found ${report.problems.length} problem(s) affecting ${report.affected.length} file(s): ${report.problems
            .slice(0, 3)
            .map((p) => `${p.object}: ${p.problem}`)
            .join('; ')}`,
        );
      }
      return { ...base, finishedAt: new Date().toISOString(), verify: { ok: true, problems: 0, packsRead: report.packsRead } };
    }
    case 'drill': {
      // `cairn drill` (commands/drill.ts): a private scratch place and private servers, never the plan's server or its
      // options; refused before anything is restored when the engine's tools are missing on this host.
      const report = await drill(repo, { ...common, snapshot: request.snapshotId ?? 'latest', thorough: false, env, engines });
      if (!report.ok) throw drillFailure(report);
      const summary: RunSummary & { drill: DrillRunSummary } = {
        ...base,
        finishedAt: new Date().toISOString(),
        snapshotId: report.snapshotId,
        engine: report.engine,
        target: 'scratch directory (removed)',
        drill: drillRunSummary(report, false),
      };
      return summary;
    }
  }
}

/**
 * One-shot `cairn binlog-push --rotate` for a MariaDB PITR plan: the library
 * command itself, with the plan's repository, connection and archive name,
 * under this run's cancellation, its errors passed on as they are.
 */
async function pushBinlogs(plan: Plan, env: NodeJS.ProcessEnv, source: PlanSource, options: AgentRunOptions): Promise<void> {
  const pitr = pitrOf(plan);
  const log = (options.engines ?? engineRegistry).catalog.get(plan.engine)?.capabilities.pitr;
  if (log?.log !== 'binlog' || pitr === undefined) {
    throw new CairnError('Cairn.Usage', `plan ${plan.id} does not push binlogs: archive is for mariadb plans with pitr.enabled`, {
      hint:
        log?.log === 'wal'
          ? 'PostgreSQL archives its WAL itself, through archive_command (cairn wal-push)'
          : 'set pitr.enabled in the plan',
    });
  }
  const repo = await source.openRepository(plan, await openPlanStorage(plan, source, options));
  const { stream, summary } = await binlogPush(repo, {
    connection: engineOptionsOfPlan(plan),
    // The plan schema checks the stream starts with the engine's prefix.
    archiveName: pitr.archiveStream === undefined ? 'default' : pitr.archiveStream.slice(log.streamPrefix.length),
    host: options.who.host,
    env,
    signal: options.signal,
    rotate: true,
    onArchived: options.onArchived,
    warn: (message, details) => options.progress.warn(message, details),
  });
  if (summary) options.onPushed(stream, summary);
}

/** `instance:<id>` when the SSM agent says which instance this is (AWS_SSM_INSTANCE_ID), else nothing. */
function instanceTags(env: NodeJS.ProcessEnv): string[] {
  const id = env.AWS_SSM_INSTANCE_ID;
  return id !== undefined && INSTANCE_ID_PATTERN.test(id) ? [`${INSTANCE_TAG_PREFIX}${id}`] : [];
}
