import { Logger } from '@aws-lambda-powertools/logger';
import { injectLambdaContext } from '@aws-lambda-powertools/logger/middleware';
import { Metrics } from '@aws-lambda-powertools/metrics';
import { logMetrics } from '@aws-lambda-powertools/metrics/middleware';
import { Tracer } from '@aws-lambda-powertools/tracer';
import { captureLambdaHandler } from '@aws-lambda-powertools/tracer/middleware';
import { DescribeInstanceInformationCommand, GetParameterCommand, SSMClient } from '@aws-sdk/client-ssm';
import middy, { type MiddlewareObj } from '@middy/core';
import { recordAwsCalls } from '../agent/core/aws-call-record.ts';
import { CairnError, errorMessage } from '../agent/core/errors.ts';
import { planParameterPrefix, type Plan } from '../agent/core/plan.ts';
import { controlSealParameterName, hmacSeal, type RecordSeal } from '../agent/core/run-lease.ts';
import type { Repository } from '../agent/core/repository.ts';
import { PlanSource } from '../agent/orchestration/plan-source.ts';
import type { DeletableStorage } from '../agent/core/storage.ts';
import { openStorage } from '../agent/storage/open.ts';
import { openEndpointStorage } from '../agent/storage/s3-endpoint.ts';

/**
 * What every handler shares: Powertools logger, metrics and tracer, the plan
 * from Parameter Store, the plan's repository, and errors whose `name` is the
 * `Cairn.*` code, because that name is what a state machine's Catch and an
 * execution's failure show.
 *
 * Every AWS call a handler makes (directly or through the agent's storage and plan source) is
 * listed in agent/core/aws-calls.ts, which test/cdk/iam-evaluation.test.ts evaluates against
 * the function roles the CDK app synthesizes: a new call belongs there, or it fails in AWS.
 */
export const logger = new Logger({ serviceName: process.env.POWERTOOLS_SERVICE_NAME ?? 'cairn' });
export const metrics = new Metrics({
  namespace: process.env.POWERTOOLS_METRICS_NAMESPACE ?? 'Cairn',
  serviceName: process.env.POWERTOOLS_SERVICE_NAME ?? 'cairn',
});
// Powertools adds `service` to every metric's dimensions by default; the alarms (cdk/lib/cairn-monitoring.ts)
// watch {PlanId} alone, and CloudWatch matches the whole dimension set, so with it they would never see a datum.
metrics.clearDefaultDimensions();
const tracer = new Tracer({ serviceName: process.env.POWERTOOLS_SERVICE_NAME ?? 'cairn' });

let ssm: SSMClient | undefined;
export function ssmClient(): SSMClient {
  ssm ??= recordAwsCalls(new SSMClient({}));
  return ssm;
}

/** Wraps a handler: validated errors become named errors; logs, metrics and traces as Powertools does them. */
export function handlerOf<E, R>(name: string, fn: (event: E) => Promise<R>): (event: E, context?: unknown) => Promise<R> {
  const named = async (event: E): Promise<R> => {
    try {
      return await fn(event);
    } catch (error) {
      throw namedError(error);
    }
  };
  const handlerKey: MiddlewareObj<E, R> = {
    before: () => {
      logger.appendPersistentKeys({ handler: name });
    },
  };
  const wrapped = middy(named)
    // `handler` is a persistent key: resetKeys clears temporary keys after every invocation, so a key
    // appended once would be on the first invocation's lines only. It is set on each invocation (not
    // once at module scope) because the local runner and the tests load several handlers in one process.
    .use(handlerKey)
    .use(captureLambdaHandler(tracer))
    .use(injectLambdaContext(logger, { resetKeys: true }))
    .use(logMetrics(metrics));
  return (event: E, context?: unknown) => wrapped(event, (context ?? localContext(name)) as never);
}

/** An Error whose name is the Cairn code: Step Functions shows it as the error, the message as the cause. */
export function namedError(error: unknown): Error {
  if (error instanceof CairnError) {
    const named = new Error(error.hint ? `${error.message} (${error.hint})` : error.message, { cause: error });
    named.name = error.code;
    return named;
  }
  if (error instanceof Error && /^(Cairn|States)\./.test(error.name)) return error;
  const named = new Error(errorMessage(error), { cause: error });
  named.name = 'Cairn.Failure';
  return named;
}

/** Outside Lambda (the local runner) there is no context object; Powertools needs a few fields. */
function localContext(name: string): Record<string, unknown> {
  return {
    functionName: name,
    functionVersion: '$LATEST',
    invokedFunctionArn: `arn:aws:lambda:local:000000000000:function:${name}`,
    memoryLimitInMB: '256',
    awsRequestId: `local-${Date.now().toString(36)}`,
    getRemainingTimeInMillis: () => 60_000,
  };
}

export function envName(): string {
  const name = process.env.ENV_NAME;
  if (!name)
    throw new CairnError('Cairn.Config', 'ENV_NAME is not set for this function', {
      hint: 'deploy the function through the Cairn CDK app',
    });
  return name;
}

