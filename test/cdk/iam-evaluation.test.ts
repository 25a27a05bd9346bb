import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { CfnElement } from 'aws-cdk-lib';
import { agentCalls, functionCalls, CallBuilder, type AwsCall, type CallScope, type FunctionName } from '../../agent/core/aws-calls.ts';
import {
  planParameterName,
  referencedParameters,
  repositoryLocation,
  type EnvironmentConfigInput,
  type Plan,
} from '../../agent/core/plan.ts';
import { dev } from '../../cdk/config/dev.ts';
import { AMAZON_SSM_MANAGED_INSTANCE_CORE } from './amazon-ssm-managed-instance-core.ts';
import { evaluate, TemplateModel, type Caller, type Decision, type PolicyDocument } from './iam-evaluator.ts';
import { synthEnvironment, type Synthesized } from './synth-helpers.ts';
import { PLAN_CONTEXT_KEY } from '../../agent/core/orchestration.ts';
import { controlSealParameterName } from '../../agent/core/run-lease.ts';
import { createRepositoryCalls } from '../../functions/create-repository.ts';

/**
 * Every AWS call in the inventory (agent/core/aws-calls.ts), made by the principal that makes it,
 * evaluated with iam-simulate against the synthesized template: the host's policies (its plan's
 * host policy and AmazonSSMManagedInstanceCore, which the README has users attach), each
 * function's role, the bucket policy and the key policies. Then the calls that must be refused,
 * and mutations of the template that must flip a decision. What the evaluator cannot judge, and
 * its stand-ins, are listed in iam-evaluator.ts.
 */

// A plan whose master key is wrapped by KMS, in the environment's bucket (no repository URL),
// and a plan in another team's bucket (outside the stack: its encryption is not known here).
const KMS_KEY = 'arn:aws:kms:eu-central-1:111111111111:key/0d2a3e7b-1111-2222-3333-444455556666';
const withKmsPlan: EnvironmentConfigInput = {
  ...dev,
  plans: [
    dev.plans[0]!,
    {
      id: 'files-kms',
      targets: { instanceIds: ['i-0123456789abcdef0'] },
      engine: 'files',
      engineOptions: { paths: ['/etc'] },
      schedule: { expression: 'rate(12 hours)' },
      retention: { keepLast: 3 },
      keySource: { kmsKeyArn: KMS_KEY },
      rpo: '13h',
    },
    {
      id: 'files-ext',
      targets: { instanceIds: ['i-0123456789abcdef1'] },
      engine: 'files',
      engineOptions: { paths: ['/srv'] },
      schedule: { expression: 'rate(12 hours)' },
      retention: { keepLast: 3 },
      keySource: { passphraseParameter: '/cairn/kms/files-ext/passphrase' },
      rpo: '13h',
      repository: { url: 's3://other-team-bucket/cairn/files-ext/' },
    },
  ],
};

const outs = { dev: synthEnvironment('dev'), prod: synthEnvironment('prod'), kms: synthEnvironment('kms', { kms: withKmsPlan }) };
type Out = Synthesized;

const logicalId = (out: Out, element: unknown): string => out.stack.getLogicalId(element as CfnElement);
/** The inventory's functions, and create-repository, whose calls functions/create-repository.ts declares. */
type Fn = FunctionName | 'createRepository';
const FUNCTION_NAMES: Fn[] = [
  'planBackup',
  'finalizeBackup',
  'applyRetention',
  'gcSweep',
  'planRestore',
  'planVerify',
  'recordResult',
  'archiveLag',
  'createRepository',
  'freshness',
  'extendLocks',
];

/**
 * The agent opens its plan's repository with the plan in the KMS encryption context
 * (agent/orchestration/plan-source.ts → agent/keys/kms.ts); agent/core/aws-calls.ts's Decrypt of a
 * repository key lists only cairn:repository, so the plan's key is added here.
 */
function withPlanContext(calls: AwsCall[], scope: CallScope, planId: string): AwsCall[] {
  return calls.map((c) =>
    c.action === 'kms:Decrypt' && c.resource === scope.repositoryKeyArn
      ? { ...c, context: { ...c.context, [`kms:EncryptionContext:${PLAN_CONTEXT_KEY}`]: planId } }
      : c,
  );
}

