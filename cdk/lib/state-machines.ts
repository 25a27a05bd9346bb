// One unit: the four state machines (Backup, Retention, Restore, Verify) are built from the same
// shared states (invoke, runAgent, failureTail, keepLocks) and one construct wires them alike.
import { Duration, RemovalPolicy, Stack, type CfnElement } from 'aws-cdk-lib';
import * as iam from 'aws-cdk-lib/aws-iam';
import type * as lambda from 'aws-cdk-lib/aws-lambda';
import * as logs from 'aws-cdk-lib/aws-logs';
import * as sfn from 'aws-cdk-lib/aws-stepfunctions';
import * as tasks from 'aws-cdk-lib/aws-stepfunctions-tasks';
import { Construct } from 'constructs';
import { acknowledgeFindings, arnFinding, attrFinding } from './nag.ts';

/**
 * The state machines, one function each, written in JSONPath (the local
 * runner cannot evaluate JSONata). The Lambda handlers in functions/ are
 * written to these shapes:
 *
 * - Backup `{planId, scheduledTime?}`: PlanBackup → Skipped? → EnsureRepository → RunAgent (SSM
 *   sendCommand.waitForTaskToken) → FinalizeBackup → [with Object Lock: StartLocks → ExtendLocks
 *   ⟲ LocksKept?] → ApplyRetention → WaitGrace → GcSweep (distributed Map) → Succeeded.
 * - Retention `{planId}`: EnsureRepository → ApplyRetention → WaitGrace → GcSweep.
 * - Restore (the restore input, docs/contracts.md): PlanRestore → DryRun? → RunAgent → RecordResult.
 * - Verify `{planId}`: PlanVerify → RunAgent (verify or drill) → RecordResult.
 *
 * Every Task catches States.ALL into `$.error` → RecordFailure → Failed.
 */

export interface MachineFunctions {
  planBackup: lambda.IFunction;
  finalizeBackup: lambda.IFunction;
  applyRetention: lambda.IFunction;
  gcSweep: lambda.IFunction;
  planRestore: lambda.IFunction;
  planVerify: lambda.IFunction;
  recordResult: lambda.IFunction;
  createRepository: lambda.IFunction;
  /** Only with Object Lock (cairn-functions.ts). */
  extendLocks?: lambda.IFunction | undefined;
}

export interface MachineContext {
  envName: string;
  functions: MachineFunctions;
  documentName: string;
  commandLogGroup: logs.ILogGroup;
}

/** Invokes a function with its payload and puts its return value (the bare payload) at resultPath. */
function invoke(
  scope: Construct,
  id: string,
  fn: lambda.IFunction,
  payload: Record<string, unknown> | 'input',
  resultPath: string | undefined,
): tasks.LambdaInvoke {
  const task = new tasks.LambdaInvoke(scope, id, {
    lambdaFunction: fn,
    // Without a payload the whole state input is the event (TaskInput.fromJsonPathAt('$') with
    // payloadResponseOnly renders `"Parameters": "$"`, which sends the string "$": the e2e test caught it).
    ...(payload === 'input' ? {} : { payload: sfn.TaskInput.fromObject(payload) }),
    payloadResponseOnly: true,
    resultPath: resultPath ?? sfn.JsonPath.DISCARD,
    retryOnServiceExceptions: false,
  });
  task.addRetry({
    errors: ['Lambda.ServiceException', 'Lambda.AWSLambdaException', 'Lambda.SdkClientException', 'Lambda.TooManyRequestsException'],
    interval: Duration.seconds(2),
    maxAttempts: 6,
    backoffRate: 2,
  });
  return task;
}

/** RecordFailure → Failed, the target of every Catch. */
function failureTail(scope: Construct, ctx: MachineContext, operation: string): sfn.IChainable {
  const record = invoke(
    scope,
    'RecordFailure',
    ctx.functions.recordResult,
    { 'planId.$': '$.planId', operation, outcome: 'failure', 'executionId.$': '$$.Execution.Id', 'error.$': '$.error' },
    undefined,
  );
  const failed = new sfn.Fail(scope, 'Failed', { errorPath: '$.error.Error', causePath: '$.error.Cause' });
  // A failure to record must not hide the original error.
  record.addCatch(failed, { errors: ['States.ALL'], resultPath: sfn.JsonPath.DISCARD });
  return record.next(failed);
}

const catchAll = { errors: ['States.ALL'], resultPath: '$.error' };