/** Plans and passphrases from Parameter Store, as the agent reads them (agent/orchestration/plan-source.ts). */
function planSource(): PlanSource {
  return new PlanSource({ CAIRN_PLAN_PARAMETER_PREFIX: process.env.PLAN_PARAMETER_PREFIX ?? planParameterPrefix(envName()) }, ssmClient());
}

let seal: Promise<RecordSeal> | undefined;
/**
 * The control plane's record seal (agent/core/run-lease.ts): a Secrets Manager secret, read once per
 * container through Parameter Store's reference to it. Only the functions that write the run lease and
 * run records may read it; hosts are denied it (docs/cdk.md, "Host policy").
 */
export function controlSeal(): Promise<RecordSeal> {
  seal ??= readControlSeal().catch((error: unknown) => {
    seal = undefined; // a later invocation tries again
    throw error;
  });
  return seal;
}

async function readControlSeal(): Promise<RecordSeal> {
  const name = process.env.CONTROL_SEAL_PARAMETER ?? controlSealParameterName(envName());
  let value: string | undefined;
  try {
    value = (await ssmClient().send(new GetParameterCommand({ Name: name, WithDecryption: true }))).Parameter?.Value;
  } catch (error) {
    throw new CairnError('Cairn.Config', `cannot read the control plane's seal key ${name}: ${errorMessage(error)}`, {
      hint: 'deploy the Cairn CDK app (it creates the secret and grants this function secretsmanager:GetSecretValue on it)',
      cause: error,
    });
  }
  if (!value || value.length < 32)
    throw new CairnError('Cairn.Config', `the control plane's seal key ${name} is shorter than 32 characters`);
  return hmacSeal(Buffer.from(value, 'utf8'));
}

/** A SecureString the plan names (its passphrase), decrypted through SSM with Cairn's parameter key. */
export function planSecret(name: string): Promise<string> {
  return planSource().secret(name);
}

export async function loadPlan(planId: unknown): Promise<Plan> {
  if (typeof planId !== 'string' || planId === '')
    throw new CairnError('Cairn.InvalidInput', 'planId: required', { hint: 'start the execution with {"planId": "<plan id>"}' });
  try {
    return await planSource().plan(planId);
  } catch (error) {
    if (error instanceof CairnError && error.cause instanceof Error && error.cause.name === 'ParameterNotFound') {
      throw new CairnError(
        'Cairn.InvalidInput',
        `planId: there is no plan ${JSON.stringify(planId)} in this environment (${error.message})`,
        { hint: 'use the id of a plan in cdk/config/<env>.ts', cause: error },
      );
    }
    throw error;
  }
}

/**
 * The plan's repository storage (deleting is allowed: these are control-plane credentials). A
 * repository at an S3-compatible endpoint is signed with the control plane's access key its plan names, read from
 * Parameter Store on each use (a rotated key is picked up); an AWS S3 one with this function's role.
 */
export async function planStorage(plan: Plan): Promise<DeletableStorage> {
  const credentials = await planSource().endpointCredentials(plan, 'control');
  if (credentials !== undefined) return openEndpointStorage(plan.repository.url, credentials, process.env);
  return openStorage(plan.repository.url, process.env);
}

/** Opens the plan's repository (the passphrase comes from the SecureString parameter the plan names). */
export async function openPlanRepository(plan: Plan, storage?: DeletableStorage): Promise<{ repo: Repository; storage: DeletableStorage }> {
  const store = storage ?? (await planStorage(plan));
  return { repo: await planSource().openRepository(plan, store), storage: store };
}

export const controlPlaneWho = (role: string): { host: string; user: string } => ({
  host: `lambda:${process.env.AWS_LAMBDA_FUNCTION_NAME ?? role}`,
  user: `cairn-${role}`,
});

/**
 * The plan's hosts that SSM reports online, in a stable order. A tag selector
 * resolves to the managed instances carrying the tag; a backup runs on the
 * first of them (docs/orchestration.md).
 */
export async function onlineInstances(plan: Plan): Promise<string[]> {
  const filters =
    'instanceIds' in plan.targets
      ? [{ Key: 'InstanceIds', Values: plan.targets.instanceIds }]
      : [{ Key: `tag:${plan.targets.tag.key}`, Values: [plan.targets.tag.value] }];
  return describeOnline(filters);
}

export async function isOnline(instanceId: string): Promise<boolean> {
  return (await describeOnline([{ Key: 'InstanceIds', Values: [instanceId] }])).includes(instanceId);
}

async function describeOnline(filters: Array<{ Key: string; Values: string[] }>): Promise<string[]> {
  const online: string[] = [];
  let token: string | undefined;
  do {
    const page = await ssmClient().send(new DescribeInstanceInformationCommand({ Filters: filters, NextToken: token, MaxResults: 50 }));
    for (const info of page.InstanceInformationList ?? [])
      if (info.InstanceId && info.PingStatus === 'Online') online.push(info.InstanceId);
    token = page.NextToken;
  } while (token);
  return online.sort();
}