function allFunctionCalls(scope: CallScope, planId: string): Record<Fn, AwsCall[]> {
  const calls = functionCalls(scope);
  const entries = Object.entries(calls).map(([n, c]) => [n, withPlanContext(c, scope, planId)]);
  return {
    ...(Object.fromEntries(entries) as Record<FunctionName, AwsCall[]>),
    createRepository: createRepositoryCalls(scope, planId),
  };
}

/** The seal reads of a scope: GetParameter of the reference, then GetSecretValue. */
function sealCalls(scope: CallScope): AwsCall[] {
  return new CallBuilder(scope).readSeal();
}

function sealSecretArn(out: Out, model: TemplateModel): string {
  return model.text({ Ref: logicalId(out, out.stack.functions.controlSeal.node.defaultChild) });
}

function modelOf(out: Out, json: Record<string, unknown> = out.json): TemplateModel {
  return new TemplateModel(json, out.config.account, out.config.region);
}

function scopeOf(out: Out, model: TemplateModel, plan: Plan): CallScope {
  const location = repositoryLocation(plan.repository.url);
  const keyArn = (key: unknown): string => model.text({ 'Fn::GetAtt': [logicalId(out, key), 'Arn'] });
  return {
    partition: 'aws',
    region: out.config.region,
    account: out.config.account,
    bucket: location.bucket,
    prefix: location.prefix,
    ...(location.bucket === out.config.repository.bucketName ? { bucketKeyArn: keyArn(out.stack.storage.key.node.defaultChild) } : {}),
    planParameterName: planParameterName(out.config.envName, plan.id),
    secretParameterNames: referencedParameters(plan, 'host'),
    controlSecretParameterNames: referencedParameters(plan, 'control'),
    parameterKeyArn: keyArn(out.stack.planParameters.key.node.defaultChild),
    seal: { parameterName: controlSealParameterName(out.config.envName), secretArn: sealSecretArn(out, model) },
    ...('kmsKeyArn' in plan.keySource ? { repositoryKeyArn: plan.keySource.kmsKeyArn } : {}),
    repositoryId: 'c0ffee0123456789',
    stateMachineArn: `arn:aws:states:${out.config.region}:${out.config.account}:stateMachine:backup`,
  };
}

function hostOf(out: Out, model: TemplateModel, plan: Plan): Caller {
  const policy = out.stack.hostPolicies.get(plan.id)!.policy.node.defaultChild;
  return {
    principal: `arn:aws:iam::${out.config.account}:role/cairn-host-${plan.id}`,
    policies: [
      { name: `host-policy-${plan.id}`, policy: model.managedPolicy(logicalId(out, policy)) },
      { name: 'AmazonSSMManagedInstanceCore', policy: AMAZON_SSM_MANAGED_INSTANCE_CORE as unknown as PolicyDocument },
    ],
  };
}

function functionOf(out: Out, model: TemplateModel, name: Fn): Caller | undefined {
  const fn = out.stack.functions[name];
  if (fn === undefined) return undefined;
  const role = logicalId(out, fn.role!.node.defaultChild);
  return {
    principal: `arn:aws:iam::${out.config.account}:role/${role}`,
    policies: model.rolePolicies(role).map((policy, i) => ({ name: `${name}-${i}`, policy })),
  };
}

const describeCall = (who: string, c: AwsCall): string => `${who}: ${c.api} (${c.action} ${c.resource} ${JSON.stringify(c.context)})`;

/** Evaluates calls and returns those whose decision is not the expected one, as readable lines. */
async function mismatches(model: TemplateModel, caller: Caller, who: string, calls: AwsCall[], expected: Decision[]): Promise<string[]> {
  const out: string[] = [];
  for (const call of calls) {
    const decision = await evaluate(model, caller, call);
    // A refusal the code expects and handles (HeadBucket's 403) passes either way; it is still evaluated.
    if (call.refusalHandled !== undefined) continue;
    if (!expected.includes(decision)) out.push(`${describeCall(who, call)} → ${decision}`);
  }
  return out;
}
const DENIED: Decision[] = ['ImplicitlyDenied', 'ExplicitlyDenied'];

