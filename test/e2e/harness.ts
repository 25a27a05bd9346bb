import { spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { StateMachine } from 'aws-local-stepfunctions';
import { Template } from 'aws-cdk-lib/assertions';
import type { EnvironmentConfigInput } from '../../agent/core/plan.ts';
import { decodeRequest } from '../../agent/core/orchestration.ts';
import { controlSealParameterName, hmacSeal, type RecordSeal } from '../../agent/core/run-lease.ts';
import { bundleAgent } from '../../cdk/lib/agent-bundle.ts';
import { buildApp } from '../../cdk/lib/app.ts';
import { startFaultProxy } from '../helpers/fault-proxy.ts';
import { startS3rver, s3rverEnv, type S3rver } from '../helpers/s3rver.ts';
import { startSfnStandin, startSsmStandin, type SfnStandin, type SsmStandin } from './standins.ts';
import { PRELOAD, asPrincipal, functionOfModule, startRecording, unlistedCalls, type RecordedCall } from './sdk-calls.ts';

/**
 * The whole system, locally: the state machines from the synthesized template
 * run by aws-local-stepfunctions; Lambda tasks run the real handler modules
 * in-process; the SSM sendCommand task runs the real SSM document's script
 * (taken from the template, its agent checksum and download path substituted)
 * as a subprocess, which runs the real bundled agent against s3rver.
 * STAND-INS (named): SSM Parameter Store/inventory and the Step Functions
 * callback API (./standins.ts), since neither can run here; and S3's
 * conditional writes, which s3rver lacks (test/helpers/fault-proxy.ts).
 */
export const ENV = 'e2e';
export const INSTANCE = 'i-0e2e0000000000001';
export const PASSPHRASE_PARAMETER = '/cairn/e2e/files-plan/passphrase';

export interface AgentRun {
  child: ChildProcess;
  output: () => string;
}

export interface RunOptions {
  /** Awaited before the agent's script starts (to hold a run in RunAgent). */
  beforeAgent?: () => Promise<void>;
  /** Told about the agent's process once it runs (to stop or freeze it). */
  onAgent?: (run: AgentRun, token: string) => void;
  /** Extra environment for the agent's host (e.g. CAIRN_LIMIT_UPLOAD to make a backup slow). */
  hostEnv?: Record<string, string>;
}

export interface System {
  s3: S3rver;
  ssm: SsmStandin;
  sfn: SfnStandin;
  definitions: Record<'Backup' | 'Retention' | 'Restore' | 'Verify', Record<string, unknown>>;
  /** The synthesized template's resources (schedules, alarms, …). */
  resources: Record<string, { Type: string; Properties: Record<string, unknown> }>;
  repoUrl(planId: string): string;
  env: NodeJS.ProcessEnv;
  run(kind: 'Backup' | 'Retention' | 'Restore' | 'Verify', input: Record<string, unknown>, options?: RunOptions): Promise<unknown>;
  /** The document run outside any execution, as a schedule's SendCommand does it: no task token, no request. */
  runDocument(operation: string, planId: string, hostEnv?: Record<string, string>): Promise<{ code: number | null; output: string }>;
  agentLogs: string[];
  /** The control plane's record seal, as the deployment's secret holds it (to write a genuine stale lease). */
  seal: RecordSeal;
  /** Every AWS SDK command sent so far, with who sent it (./sdk-calls.ts); stop() fails on any the inventory lacks. */
  awsCalls(): RecordedCall[];
  stop(): Promise<void>;
}

const handlerModules: Record<string, string> = {
  PlanBackup: '../../functions/plan-backup.ts',
  FinalizeBackup: '../../functions/finalize-backup.ts',
  ApplyRetention: '../../functions/apply-retention.ts',
  SweepPrefix: '../../functions/gc-sweep.ts',
  PlanRestore: '../../functions/plan-restore.ts',
  PlanVerify: '../../functions/plan-verify.ts',
  RecordResult: '../../functions/record-result.ts',
  RecordFailure: '../../functions/record-result.ts',
  // An `each` plan's BackupHosts Map (cdk/lib/state-machines.ts).
  FinalizeHostBackup: '../../functions/finalize-backup.ts',
  RecordHostFailure: '../../functions/record-result.ts',
  EnsureRepository: '../../functions/create-repository.ts',
};

/** Where the plans' storage is, for plans that name it themselves (an S3-compatible endpoint's URL). */
export interface StorageEndpoints {
  /** s3rver behind the stand-in for conditional writes: what every repository URL of the system points at. */
  endpoint: string;
  bucket: string;
}

export async function startSystem(
  plansOrOf: EnvironmentConfigInput['plans'] | ((storage: StorageEndpoints) => EnvironmentConfigInput['plans']),
): Promise<System> {
  const work = mkdtempSync(join(tmpdir(), 'cairn-e2e-'));
  // Every SDK command the functions (here) and the agent (its processes, through a preload) send.
  const callLog = join(work, 'aws-calls.jsonl');
  const recording = startRecording(callLog);
  const s3 = await startS3rver();
  // STAND-IN for S3's conditional writes (s3rver ignores If-None-Match: *): the run lease and the
  // repository's locks rely on create-if-absent, as they do on real S3.
  const conditional = await startFaultProxy(s3.endpoint);
  const ssm = await startSsmStandin();
  const sfn = await startSfnStandin();
  const bucket = s3.bucket;
  const plans = typeof plansOrOf === 'function' ? plansOrOf({ endpoint: conditional.endpoint, bucket }) : plansOrOf;

  // The environment the in-process functions and the agent's subprocess share.
  const env: NodeJS.ProcessEnv = {
    ...s3rverEnv(),
    AWS_REGION: 'eu-central-1',
    AWS_ENDPOINT_URL_SSM: ssm.endpoint,
    AWS_ENDPOINT_URL_SFN: sfn.endpoint,
    CAIRN_S3_ENDPOINT: conditional.endpoint,
    CAIRN_S3_PATH_STYLE: 'true',
    ENV_NAME: ENV,
    PLAN_PARAMETER_PREFIX: `/cairn/${ENV}/plans/`,
    POWERTOOLS_SERVICE_NAME: 'cairn-e2e',
    POWERTOOLS_TRACE_ENABLED: 'false',
    CAIRN_LOCK_LEASE: '20',
    // The two-phase GC waits its grace inside apply-retention (60 s in production); a second here.
    GC_GRACE_SECONDS: '1',
    CAIRN_GC_GRACE: '1',
  };
  Object.assign(process.env, env);

  const config: EnvironmentConfigInput = {
    account: '123456789012',
    region: 'eu-central-1',
    repository: { bucketName: bucket },
    plans,
  };
  const built = buildApp(ENV, {
    appProps: { outdir: join(work, 'cdk.out'), context: { 'aws:cdk:bundling-stacks': [] } },
    known: { [ENV]: config },
  });
  const json = Template.fromStack(built.stack).toJSON() as {
    Resources: Record<string, { Type: string; Properties: Record<string, unknown> }>;
  };

  const definitions = {} as System['definitions'];
  for (const [, r] of Object.entries(json.Resources)) {
    if (r.Type !== 'AWS::StepFunctions::StateMachine') continue;
    const name = String(r.Properties.StateMachineName);
    const kind = (['Backup', 'Retention', 'Restore', 'Verify'] as const).find((k) => name.endsWith(`-${k.toLowerCase()}`));
    if (kind) definitions[kind] = forLocalRunner(JSON.parse(resolveIntrinsics(r.Properties.DefinitionString)) as Record<string, unknown>);
  }
  for (const [, r] of Object.entries(json.Resources)) {
    if (r.Type === 'AWS::SSM::Parameter') ssm.parameters.set(resolveIntrinsics(r.Properties.Name), resolveIntrinsics(r.Properties.Value));
  }
  const document = Object.values(json.Resources).find((r) => r.Type === 'AWS::SSM::Document');
  const steps = (document?.Properties.Content as { mainSteps: Array<{ action: string; inputs: { runCommand?: string[] } }> }).mainSteps;
  const runCommand = steps.find((s) => s.action === 'aws:runShellScript')?.inputs.runCommand;
  if (!runCommand) throw new Error('the SSM document has no aws:runShellScript step');

  // The real agent bundle, as the document would have downloaded it.
  const bundle = bundleAgent(join(work, 'download'));
  const sha = createHash('sha256').update(readFileSync(bundle)).digest('hex');
  const script = runCommand
    .map((line) =>
      line
        .replace(/^export CAIRN_AGENT_SHA256='[^']*'$/, `export CAIRN_AGENT_SHA256='${sha}'`)
        .replace(/^export CAIRN_AGENT_DOWNLOAD='[^']*'$/, `export CAIRN_AGENT_DOWNLOAD='${dirname(bundle)}'`)
        .replace(/^export CAIRN_AGENT_OBJECT='[^']*'$/, "export CAIRN_AGENT_OBJECT='cairn.mjs'"),
    )
    .join('\n');
  if (!script.includes(sha)) throw new Error('the document script does not export CAIRN_AGENT_SHA256 the way this harness expects');

  for (const plan of plans) ssm.instances.set(INSTANCE, { 'cairn:plan': plan.id });
  // The seal key Secrets Manager generates at deploy, as Parameter Store's reference to it returns it.
  const sealKey = randomBytes(32).toString('hex');
  ssm.parameters.set(controlSealParameterName(ENV), sealKey);
  const agentLogs: string[] = [];
  let executions = 0;
  let tasks = 0;

  // The document's script as SSM runs it on a host: parameters as SSM_* variables, in its own process group.
  // An instance given a host name (ssm.hostNames) is a machine of its own: the script runs in a UTS
  // namespace with that host name (what a manifest records as its host), with its own home and agent
  // install, and AWS_SSM_INSTANCE_ID set as the SSM Agent sets it for a command.
  const spawnDocument = (
    params: { operation: string; planId: string; taskToken: string; request: string; instanceId?: string },
    hostEnv?: Record<string, string>,
  ): { child: ChildProcess; output: () => string; exited: Promise<number | null>; closed: Promise<void> } => {
    const hostName = params.instanceId === undefined ? undefined : ssm.hostNames.get(params.instanceId);
    const home = hostName === undefined ? work : join(work, 'hosts', hostName);
    if (hostName !== undefined) mkdirSync(home, { recursive: true });
    const [program, args] =
      hostName === undefined
        ? ['bash', ['-c', script]]
        : ['unshare', ['--uts', 'bash', '-c', 'hostname "$1" && exec bash -c "$2"', 'host', hostName, script]];
    const child = spawn(program, args, {
      env: {
        ...env,
        PATH: `${dirname(process.execPath)}:/usr/local/bin:/usr/bin:/bin`,
        HOME: home,
        TMPDIR: home,
        CAIRN_HOME: join(home, 'opt-cairn'),
        CAIRN_LINK: join(home, 'cairn-link'),
        CAIRN_SPOOL_DIR: join(home, 'spool'),
        ...(params.instanceId === undefined ? {} : { AWS_SSM_INSTANCE_ID: params.instanceId }),
        SSM_operation: params.operation,
        SSM_planId: params.planId,
        SSM_taskToken: params.taskToken,
        SSM_request: params.request,
        CAIRN_RECORD_AWS_CALLS: callLog,
        NODE_OPTIONS: [process.env.NODE_OPTIONS, `--import=${PRELOAD}`].filter(Boolean).join(' '),
        ...hostEnv,
      },
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: true,
    });
    let output = '';
    child.stdout?.on('data', (c: Buffer) => (output += c.toString()));
    child.stderr?.on('data', (c: Buffer) => (output += c.toString()));
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    const closed = new Promise<void>((resolve) => child.once('close', () => resolve()));
    return { child, output: () => output, exited, closed };
  };

  const runAgent = async (input: unknown, options: RunOptions): Promise<unknown> => {
    const { Parameters: params, InstanceIds: instanceIds } = input as { Parameters: Record<string, string[]>; InstanceIds?: string[] };
    // Step Functions gives every task its own token; the local runner gives one per execution, so
    // the BackupHosts Map's concurrent RunHostAgent tasks get it made unique here.
    const token = `${String(params.taskToken?.[0])}_${++tasks}`;
    const request = String(params.request?.[0]);
    const heartbeatSeconds = decodeRequest(request).heartbeatSeconds;
    const result = sfn.waitFor(token, heartbeatSeconds);
    result.catch(() => undefined); // observed below; a run that fails elsewhere first must not leave it unhandled
    await options.beforeAgent?.();
    const { child, output, exited } = spawnDocument(
      {
        operation: String(params.operation?.[0]),
        planId: String(params.planId?.[0]),
        taskToken: token,
        request,
        ...(instanceIds?.length === 1 ? { instanceId: instanceIds[0] } : {}),
      },
      options.hostEnv,
    );
    options.onAgent?.({ child, output }, token);
    try {
      return await result;
    } catch (error) {
      // A stopped execution does not stop the SSM command: the agent must notice by itself.
      if (error instanceof Error && error.name === 'States.Aborted')
        await Promise.race([exited, new Promise((resolve) => setTimeout(resolve, 60_000))]);
      throw error;
    } finally {
      // Like SSM at the command's timeout: a frozen or orphaned agent is killed.
      if (child.exitCode === null) {
        try {
          process.kill(-(child.pid ?? 0), 'SIGCONT');
          process.kill(-(child.pid ?? 0), 'SIGKILL');
        } catch {
          // already gone
        }
      }
      await exited;
      agentLogs.push(output());
    }
  };

  const handlers = new Map<string, (event: unknown, context?: unknown) => Promise<unknown>>();
  for (const [state, module] of Object.entries(handlerModules)) {
    const { handler } = (await import(module)) as { handler: (event: unknown, context?: unknown) => Promise<unknown> };
    handlers.set(state, (event, context) => asPrincipal(functionOfModule(module), () => handler(event, context)));
  }

  return {
    s3,
    ssm,
    sfn,
    definitions,
    resources: json.Resources,
    env,
    agentLogs,
    seal: hmacSeal(Buffer.from(sealKey, 'utf8')),
    repoUrl: (planId) => `s3://${bucket}/plans/${planId}/`,
    async run(kind, input, options = {}) {
      const machine = new StateMachine(definitions[kind] as never, { validationOptions: { checkArn: false } });
      const token = randomBytes(24).toString('base64url');
      const local = Object.fromEntries(
        [...handlers].map(([state, handler]) => [state, (event: unknown) => handler(event) as Promise<never>]),
      );
      const execution = machine.run(input as never, {
        overrides: {
          taskResourceLocalHandlers: {
            ...local,
            RunAgent: (event: unknown) => runAgent(event, options) as Promise<never>,
            RunHostAgent: (event: unknown) => runAgent(event, options) as Promise<never>,
          },
          waitTimeOverrides: { WaitGrace: 0 },
        },
        context: {
          Execution: { Id: `arn:aws:states:eu-central-1:123456789012:execution:cairn-${ENV}-${kind.toLowerCase()}:run-${++executions}` },
          Task: { Token: token },
        },
      });
      return execution.result;
    },
    async runDocument(operation, planId, hostEnv) {
      const { output, exited, closed } = spawnDocument({ operation, planId, taskToken: '', request: '' }, hostEnv);
      const code = await exited;
      await closed;
      agentLogs.push(output());
      return { code, output: output() };
    },
    awsCalls: () => recording.calls(),
    async stop() {
      const unlisted = unlistedCalls(recording.calls(), {
        region: config.region,
        account: config.account,
        envName: ENV,
        plans: built.config.plans,
      });
      recording.stop();
      await Promise.all([conditional.stop(), ssm.close(), sfn.close()]);
      await s3.stop();
      await rm(work, { recursive: true, force: true });
      // The inventory (agent/core/aws-calls.ts) must list every call the run made, or IAM was never asked about it.
      if (unlisted.length > 0)
        throw new Error(`AWS calls the inventory (agent/core/aws-calls.ts) does not list:\n  ${unlisted.join('\n  ')}`);
    },
  };
}

/** Template intrinsics in a definition or parameter: Fn::Join, Ref and Fn::GetAtt become plain strings. */
export function resolveIntrinsics(value: unknown): string {
  if (typeof value === 'string') return value;
  if (typeof value === 'number') return String(value);
  const v = value as Record<string, unknown>;
  if (Array.isArray(v['Fn::Join'])) {
    const [separator, parts] = v['Fn::Join'] as [string, unknown[]];
    return parts.map(resolveIntrinsics).join(separator);
  }
  if (typeof v.Ref === 'string')
    return v.Ref === 'AWS::Region'
      ? 'eu-central-1'
      : v.Ref === 'AWS::AccountId'
        ? '123456789012'
        : v.Ref === 'AWS::Partition'
          ? 'aws'
          : v.Ref === 'AWS::URLSuffix'
            ? 'amazonaws.com'
            : `ref-${v.Ref}`;
  if (Array.isArray(v['Fn::GetAtt'])) {
    const [id] = v['Fn::GetAtt'] as [string, string];
    return `arn:aws:lambda:eu-central-1:123456789012:function:${id}`;
  }
  throw new Error(`cannot resolve ${JSON.stringify(value).slice(0, 200)}`);
}

/**
 * One deviation of the local runner, patched here and only here: it resolves a
 * Task's TimeoutSecondsPath against the state's input AFTER Parameters (AWS
 * resolves it against the state input), so `$.plan.timeoutSeconds` finds
 * nothing. The RunAgent state gets the plan's fixed timeout instead; the
 * heartbeat timeout, which the runner does not enforce at all, is enforced by
 * the callback stand-in.
 */
function forLocalRunner(definition: Record<string, unknown>): Record<string, unknown> {
  const states = definition.States as Record<string, Record<string, unknown>>;
  for (const state of Object.values(states)) {
    if (state.TimeoutSecondsPath !== undefined) {
      delete state.TimeoutSecondsPath;
      state.TimeoutSeconds = 900;
    }
    // The states inside an inline Map (BackupHosts' RunHostAgent) too.
    const processor = state.ItemProcessor as Record<string, unknown> | undefined;
    if (processor !== undefined) forLocalRunner(processor);
  }
  return definition;
}
