import { appendFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import type { Command } from 'commander';
import { CairnError, errorMessage } from '../../core/errors.ts';
import { agentRequestSchema, decodeRequest, parseOrExplain, type AgentOperation, type AgentRequest } from '../../core/orchestration.ts';
import { runAgentOperation } from '../../commands/agent-operation.ts';
import { TaskReporter } from '../../orchestration/task-reporter.ts';
import type { Cli } from '../context.ts';
import { printArchived, printPushSummary } from './binlog-push.ts';

const OPERATIONS: readonly AgentOperation[] = ['backup', 'restore', 'verify', 'drill', 'archive'];

/**
 * `cairn agent <operation>`: what the SSM document runs on a host for the
 * state machines (docs/orchestration.md). The plan and its secrets come from
 * Parameter Store, the request (base64url JSON) from the document, the task
 * token from CAIRN_TASK_TOKEN; the result goes back through the token.
 */
export function registerAgent(program: Command, cli: Cli): void {
  program
    .command('agent')
    .description('run one orchestrated operation for a plan (started by the Cairn SSM document)')
    .argument('<operation>', OPERATIONS.join(' | '))
    .requiredOption('--plan-id <id>', 'the plan, read from Parameter Store under CAIRN_PLAN_PARAMETER_PREFIX')
    .option('--request <base64url>', 'the request the state machine built (archive, started by a schedule, takes none)')
    .action(async (operation: string, opts: { planId: string; request?: string }, cmd: Command) => {
      let request: AgentRequest | undefined;
      let invalid: unknown;
      try {
        request = requestOf(operation, opts);
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
        const summary = await runAgentOperation(request, {
          ...cli.operation(cli.globals(cmd)),
          env: cli.env,
          openStorage: (url, base) => cli.storageAt(url, cmd, base),
          cairnProgram: [process.execPath, resolve(process.argv[1] ?? 'cairn')],
          onArchived: (stream, file) => printArchived(cli, stream, file),
          onPushed: (stream, pushed) => printPushSummary(cli, stream, pushed),
        });
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

/** The request: decoded from --request, or for the binlog-push schedule (which sends none) the operation and plan alone. */
function requestOf(operation: string, opts: { planId: string; request?: string }): AgentRequest {
  let request: AgentRequest;
  if (opts.request !== undefined) request = decodeRequest(opts.request);
  else if (operation === 'archive')
    request = parseOrExplain(agentRequestSchema, { operation, planId: opts.planId, heartbeatSeconds: 300 }, 'request');
  else
    throw new CairnError('Cairn.Usage', `cairn agent ${operation} needs --request`, {
      hint: 'the state machines pass it; only archive runs without one',
    });
  if (request.operation !== operation || request.planId !== opts.planId) {
    throw new CairnError(
      'Cairn.Usage',
      `the request is for ${request.operation} of plan ${request.planId}, not ${operation} of plan ${opts.planId}`,
    );
  }
  return request;
}

/** Tells the SSM document's script that Step Functions has the result, so it does not report a crash. */
async function noteReported(env: NodeJS.ProcessEnv, outcome: string): Promise<void> {
  if (env.CAIRN_REPORT_FILE) await appendFile(env.CAIRN_REPORT_FILE, `${outcome}\n`);
}