describe('every inventoried AWS call is allowed for the principal that makes it', () => {
  for (const [env, out] of Object.entries(outs)) {
    test(`${env}: the agent on each plan's hosts, and each function, for each plan`, async () => {
      const model = modelOf(out);
      const failures: string[] = [];
      let evaluated = 0;
      for (const plan of out.config.plans) {
        const scope = scopeOf(out, model, plan);
        const host = hostOf(out, model, plan);
        for (const [operation, calls] of Object.entries(agentCalls(scope))) {
          const sent = withPlanContext(calls, scope, plan.id);
          failures.push(...(await mismatches(model, host, `host of ${plan.id} ${operation}`, sent, ['Allowed'])));
          evaluated += calls.length;
        }
        for (const [name, calls] of Object.entries(allFunctionCalls(scope, plan.id)) as Array<[Fn, AwsCall[]]>) {
          // archive-lag exists only with PITR plans, and lists only theirs.
          if (name === 'archiveLag' && plan.pitr?.enabled !== true) continue;
          // extend-locks exists only where the environment's bucket has Object Lock.
          if (name === 'extendLocks' && out.stack.functions.extendLocks === undefined) continue;
          const caller = functionOf(out, model, name);
          assert.ok(caller, `${env} has no ${name} function`);
          failures.push(...(await mismatches(model, caller, `${name} for ${plan.id}`, calls, ['Allowed'])));
          evaluated += calls.length;
        }
      }
      assert.deepEqual(failures, []);
      assert.ok(evaluated > 100, `evaluated ${evaluated} calls`);
    });
  }

  test('the inventory covers every function the stack deploys', () => {
    for (const out of Object.values(outs)) {
      const deployed = FUNCTION_NAMES.filter((n) => out.stack.functions[n] !== undefined);
      assert.deepEqual(out.stack.functions.all.length, deployed.length);
    }
  });
});

