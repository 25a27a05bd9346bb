import { AsyncLocalStorage } from 'node:async_hooks';
import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { setAwsCallSink, type AwsCallRecord } from '../../agent/core/aws-call-record.ts';
import { agentCalls, functionCalls, type AgentOperation, type AwsCall, type CallScope } from '../../agent/core/aws-calls.ts';
import { PLAN_CONTEXT_KEY } from '../../agent/core/orchestration.ts';
import {
  planParameterName,
  planParameterPrefix,
  referencedParameters,
  repositoryEndpoint,
  repositoryLocation,
  type Plan,
} from '../../agent/core/plan.ts';
import { controlSealParameterName } from '../../agent/core/run-lease.ts';
import { createRepositoryCalls } from '../../functions/create-repository.ts';

/**
 * The e2e runs' record of every AWS SDK command they send, checked against the inventory
 * (agent/core/aws-calls.ts and functions/create-repository.ts's createRepositoryCalls). The real
 * clients carry the recording middleware (agent/core/aws-call-record.ts); this file installs the
 * sinks: in the test's process, where the harness runs the handlers, each call is attributed to
 * the function whose handler is running (AsyncLocalStorage); in the agent's processes, a preload
 * (./sdk-calls-preload.mjs) appends them to a file as the plan's host. A call matches an inventory
 * entry of its principal (the host: its plan and operation; a function: any plan) when the
 * command, the resource (the key against the entry's template), the listing prefix, the
 * conditional headers, the parameter's decryption and the KMS encryption context all agree.
 */

/** A recorded call with who made it: the host of a plan (for an operation), a function, or the test itself. */
export interface RecordedCall extends AwsCallRecord {
  principal: string;
  planId?: string;
  operation?: string;
}

export const PRELOAD = fileURLToPath(new URL('./sdk-calls-preload.mjs', import.meta.url));

/** The principal of the handler running now (the harness wraps each handler in it). */
const running = new AsyncLocalStorage<string>();

/** Runs a handler as `principal` (a function name): the calls it makes are recorded as that function's. */
export function asPrincipal<T>(principal: string, fn: () => Promise<T>): Promise<T> {
  return running.run(principal, fn);
}

/** The function name of a handler module (functions/plan-backup.ts → planBackup). */
export function functionOfModule(path: string): string {
  const base = /([^/]+)\.ts$/.exec(path)?.[1] ?? path;
  return base.replace(/-([a-z])/g, (_, c: string) => c.toUpperCase());
}

/** Starts recording this process's calls; the agent's processes append to `file` through the preload. */
export function startRecording(file: string): { calls: () => RecordedCall[]; stop: () => void } {
  const local: RecordedCall[] = [];
  setAwsCallSink((record) => local.push({ principal: running.getStore() ?? 'test', ...record }));
  return {
    calls: () => [
      ...local,
      ...(existsSync(file)
        ? readFileSync(file, 'utf8')
            .split('\n')
            .filter((l) => l !== '')
            .map((l) => JSON.parse(l) as RecordedCall)
        : []),
    ],
    stop: () => setAwsCallSink(undefined),
  };
}

export interface Deployment {
  region: string;
  account: string;
  envName: string;
  plans: readonly Plan[];
}

/** Where the e2e deployment's calls go, for one plan (names the recorded calls are compared with). */
export function e2eScope(d: Deployment, plan: Plan, principal = 'host'): CallScope {
  const location = repositoryLocation(plan.repository.url);
  const endpoint = repositoryEndpoint(plan.repository);
  return {
    partition: 'aws',
    region: d.region,
    account: d.account,
    bucket: location.bucket,
    prefix: location.prefix,
    // A repository at an S3-compatible endpoint: its S3 calls are not AWS calls (its client is not recorded either).
    ...(endpoint !== undefined
      ? { endpointKeyParameter: endpoint.credentialsParameter, controlEndpointKeyParameter: endpoint.controlCredentialsParameter }
      : {}),
    // A function reads the plan its input names, whichever that is (an unknown one is refused by name).
    planParameterName: principal === 'host' ? planParameterName(d.envName, plan.id) : `${planParameterPrefix(d.envName)}{plan}`,
    secretParameterNames: referencedParameters(plan, 'host'),
    controlSecretParameterNames: referencedParameters(plan, 'control'),
    parameterKeyArn: 'arn:aws:kms:::parameter-key',
    ...('kmsKeyArn' in plan.keySource ? { repositoryKeyArn: plan.keySource.kmsKeyArn } : {}),
    // A repository's id is not known ahead: any value matches (ANY).
    repositoryId: ANY,
    stateMachineArn: '*',
    seal: { parameterName: controlSealParameterName(d.envName), secretArn: 'arn:aws:secretsmanager:::seal' },
  };
}
const ANY = '{repository}';

/** The inventory's calls of a principal for one plan: the host's for an operation, or a function's. */
export function inventoryOf(scope: CallScope, planId: string, principal: string, operation?: string): AwsCall[] | undefined {
  if (principal === 'host') {
    const calls = agentCalls(scope)[operation as AgentOperation] as AwsCall[] | undefined;
    // The agent opens its plan's repository with the plan in the KMS context (plan-source.ts).
    return calls?.map((c) =>
      c.action === 'kms:Decrypt' && c.resource === scope.repositoryKeyArn
        ? { ...c, context: { ...c.context, [`kms:EncryptionContext:${PLAN_CONTEXT_KEY}`]: planId } }
        : c,
    );
  }
  if (principal === 'createRepository') return createRepositoryCalls(scope, planId);
  return (functionCalls(scope) as Record<string, AwsCall[] | undefined>)[principal];
}