/**
 * The task that sends the SSM command and waits for the agent to report
 * through the task token; a dead agent is caught by the heartbeat timeout.
 * `operation` is a literal or a JSONPath to the plan's operation.
 */
function runAgent(
  scope: Construct,
  ctx: MachineContext,
  operation: { literal: string } | { path: string },
  name = 'RunAgent',
): sfn.CustomState {
  return new sfn.CustomState(scope, name, {
    stateJson: {
      Type: 'Task',
      Resource: 'arn:aws:states:::aws-sdk:ssm:sendCommand.waitForTaskToken',
      Parameters: {
        DocumentName: ctx.documentName,
        'InstanceIds.$': '$.plan.instanceIds',
        Parameters: {
          ...('literal' in operation ? { operation: [operation.literal] } : { 'operation.$': `States.Array(${operation.path})` }),
          'planId.$': 'States.Array($.planId)',
          'taskToken.$': 'States.Array($$.Task.Token)',
          'request.$': 'States.Array($.plan.request)',
        },
        CloudWatchOutputConfig: { CloudWatchOutputEnabled: true, CloudWatchLogGroupName: ctx.commandLogGroup.logGroupName },
        Comment: `Cairn ${ctx.envName}`,
      },
      HeartbeatSecondsPath: '$.plan.heartbeatSeconds',
      TimeoutSecondsPath: '$.plan.timeoutSeconds',
      ResultPath: '$.agent',
    },
  });
}

/**
 * create-repository: the plan's repository, made if its prefix holds none (with the plan's key
 * source), so a fresh deployment's first scheduled run needs no manual `cairn init`; an existing
 * one is only read. Result `$.repository`: `{created, repositoryId, keySource}`.
 */
function ensureRepository(scope: Construct, ctx: MachineContext, onError: sfn.IChainable): sfn.TaskStateBase {
  return invoke(scope, 'EnsureRepository', ctx.functions.createRepository, { 'planId.$': '$.planId' }, '$.repository').addCatch(
    onError,
    catchAll,
  );
}

/**
 * With Object Lock: ExtendLocks keeps every object the new snapshot uses locked for the lock
 * period (functions/extend-locks.ts), a bounded batch per invocation, called again with its own
 * result (`$.locks`) until `done`. Without Object Lock, nothing. `prefix` names the states of an
 * `each` plan's copy inside the BackupHosts Map (state names are unique in a machine).
 */
function keepLocks(scope: Construct, ctx: MachineContext, onError: sfn.IChainable, next: sfn.IChainable, prefix = ''): sfn.IChainable {
  const fn = ctx.functions.extendLocks;
  if (fn === undefined) return next;
  const start = new sfn.Pass(scope, `${prefix}StartLocks`, { result: sfn.Result.fromObject({}), resultPath: '$.locks' });
  const extend = invoke(
    scope,
    `${prefix}ExtendLocks`,
    fn,
    { 'planId.$': '$.planId', 'snapshotId.$': '$.finalized.snapshotId', 'locks.$': '$.locks' },
    '$.locks',
  ).addCatch(onError, catchAll);
  const kept = new sfn.Choice(scope, `${prefix}LocksKept?`).when(sfn.Condition.booleanEquals('$.locks.done', true), next).otherwise(extend);
  return start.next(extend).next(kept);
}

/** ApplyRetention → WaitGrace → GcSweep; shared by the Backup machine's tail and the Retention machine. */
function retentionStates(scope: Construct, ctx: MachineContext, onError: sfn.IChainable): sfn.Chain {
  const apply = invoke(scope, 'ApplyRetention', ctx.functions.applyRetention, { 'planId.$': '$.planId' }, '$.retention').addCatch(
    onError,
    catchAll,
  );
  const wait = new sfn.Wait(scope, 'WaitGrace', { time: sfn.WaitTime.secondsPath('$.retention.graceSeconds') });
  const sweep = new sfn.DistributedMap(scope, 'GcSweep', {
    itemsPath: '$.retention.gc.prefixes',
    itemSelector: { 'planId.$': '$.planId', 'generation.$': '$.retention.gc.generation', 'prefix.$': '$$.Map.Item.Value' },
    maxConcurrency: 16,
    resultPath: sfn.JsonPath.DISCARD,
  });
  sweep.itemProcessor(invoke(scope, 'SweepPrefix', ctx.functions.gcSweep, 'input', undefined));
  sweep.addCatch(onError, catchAll);
  return apply.next(wait).next(sweep);
}