/** The calls a host or a function must never get through, with the decision each must get. */
function forbidden(
  out: Out,
  model: TemplateModel,
  plan: Plan,
): Array<{ who: 'host' | Fn; why: string; call: AwsCall; expect: Decision[] }> {
  const scope = scopeOf(out, model, plan);
  const b = new CallBuilder(scope);
  const other = out.config.plans.find((p) => p.id !== plan.id && repositoryLocation(p.repository.url).bucket === scope.bucket);
  const otherPrefix = other ? repositoryLocation(other.repository.url).prefix : 'plans/another-plan/';
  const otherScope = { ...scope, prefix: otherPrefix };
  const o = new CallBuilder(otherScope);
  const otherSecret = other
    ? (referencedParameters(other, 'host')[0] ?? '/cairn/x/passphrase')
    : `/cairn/${out.config.envName}/another-plan/passphrase`;
  const list: Array<{ who: 'host' | Fn; why: string; call: AwsCall; expect: Decision[] }> = [
    { who: 'host', why: 'a host deletes an object', call: b.delete('snapshots/s1')[0]!, expect: DENIED },
    {
      who: 'host',
      why: 'a host overwrites (PutObject without If-None-Match)',
      call: { ...b.create('snapshots/s1')[0]!, context: { 's3:ObjectCreationOperation': 'true' } },
      expect: DENIED,
    },
    {
      who: 'host',
      why: "a host writes the control plane's lease",
      call: b.create('orchestration/lease')[0]!,
      expect: ['ExplicitlyDenied'],
    },
    { who: 'host', why: 'a host writes a run record', call: b.create('orchestration/runs/r9')[0]!, expect: ['ExplicitlyDenied'] },
    {
      who: 'host',
      why: 'a host writes a GC mark (sealed with the repository key it holds)',
      call: b.create('gc/20261207T000000Z-0123456789abcdef')[0]!,
      expect: ['ExplicitlyDenied'],
    },
    {
      who: 'host',
      why: "a host writes a GC mark's swept record",
      call: b.create('gc/20261207T000000Z-0123456789abcdef.swept')[0]!,
      expect: ['ExplicitlyDenied'],
    },
    { who: 'host', why: "a host reads another plan's prefix", call: o.read('config')[0]!, expect: DENIED },
    { who: 'host', why: "a host writes another plan's prefix", call: o.create('packs/ab/ab09')[0]!, expect: DENIED },
    { who: 'host', why: "a host lists another plan's prefix", call: o.list('snapshots/')[0]!, expect: DENIED },
    // The host lists only under its prefix, so HeadBucket (s3.ts checkBucket) is refused: the code keeps the object's 404.
    { who: 'host', why: 'a host lists the whole bucket (HeadBucket)', call: b.headBucket()[0]!, expect: DENIED },
    {
      who: 'host',
      why: "a host decrypts another plan's secret",
      call: { ...b.getSecret(otherSecret)[1]! },
      expect: DENIED,
    },
    {
      who: 'applyRetention',
      why: 'a function deletes outside the plan prefixes',
      call: { api: 'DeleteObject', action: 's3:DeleteObject', resource: `arn:aws:s3:::${scope.bucket}/elsewhere/x`, context: {} },
      expect: DENIED,
    },
    {
      who: 'gcSweep',
      why: 'a function deletes outside the plan prefixes',
      call: { api: 'DeleteObject', action: 's3:DeleteObject', resource: `arn:aws:s3:::${scope.bucket}/elsewhere/x`, context: {} },
      expect: DENIED,
    },
    {
      who: 'gcSweep',
      why: 'a function deletes an object version',
      call: { ...b.delete('packs/ab/ab00')[0]!, api: 'DeleteObject (VersionId)', action: 's3:DeleteObjectVersion' },
      expect: DENIED,
    },
    {
      who: 'createRepository',
      why: 'create-repository overwrites a config (PutObject without If-None-Match)',
      call: { ...b.create('config')[0]!, context: { 's3:ObjectCreationOperation': 'true' } },
      expect: DENIED,
    },
    { who: 'createRepository', why: 'create-repository writes a pack', call: b.create('packs/ab/ab01')[0]!, expect: DENIED },
    {
      who: 'createRepository',
      why: "create-repository writes the control plane's lease",
      call: b.create('orchestration/lease')[0]!,
      expect: DENIED,
    },
    { who: 'createRepository', why: 'create-repository deletes', call: b.delete('config')[0]!, expect: DENIED },
    {
      who: 'host',
      why: "a host reads the control plane's seal key",
      call: sealCalls(scope)[1]!,
      expect: ['ExplicitlyDenied'],
    },
    {
      who: 'planRestore',
      why: 'a function that writes no sealed record reads the seal key',
      call: sealCalls(scope)[1]!,
      expect: DENIED,
    },
  ];
  if (scope.bucketKeyArn !== undefined) {
    list.push({
      who: 'host',
      why: 'a host uses the bucket key directly, not through S3',
      call: { api: 'Decrypt', action: 'kms:Decrypt', resource: scope.bucketKeyArn, context: {} },
      expect: DENIED,
    });
  }
  if (scope.repositoryKeyArn !== undefined) {
    const key = scope.repositoryKeyArn;
    list.push(
      {
        who: 'host',
        why: 'a host encrypts with the repository key',
        call: {
          api: 'Encrypt',
          action: 'kms:Encrypt',
          resource: key,
          context: { 'kms:EncryptionContext:cairn:repository': scope.repositoryId },
        },
        expect: DENIED,
      },
      {
        who: 'host',
        why: "a host decrypts with the repository key without Cairn's encryption context",
        call: { api: 'Decrypt', action: 'kms:Decrypt', resource: key, context: {} },
        expect: DENIED,
      },
      {
        who: 'host',
        why: "a host decrypts the operators' wrapping (no plan in the encryption context)",
        call: {
          api: 'Decrypt',
          action: 'kms:Decrypt',
          resource: key,
          context: { 'kms:EncryptionContext:cairn:repository': scope.repositoryId },
        },
        expect: DENIED,
      },
      {
        who: 'host',
        why: "a host decrypts another plan's key file under the same KMS key",
        call: {
          api: 'Decrypt',
          action: 'kms:Decrypt',
          resource: key,
          context: {
            'kms:EncryptionContext:cairn:repository': scope.repositoryId,
            [`kms:EncryptionContext:${PLAN_CONTEXT_KEY}`]: 'another-plan',
          },
        },
        expect: DENIED,
      },
    );
  }
  return list;
}

async function decide(out: Out, model: TemplateModel, plan: Plan, who: 'host' | Fn, call: AwsCall): Promise<Decision> {
  const caller = who === 'host' ? hostOf(out, model, plan) : functionOf(out, model, who)!;
  return evaluate(model, caller, call);
}