function templateRegex(template: string): RegExp {
  const parts = template.split(/(\{[^}]+\})/);
  return new RegExp(`^${parts.map((p) => (p.startsWith('{') ? '[^/]+' : p.replace(/[.*+?^$()|[\]\\]/g, '\\$&'))).join('')}$`);
}

/** Whether a recorded command is the inventory entry `entry` (see the file comment). */
export function matches(call: RecordedCall, entry: AwsCall, scope: CallScope): boolean {
  if (entry.api !== call.command) return false;
  const [service] = entry.action.split(':');
  const expected: Record<string, string> = { s3: 'S3', kms: 'KMS', ssm: 'SSM', states: 'SFN', secretsmanager: 'SecretsManager' };
  if (expected[service ?? ''] !== call.service) return false;
  if (call.service === 'S3') {
    const arn = `arn:${scope.partition}:s3:::${call.bucket ?? ''}${call.key === undefined ? '' : `/${call.key}`}`;
    if (!templateRegex(entry.match?.resource ?? entry.resource).test(arn)) return false;
    const prefix = entry.match?.prefix ?? entry.context['s3:prefix'];
    if ((call.prefix ?? undefined) !== undefined || prefix !== undefined) {
      if (call.prefix === undefined || typeof prefix !== 'string' || !templateRegex(prefix).test(call.prefix)) return false;
    }
    if ((call.ifNoneMatch ?? '') !== (entry.context['s3:if-none-match'] ?? '')) return false;
    if ((call.ifMatch ?? '') !== (entry.context['s3:if-match'] ?? '')) return false;
    if ((call.versioned ?? false) !== entry.action.endsWith('Version')) return false;
    return true;
  }
  if (call.service === 'SSM' && call.command === 'GetParameter') {
    const arn = `arn:${scope.partition}:ssm:${scope.region}:${scope.account}:parameter${call.parameter ?? ''}`;
    return templateRegex(entry.resource).test(arn) && (call.withDecryption ?? false) === (entry.decrypts ?? false);
  }
  if (call.service === 'KMS') {
    if (call.keyId !== entry.resource) return false;
    const wanted = Object.entries(entry.context)
      .filter(([k]) => k.startsWith('kms:EncryptionContext:'))
      .map(([k, v]) => [k.slice('kms:EncryptionContext:'.length), v] as const);
    const sent = call.encryptionContext ?? {};
    if (Object.keys(sent).length !== wanted.length) return false;
    return wanted.every(([k, v]) => sent[k] !== undefined && (v === ANY || sent[k] === v));
  }
  // Step Functions callbacks and DescribeInstanceInformation authorize no resource ("*").
  return entry.resource === '*';
}

export function describeRecorded(call: RecordedCall): string {
  const who = call.principal === 'host' ? `host of ${call.planId ?? '?'} (${call.operation ?? '?'})` : call.principal;
  const what = [
    call.bucket !== undefined ? `s3://${call.bucket}/${call.key ?? ''}` : undefined,
    call.prefix !== undefined ? `prefix=${call.prefix}` : undefined,
    call.ifNoneMatch !== undefined ? `If-None-Match: ${call.ifNoneMatch}` : undefined,
    call.ifMatch !== undefined ? `If-Match: ${call.ifMatch}` : undefined,
    call.versioned ? 'VersionId' : undefined,
    call.keyId,
    call.encryptionContext ? `context ${JSON.stringify(call.encryptionContext)}` : undefined,
    call.parameter,
    call.withDecryption ? 'WithDecryption' : undefined,
  ].filter((x) => x !== undefined);
  return `${who}: ${call.service} ${call.command} ${what.join(' ')}`;
}

/**
 * The recorded calls no inventory entry lists, described (one line per distinct call: ids, times and
 * sequence numbers in keys generalized, so one missing entry is one line). The test's own calls (an operator's
 * `cairn` in-process, its direct reads of the bucket) are not Cairn components' and are left out.
 */
export function unlistedCalls(calls: readonly RecordedCall[], deployment: Deployment): string[] {
  const out = new Set<string>();
  for (const call of calls) {
    if (call.principal === 'test') continue;
    const plans = call.principal === 'host' ? deployment.plans.filter((p) => p.id === call.planId) : deployment.plans;
    const listed = plans.some((plan) => {
      const scope = e2eScope(deployment, plan, call.principal);
      const entries = inventoryOf(scope, plan.id, call.principal, call.operation);
      return entries?.some((entry) => matches(call, entry, scope)) ?? false;
    });
    if (!listed)
      out.add(
        describeRecorded(call)
          .replace(/\d{8}T\d{6,9}Z/g, '{time}')
          .replace(/[0-9a-f]{8,}/g, '{hex}')
          .replace(/-\d{6,8}\b/g, '-{n}'),
      );
  }
  return [...out].sort();
}