/**
 * An `each` plan's hosts (PlanBackup's `$.plan.hosts`, one item per host whose own lease the run
 * holds), each backed up on its own: RunHostAgent → FinalizeHostBackup → (with Object Lock: the
 * host's ExtendLocks loop) → HostBackedUp. A host's failure is recorded for that host
 * (RecordHostFailure: history, BackupFailed, its lease given back) and does not stop the others; `$.anyHostFailed.value` then says whether any failed, so the
 * execution fails after retention has run (HostsFailed?). An inline Map: the local runner has no
 * ItemReader, and the host list is small.
 */
function backupHosts(scope: Construct, ctx: MachineContext, onError: sfn.IChainable): sfn.Chain {
  const map = new sfn.Map(scope, 'BackupHosts', {
    itemsPath: '$.plan.hosts',
    itemSelector: { 'planId.$': '$.planId', 'plan.$': '$$.Map.Item.Value' },
    resultPath: '$.hostResults',
  });
  const failed = new sfn.Pass(scope, 'HostFailed', {
    parameters: { 'instanceId.$': '$.plan.instanceId', status: 'failed', 'error.$': '$.error' },
  });
  const recordFailure = invoke(
    scope,
    'RecordHostFailure',
    ctx.functions.recordResult,
    {
      'planId.$': '$.planId',
      operation: 'backup',
      outcome: 'failure',
      'executionId.$': '$$.Execution.Id',
      'instanceId.$': '$.plan.instanceId',
      'error.$': '$.error',
    },
    undefined,
  );
  // A failure to record must not hide the host's own error.
  recordFailure.addCatch(failed, { errors: ['States.ALL'], resultPath: sfn.JsonPath.DISCARD });
  const agent = runAgent(scope, ctx, { literal: 'backup' }, 'RunHostAgent').addCatch(recordFailure, catchAll);
  const finalize = invoke(scope, 'FinalizeHostBackup', ctx.functions.finalizeBackup, 'input', '$.finalized').addCatch(
    recordFailure,
    catchAll,
  );
  const ok = new sfn.Pass(scope, 'HostBackedUp', {
    parameters: {
      'instanceId.$': '$.plan.instanceId',
      status: 'ok',
      'snapshotId.$': '$.finalized.snapshotId',
      'host.$': '$.finalized.host',
    },
  });
  // With Object Lock, each host's new snapshot gets its objects' locks extended before the host counts as backed up;
  // a failure there is that host's (its snapshot is committed, but not yet protected for the lock period).
  map.itemProcessor(
    sfn.Chain.start(agent)
      .next(finalize)
      .next(keepLocks(scope, ctx, recordFailure, ok, 'Host')),
  );
  recordFailure.next(failed);
  map.addCatch(onError, catchAll);
  // Choice rules cannot search an array: the statuses are listed, then ArrayContains asks for 'failed'.
  const statuses = new sfn.Pass(scope, 'HostStatuses', {
    parameters: { 'list.$': '$.hostResults[*].status' },
    resultPath: '$.hostStatuses',
  });
  const anyFailed = new sfn.Pass(scope, 'AnyHostFailed', {
    parameters: { 'value.$': "States.ArrayContains($.hostStatuses.list, 'failed')" },
    resultPath: '$.anyHostFailed',
  });
  return map.next(statuses).next(anyFailed);
}

/** The Backup machine's end: an `each` run with a failed host fails (each failure is already recorded), any other succeeds. */
function backupOutcome(scope: Construct): sfn.Choice {
  const failed = sfn.Condition.and(
    sfn.Condition.isPresent('$.anyHostFailed.value'),
    sfn.Condition.booleanEquals('$.anyHostFailed.value', true),
  );
  return new sfn.Choice(scope, 'HostsFailed?')
    .when(
      failed,
      new sfn.Fail(scope, 'SomeHostsFailed', {
        error: 'Cairn.Failure',
        cause: 'the backup of one or more hosts failed: see hostResults and the RecordHostFailure states',
      }),
    )
    .otherwise(new sfn.Succeed(scope, 'Succeeded'));
}