describe('the calls that must be refused are refused', () => {
  for (const [env, out] of Object.entries(outs)) {
    test(`${env}: deletes, overwrites, the control plane's records, other plans, repository keys`, async () => {
      const model = modelOf(out);
      const failures: string[] = [];
      for (const plan of out.config.plans) {
        for (const { who, why, call, expect } of forbidden(out, model, plan)) {
          const decision = await decide(out, model, plan, who, call);
          if (!expect.includes(decision)) failures.push(`${env} ${plan.id}: ${why}: ${describeCall(who, call)} → ${decision}`);
        }
      }
      assert.deepEqual(failures, []);
    });
  }

  test("AmazonSSMManagedInstanceCore lets a host fetch another plan's SecureString, which it cannot decrypt", async () => {
    const out = outs.prod;
    const model = modelOf(out);
    const [mine, theirs] = out.config.plans as [Plan, Plan];
    const b = new CallBuilder(scopeOf(out, model, mine));
    const [get, decrypt] = b.getSecret(referencedParameters(theirs, 'host')[0]!) as [AwsCall, AwsCall];
    assert.equal(await decide(out, model, mine, 'host', get), 'Allowed');
    assert.equal(await decide(out, model, mine, 'host', decrypt), 'ImplicitlyDenied');
    // Its own secret decrypts, through SSM only.
    const [, own] = b.getSecret(referencedParameters(mine, 'host')[0]!) as [AwsCall, AwsCall];
    assert.equal(await decide(out, model, mine, 'host', own), 'Allowed');
    assert.equal(
      await decide(out, model, mine, 'host', { ...own, context: { ...own.context, 'kms:ViaService': 's3.eu-central-1.amazonaws.com' } }),
      'ExplicitlyDenied',
    );
  });
});

/** Statements of the dev template's host policy of its first plan, and of a function's role, to mutate. */
function hostStatements(out: Out, json: Record<string, unknown>, planId: string): Array<Record<string, unknown>> {
  const id = logicalId(out, out.stack.hostPolicies.get(planId)!.policy.node.defaultChild);
  const resources = json.Resources as Record<string, { Properties: { PolicyDocument: { Statement: Array<Record<string, unknown>> } } }>;
  return resources[id]!.Properties.PolicyDocument.Statement;
}

function roleStatements(out: Out, json: Record<string, unknown>, name: Fn): Array<Record<string, unknown>> {
  const role = logicalId(out, out.stack.functions[name]!.role!.node.defaultChild);
  const resources = json.Resources as Record<
    string,
    { Type: string; Properties: { Roles?: unknown[]; PolicyDocument: { Statement: Array<Record<string, unknown>> } } }
  >;
  return Object.values(resources)
    .filter((r) => r.Type === 'AWS::IAM::Policy' && JSON.stringify(r.Properties.Roles).includes(`"${role}"`))
    .flatMap((r) => r.Properties.PolicyDocument.Statement);
}

