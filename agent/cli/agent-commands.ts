import { appendFile, mkdtemp, rm } from 'node:fs/promises';
import { hostname, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import type { Command } from 'commander';
import { CairnError, errorMessage } from '../core/errors.ts';
import {
  agentRequestSchema,
  decodeRequest,
  parseOrExplain,
  type AgentOperation,
  type AgentRequest,
  type RunSummary,
} from '../core/orchestration.ts';
import { pitrOf, walCairnArgs, type Plan } from '../core/plan.ts';
import { backup } from '../commands/backup.ts';
import { restore } from '../commands/restore.ts';
import { verify } from '../commands/verify.ts';
import { engineByName } from '../engines/registry.ts';
import { PlanSource } from '../orchestration/plan-source.ts';
import { TaskReporter } from '../orchestration/task-reporter.ts';
import type { Cli } from './context.ts';

const OPERATIONS: readonly AgentOperation[] = ['backup', 'restore', 'verify', 'drill', 'archive'];

/**
 * `cairn agent <operation>`: what the SSM document runs on a host for the
 * state machines (docs/orchestration.md). The plan and its secrets come from
 * Parameter Store, the request (base64url JSON) from the document, the task
 * token from CAIRN_TASK_TOKEN; the result goes back through the token.
 */
export function register(program: Command, cli: Cli): void {
  program
    .command('agent')
    .description('run one orchestrated operation for a plan (started by the Cairn SSM document)')
    .argument('<operation>', OPERATIONS.join(' | '))
    .requiredOption('--plan-id <id>', 'the plan, read from Parameter Store under CAIRN_PLAN_PARAMETER_PREFIX')
    .option('--request <base64url>', 'the request the state machine built (archive, started by a schedule, takes none)')
    .action(async (operation: string, opts: { planId: string; request?: string }, cmd: Command) => {
      const g = cli.globals(cmd);
      let request: AgentRequest | undefined;
      let invalid: unknown;
      try {
        request = opts.request !== undefined ? decodeRequest(opts.request) : scheduledRequest(operation, opts.planId);
        if (request.operation !== operation || request.planId !== opts.planId) {
          throw new CairnError(
            'Cairn.Usage',
            `the request is for ${request.operation} of plan ${request.planId}, not ${operation} of plan ${opts.planId}`,
          );
        }
      } catch (error) {
        invalid = error;
      }
      const token = cli.env.CAIRN_TASK_TOKEN;
      const reporter = token
        ? new TaskReporter({
            token,
            heartbeatSeconds: request?.heartbeatSeconds ?? 300,
            onGone: (reason) => cli.controller.abort(new CairnError('Cairn.Cancelled', `${reason}; nothing was committed`)),
            onWarning: (message) => cli.output.warn(message),
          })
        : undefined;
      try {
        if (invalid !== undefined || request === undefined) throw invalid;
        reporter?.start();
        const summary = await runOperation(cli, cmd, request, g.concurrency, g.lockWait);
        cli.output.result(
          { type: 'summary', ...summary },
          `${summary.operation} of plan ${summary.planId} finished${summary.snapshotId ? `: snapshot ${summary.snapshotId.slice(0, 8)}` : ''}`,
        );
        if (reporter) {
          await reporter.succeed(summary);
          await noteReported(cli.env, 'success');
        }
      } catch (error) {
        const failure = cli.signal.aborted && cli.signal.reason instanceof CairnError ? cli.signal.reason : error;
        const cairn = failure instanceof CairnError ? failure : new CairnError('Cairn.Failure', errorMessage(failure), { cause: failure });
        if (reporter && !reporter.executionGone) {
          await reporter
            .fail(cairn.code, cairn.hint ? `${cairn.message} (${cairn.hint})` : cairn.message)
            .then(() => noteReported(cli.env, cairn.code))
            .catch((sendError: unknown) => cli.output.warn(`could not report the failure to Step Functions: ${errorMessage(sendError)}`));
        } else if (reporter) {
          await noteReported(cli.env, 'execution gone');
        }
        throw cairn;
      } finally {
        reporter?.stop();
      }
    });
}

/** The binlog-push schedule runs the document without a request: the operation and plan are all there is to say. */
function scheduledRequest(operation: string, planId: string): AgentRequest {
  if (operation !== 'archive')
    throw new CairnError('Cairn.Usage', `cairn agent ${operation} needs --request`, {
      hint: 'the state machines pass it; only archive runs without one',
    });
  return parseOrExplain(agentRequestSchema, { operation, planId, heartbeatSeconds: 300 }, 'request');
}

async function runOperation(
  cli: Cli,
  cmd: Command,
  request: AgentRequest,
  concurrency: number,
  lockWait: string | undefined,
): Promise<RunSummary> {
  const source = new PlanSource(cli.env);
  const plan = await source.plan(request.planId);
  const env = { ...cli.env };
  if (plan.engineOptions.passwordParameter) env.CAIRN_DB_PASSWORD = await source.secret(plan.engineOptions.passwordParameter);
  if (request.operation === 'archive') {
    const startedAt = new Date().toISOString();
    await pushBinlogs(plan, env, source, concurrency);
    return { operation: 'archive', planId: plan.id, host: hostname(), startedAt, finishedAt: new Date().toISOString() };
  }
  // Through the CLI's storage wrappers: --limit-upload/--limit-download, --max-transfers and cancellation apply.
  const repo = await source.openRepository(plan, await cli.storageAt(plan.repository.url, cmd));
  const who = { host: hostname(), user: cli.who().user };
  const common = { concurrency, progress: cli.output, signal: cli.signal, who, ...cli.locking({ concurrency, lockWait }) };
  const startedAt = new Date().toISOString();
  const base = { operation: request.operation, planId: plan.id, host: who.host, startedAt };

  switch (request.operation) {
    case 'backup': {
      const engine = plan.engine === 'files' ? undefined : engineByName(plan.engine);
      const snapshot = await backup(repo, {
        ...common,
        paths: plan.engine === 'files' ? (plan.engineOptions.paths ?? []) : [],
        excludes: [],
        tags: [],
        plan: plan.id,
        env,
        engine: engine
          ? { engine, options: engine.parseOptions(engineOptionsOf(plan)), source: `${engine.name}:plan ${plan.id}` }
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
      };
    }
    case 'restore': {
      // A restored PostgreSQL fetches its WAL through this same program, with the plan's repository and passphrase file.
      const cairnArgv = [
        process.execPath,
        resolve(process.argv[1] ?? 'cairn'),
        ...walCairnArgs(plan, env.AWS_REGION ?? env.AWS_DEFAULT_REGION),
      ];
      const { snapshot, result, replay } = await restore(repo, {
        ...common,
        snapshot: request.snapshotId,
        target: request.targetPath,
        targetDatabase: request.targetDatabase,
        engineOptions: engineOptionsOf(plan),
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
      const report = await verify(repo, { ...common, readData: request.readDataSubset });
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
      // A restore drill: the snapshot restored into a scratch directory and checked against its manifest, then removed.
      const scratch = await mkdtemp(join(cli.env.CAIRN_DRILL_DIR ?? tmpdir(), 'cairn-drill-'));
      try {
        const { snapshot, result } = await restore(repo, {
          ...common,
          snapshot: request.snapshotId ?? 'latest',
          target: scratch,
          engineOptions: {},
          env,
          includes: [],
          force: false,
          ignoreErrors: false,
        });
        if (result.errors.length > 0 || (snapshot.engine === 'files' && result.bytes !== snapshot.summary.totalBytes)) {
          throw new CairnError(
            'Cairn.Damaged',
            `the restore drill of snapshot ${snapshot.id.slice(0, 8)} restored ${result.bytes} of ${snapshot.summary.totalBytes} bytes with ${result.errors.length} error(s)`,
          );
        }
        return {
          ...base,
          finishedAt: new Date().toISOString(),
          snapshotId: snapshot.id,
          engine: snapshot.engine,
          totalBytes: result.bytes,
          target: 'scratch directory (removed)',
        };
      } finally {
        await rm(scratch, { recursive: true, force: true });
      }
    }
  }
}

/**
 * One-shot `cairn binlog-push` for a MariaDB PITR plan: the command itself
 * (agent/cli/binlog-commands.ts), run through the CLI with the plan's
 * repository, connection and archive name; the passphrase and the database
 * password travel in its environment, never in argv.
 */
async function pushBinlogs(plan: Plan, env: NodeJS.ProcessEnv, source: PlanSource, concurrency: number): Promise<void> {
  const pitr = pitrOf(plan);
  if (plan.engine !== 'mariadb' || pitr === undefined) {
    throw new CairnError('Cairn.Usage', `plan ${plan.id} does not push binlogs: archive is for mariadb plans with pitr.enabled`, {
      hint:
        plan.engine === 'postgres'
          ? 'PostgreSQL archives its WAL itself, through archive_command (cairn wal-push)'
          : 'set pitr.enabled in the plan',
    });
  }
  if (!('passphraseParameter' in plan.keySource)) {
    throw new CairnError(
      'Cairn.Config',
      `plan ${plan.id} names only a KMS key; the binlog push opens the repository with keySource.passphraseParameter for now`,
    );
  }
  const passphrase = await source.secret(plan.keySource.passphraseParameter);
  const connection = Object.entries({
    '--db-host': plan.engineOptions.connection?.host,
    '--db-port': plan.engineOptions.connection?.port,
    '--db-socket': plan.engineOptions.connection?.socket,
    '--db-user': plan.engineOptions.connection?.user,
  })
    .filter((e): e is [string, string | number] => e[1] !== undefined)
    .flatMap(([flag, value]) => [flag, String(value)]);
  const archiveName = pitr.archiveStream?.replace(/^mariadb-/, '');
  // main() takes process.argv's shape: the program and script first.
  const argv = [
    process.execPath,
    process.argv[1] ?? 'cairn',
    '--repo',
    plan.repository.url,
    '--concurrency',
    String(concurrency),
    'binlog-push',
    '--rotate',
    ...connection,
    ...(archiveName ? ['--archive-name', archiveName] : []),
  ];
  // Imported here: main.ts registers this module, so a static import would be a cycle.
  const { main } = await import('./main.ts');
  const code = await main(argv, { ...env, CAIRN_PASSWORD: passphrase });
  if (code !== 0)
    throw new CairnError('Cairn.Failure', `cairn binlog-push for plan ${plan.id} exited with code ${code} (its error is above)`);
}

function engineOptionsOf(plan: Plan): Record<string, unknown> {
  const o = plan.engineOptions;
  const raw: Record<string, unknown> = {
    host: o.connection?.host,
    port: o.connection?.port === undefined ? undefined : String(o.connection.port),
    socket: o.connection?.socket,
    user: o.connection?.user,
    databases: o.databases,
    owner: o.owner,
  };
  return Object.fromEntries(Object.entries(raw).filter(([, v]) => v !== undefined));
}

/** Tells the SSM document's script that Step Functions has the result, so it does not report a crash. */
async function noteReported(env: NodeJS.ProcessEnv, outcome: string): Promise<void> {
  if (env.CAIRN_REPORT_FILE) await appendFile(env.CAIRN_REPORT_FILE, `${outcome}\n`);
}