export function backupDefinition(scope: Construct, ctx: MachineContext): sfn.IChainable {
  const onError = failureTail(scope, ctx, 'backup');
  const plan = invoke(
    scope,
    'PlanBackup',
    ctx.functions.planBackup,
    { 'planId.$': '$.planId', 'input.$': '$', 'executionId.$': '$$.Execution.Id' },
    '$.plan',
  ).addCatch(onError, catchAll);
  const skipped = new sfn.Succeed(scope, 'SkippedAlreadyDone');
  const agent = runAgent(scope, ctx, { literal: 'backup' }).addCatch(onError, catchAll);
  const finalize = invoke(scope, 'FinalizeBackup', ctx.functions.finalizeBackup, 'input', '$.finalized').addCatch(onError, catchAll);
  const retention = retentionStates(scope, ctx, onError).next(backupOutcome(scope));
  const each = sfn.Condition.and(sfn.Condition.isPresent('$.plan.mode'), sfn.Condition.stringEquals('$.plan.mode', 'each'));
  return plan.next(
    new sfn.Choice(scope, 'Skipped?')
      .when(sfn.Condition.and(sfn.Condition.isPresent('$.plan.skip'), sfn.Condition.booleanEquals('$.plan.skip', true)), skipped)
      .otherwise(
        ensureRepository(scope, ctx, onError).next(
          new sfn.Choice(scope, 'EachHost?')
            .when(each, backupHosts(scope, ctx, onError).next(retention))
            .otherwise(agent.next(finalize).next(keepLocks(scope, ctx, onError, retention))),
        ),
      ),
  );
}

export function retentionDefinition(scope: Construct, ctx: MachineContext): sfn.IChainable {
  const onError = failureTail(scope, ctx, 'retention');
  // A retention schedule may fire before the plan's first backup: it then finds an empty repository, not none.
  return ensureRepository(scope, ctx, onError)
    .next(retentionStates(scope, ctx, onError))
    .next(new sfn.Succeed(scope, 'Succeeded'));
}

export function restoreDefinition(scope: Construct, ctx: MachineContext): sfn.IChainable {
  const onError = failureTail(scope, ctx, 'restore');
  const plan = invoke(scope, 'PlanRestore', ctx.functions.planRestore, 'input', '$.plan').addCatch(onError, catchAll);
  const dryRun = new sfn.Succeed(scope, 'DryRunPlanned', { outputPath: '$.plan' });
  const agent = runAgent(scope, ctx, { literal: 'restore' }).addCatch(onError, catchAll);
  const record = invoke(
    scope,
    'RecordResult',
    ctx.functions.recordResult,
    {
      'planId.$': '$.planId',
      operation: 'restore',
      outcome: 'success',
      'executionId.$': '$$.Execution.Id',
      'plan.$': '$.plan',
      'summary.$': '$.agent',
    },
    '$.recorded',
  ).addCatch(onError, catchAll);
  return plan.next(
    new sfn.Choice(scope, 'DryRun?')
      .when(sfn.Condition.and(sfn.Condition.isPresent('$.plan.dryRun'), sfn.Condition.booleanEquals('$.plan.dryRun', true)), dryRun)
      .otherwise(agent.next(record).next(new sfn.Succeed(scope, 'Succeeded'))),
  );
}

export function verifyDefinition(scope: Construct, ctx: MachineContext): sfn.IChainable {
  const onError = failureTail(scope, ctx, 'verify');
  const plan = invoke(
    scope,
    'PlanVerify',
    ctx.functions.planVerify,
    { 'planId.$': '$.planId', 'executionId.$': '$$.Execution.Id' },
    '$.plan',
  ).addCatch(onError, catchAll);
  const agent = runAgent(scope, ctx, { path: '$.plan.operation' }).addCatch(onError, catchAll);
  const record = invoke(
    scope,
    'RecordResult',
    ctx.functions.recordResult,
    {
      'planId.$': '$.planId',
      'operation.$': '$.plan.operation',
      outcome: 'success',
      'executionId.$': '$$.Execution.Id',
      'summary.$': '$.agent',
    },
    '$.recorded',
  ).addCatch(onError, catchAll);
  return plan.next(agent).next(record).next(new sfn.Succeed(scope, 'Succeeded'));
}

export type MachineKind = 'Backup' | 'Retention' | 'Restore' | 'Verify';

const definitions: Record<MachineKind, (scope: Construct, ctx: MachineContext) => sfn.IChainable> = {
  Backup: backupDefinition,
  Retention: retentionDefinition,
  Restore: restoreDefinition,
  Verify: verifyDefinition,
};

/** One Standard state machine: JSONPath, logging ALL to its own log group, X-Ray on. */
export class CairnStateMachine extends Construct {
  readonly stateMachine: sfn.StateMachine;