describe('mutations of the template flip the evaluation', () => {
  const out = outs.dev;
  const plan = out.config.plans[0]!;

  async function flip(
    mutate: (json: Record<string, unknown>) => void,
    who: 'host' | Fn,
    call: AwsCall,
    before: Decision[],
    after: Decision[],
    on: { out: Out; plan: Plan } = { out, plan },
  ): Promise<void> {
    const original = await decide(on.out, modelOf(on.out), on.plan, who, call);
    assert.ok(before.includes(original), `before the mutation: ${describeCall(who, call)} → ${original}`);
    const json = structuredClone(on.out.json);
    mutate(json);
    const mutated = modelOf(on.out, json);
    const decision = await decide(on.out, mutated, on.plan, who, call);
    assert.ok(after.includes(decision), `after the mutation: ${describeCall(who, call)} → ${decision}`);
  }
  const bucketKeyDecrypt = (): AwsCall => new CallBuilder(scopeOf(out, modelOf(out), plan)).read('config')[1]!;
  const b = (): CallBuilder => new CallBuilder(scopeOf(out, modelOf(out), plan));

  test("dropping the host's bucket-key grant denies the KMS call behind every read", async () => {
    assert.equal(bucketKeyDecrypt().action, 'kms:Decrypt');
    await flip(
      (json) => {
        const statements = hostStatements(out, json, plan.id);
        statements.splice(
          statements.findIndex((s) => s.Sid === 'RepositoryBucketKey'),
          1,
        );
      },
      'host',
      bucketKeyDecrypt(),
      ['Allowed'],
      DENIED,
    );
  });

  test('dropping the s3:if-none-match condition lets a host overwrite', async () => {
    const overwrite = { ...b().create('snapshots/s1')[0]!, context: { 's3:ObjectCreationOperation': 'true' } };
    await flip(
      (json) => {
        delete hostStatements(out, json, plan.id).find((s) => s.Sid === 'CreateOnlyIfAbsent')!.Condition;
      },
      'host',
      overwrite,
      DENIED,
      ['Allowed'],
    );
  });

  test("widening the plan prefix to the whole bucket lets a host read another plan's objects", async () => {
    const scope = scopeOf(out, modelOf(out), plan);
    const foreign = new CallBuilder({ ...scope, prefix: 'plans/another-plan/' }).read('config')[0]!;
    await flip(
      (json) => {
        for (const s of hostStatements(out, json, plan.id)) {
          if (s.Effect === 'Allow' && JSON.stringify(s.Resource).includes(`/${scope.prefix}*`))
            s.Resource = `arn:aws:s3:::${scope.bucket}/*`;
        }
      },
      'host',
      foreign,
      DENIED,
      ['Allowed'],
    );
  });

  test("dropping the explicit deny lets a host forge the control plane's lease", async () => {
    await flip(
      (json) => {
        const statements = hostStatements(out, json, plan.id);
        statements.splice(
          statements.findIndex((s) => s.Sid === 'DenyControlPlaneRecords'),
          1,
        );
      },
      'host',
      b().create('orchestration/lease')[0]!,
      ['ExplicitlyDenied'],
      ['Allowed'],
    );
  });

  // The KMS-plan template: a plan whose master key is wrapped by a KMS key the host may only decrypt with.
  const kms = { out: outs.kms, plan: outs.kms.config.plans.find((p) => p.id === 'files-kms')! };
  const masterKeyDecrypt = (context: Record<string, string>): AwsCall => ({
    api: 'Decrypt',
    action: 'kms:Decrypt',
    resource: KMS_KEY,
    context: Object.fromEntries(Object.entries(context).map(([k, v]) => [`kms:EncryptionContext:${k}`, v])),
  });

  test("dropping the host's repository-key grant denies the agent's own unwrapping of its KMS key file", async () => {
    // The call exactly as the inventory and plan-source.ts make it: the repository and the plan in the context.
    const own = withPlanContext(
      new CallBuilder(scopeOf(kms.out, modelOf(kms.out), kms.plan)).unwrapMasterKey(),
      scopeOf(kms.out, modelOf(kms.out), kms.plan),
      kms.plan.id,
    )[0]!;
    await flip(
      (json) => {
        const statements = hostStatements(kms.out, json, kms.plan.id);
        statements.splice(
          statements.findIndex((s) => s.Sid === 'RepositoryMasterKey'),
          1,
        );
      },
      'host',
      own,
      ['Allowed'],
      DENIED,
      kms,
    );
  });

  test("dropping the kms:EncryptionContext condition on the host's Decrypt lets it unwrap another plan's key file", async () => {
    const foreign = masterKeyDecrypt({ 'cairn:repository': 'c0ffee0123456789', [PLAN_CONTEXT_KEY]: 'another-plan' });
    await flip(
      (json) => {
        delete hostStatements(kms.out, json, kms.plan.id).find((s) => s.Sid === 'RepositoryMasterKey')!.Condition;
      },
      'host',
      foreign,
      DENIED,
      ['Allowed'],
      kms,
    );
  });

  test("dropping the PARAMETER_ARN condition lets a host decrypt another plan's secret", async () => {
    await flip(
      (json) => {
        const s = hostStatements(out, json, plan.id).find((x) => x.Sid === 'DecryptPlanSecrets')!;
        s.Condition = { StringEquals: { 'kms:ViaService': 'ssm.eu-central-1.amazonaws.com' } };
      },
      'host',
      b().getSecret('/cairn/dev/another-plan/passphrase')[1]!,
      DENIED,
      ['Allowed'],
    );
  });

  test("widening a function's delete to the whole bucket lets it delete outside the plan prefixes", async () => {
    const scope = scopeOf(out, modelOf(out), plan);
    const outside: AwsCall = {
      api: 'DeleteObject',
      action: 's3:DeleteObject',
      resource: `arn:aws:s3:::${scope.bucket}/elsewhere/x`,
      context: {},
    };
    await flip(
      (json) => {
        const s = roleStatements(out, json, 'gcSweep').find((x) => x.Sid === 'DeleteInPlanPrefixes')!;
        s.Resource = { 'Fn::Join': ['', [{ 'Fn::GetAtt': [logicalId(out, out.stack.storage.bucket.node.defaultChild), 'Arn'] }, '/*']] };
      },
      'gcSweep',
      outside,
      DENIED,
      ['Allowed'],
    );
  });
});