  constructor(scope: Construct, id: MachineKind, ctx: MachineContext) {
    super(scope, id);
    const logGroup = new logs.LogGroup(this, 'Logs', {
      logGroupName: `/aws/vendedlogs/states/cairn-${ctx.envName}-${id.toLowerCase()}`,
      retention: logs.RetentionDays.ONE_YEAR,
      removalPolicy: RemovalPolicy.RETAIN,
    });
    this.stateMachine = new sfn.StateMachine(this, 'StateMachine', {
      stateMachineName: `cairn-${ctx.envName}-${id.toLowerCase()}`,
      stateMachineType: sfn.StateMachineType.STANDARD,
      queryLanguage: sfn.QueryLanguage.JSON_PATH,
      definitionBody: sfn.DefinitionBody.fromChainable(definitions[id](this, ctx)),
      // Level ALL (every state's events, what cdk-nag's SF1 asks for) without execution data: inputs and
      // outputs carry task tokens (a token is the capability to report for the run) and restore inputs.
      logs: { destination: logGroup, level: sfn.LogLevel.ALL, includeExecutionData: false },
      tracingEnabled: true,
    });
    const stack = Stack.of(this);
    const machineRef = `{"Fn::Select":[6,{"Fn::Split":[":",{"Ref":"${stack.getLogicalId(this.stateMachine.node.defaultChild as CfnElement)}"}]}]}`;
    const f = ctx.functions;
    const fns = [
      f.planBackup,
      f.finalizeBackup,
      f.applyRetention,
      f.gcSweep,
      f.planRestore,
      f.planVerify,
      f.recordResult,
      f.createRepository,
      ...(f.extendLocks ? [f.extendLocks] : []),
    ];
    acknowledgeFindings(
      this.stateMachine,
      'AwsSolutions-IAM5',
      [
        ...fns.map((fn) => `Resource::${attrFinding(fn.node.defaultChild as CfnElement)}:*`),
        `Resource::${arnFinding(stack, `states:${stack.region}:${stack.account}:execution:${machineRef}:*`)}`,
        `Resource::${arnFinding(stack, `states:${stack.region}:${stack.account}:execution:${machineRef}/*:*`)}`,
        `Resource::${arnFinding(stack, `ec2:${stack.region}:${stack.account}:instance/*`)}`,
        `Resource::${arnFinding(stack, `ssm:${stack.region}:${stack.account}:managed-instance/*`)}`,
      ],
      "Lambda grants cover the function's versions (Arn:*); the distributed Map runs child executions of this machine only; SendCommand targets the plan's hosts, which the plan function resolves at run time (EC2 instances or on-prem managed instances), and only with this environment's document.",
    );
    acknowledgeFindings(
      this.stateMachine,
      'AwsSolutions-IAM5',
      ['Resource::*'],
      'X-Ray tracing (xray:PutTraceSegments, PutTelemetryRecords, GetSampling*) and log delivery (logs:*LogDelivery) support no resource scoping.',
    );
    if (id !== 'Retention') {
      this.stateMachine.addToRolePolicy(
        new iam.PolicyStatement({
          actions: ['ssm:SendCommand'],
          resources: [
            `arn:${stack.partition}:ssm:${stack.region}:${stack.account}:document/${ctx.documentName}`,
            `arn:${stack.partition}:ec2:${stack.region}:${stack.account}:instance/*`,
            `arn:${stack.partition}:ssm:${stack.region}:${stack.account}:managed-instance/*`,
          ],
        }),
      );
    }
  }
}

export type CairnStateMachinesProps = MachineContext;

/** The four machines, as public properties for tests and the orchestration code. */
export class CairnStateMachines extends Construct {
  readonly backup: sfn.StateMachine;
  readonly retention: sfn.StateMachine;
  readonly restore: sfn.StateMachine;
  readonly verify: sfn.StateMachine;

  constructor(scope: Construct, id: string, props: CairnStateMachinesProps) {
    super(scope, id);
    this.backup = new CairnStateMachine(this, 'Backup', props).stateMachine;
    this.retention = new CairnStateMachine(this, 'Retention', props).stateMachine;
    this.restore = new CairnStateMachine(this, 'Restore', props).stateMachine;
    this.verify = new CairnStateMachine(this, 'Verify', props).stateMachine;
  }

  get all(): sfn.StateMachine[] {
    return [this.backup, this.retention, this.restore, this.verify];
  }
}
