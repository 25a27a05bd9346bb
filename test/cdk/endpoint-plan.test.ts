import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { CfnElement } from 'aws-cdk-lib';
import { agentCalls, CallBuilder, functionCalls, type AwsCall, type CallScope, type FunctionName } from '../../agent/core/aws-calls.ts';
import {
  planParameterName,
  referencedParameters,
  repositoryEndpoint,
  repositoryLocation,
  type EnvironmentConfigInput,
  type Plan,
} from '../../agent/core/plan.ts';
import { controlSealParameterName } from '../../agent/core/run-lease.ts';
import { dev } from '../../cdk/config/dev.ts';
import { AMAZON_SSM_MANAGED_INSTANCE_CORE } from './amazon-ssm-managed-instance-core.ts';
import { evaluate, TemplateModel, type Caller, type Decision, type PolicyDocument } from './iam-evaluator.ts';
import { resourcesOf, synthEnvironment } from './synth-helpers.ts';

/**
 * Plans whose repository is a bucket at an S3-compatible endpoint (issue 17, point 4): the stack
 * accepts them, and grants their hosts and the functions exactly what they need in AWS: the plan's
 * parameter and its SecureStrings, each decrypted only through SSM with its own ARN as encryption
 * context, and nothing in S3. The endpoint's two keys are split: the hosts read only theirs (the
 * endpoint lets it read, list and create, never delete), the functions only the control plane's. Evaluated with the
 * offline IAM evaluator (iam-evaluator.ts) as in iam-evaluation.test.ts.
 */
const MINIO_KEY = '/cairn/ep/files-minio/endpoint-key';
const CEPH_KEY = '/cairn/ep/files-ceph/endpoint-key';
const MARIA_KEY = '/cairn/ep/maria-minio/endpoint-key';
/** The control plane's key of a plan, beside the hosts' key `key`. */
const control = (key: string): string => `${key}-control`;
const endpointPlan = (id: string, url: string, credentialsParameter: string): EnvironmentConfigInput['plans'][number] => ({
  id,
  targets: { instanceIds: ['i-0123456789abcdef0'] },
  engine: 'files',
  engineOptions: { paths: ['/srv'] },
  schedule: { expression: 'rate(12 hours)' },
  retention: { keepLast: 3 },
  keySource: { passphraseParameter: `/cairn/ep/${id}/passphrase` },
  rpo: '13h',
  repository: { url, credentialsParameter, controlCredentialsParameter: control(credentialsParameter) },
});
const config: EnvironmentConfigInput = {
  ...dev,
  // With Object Lock, so the lock-extension function exists and its grants can be checked.
  repository: { ...dev.repository, objectLock: { mode: 'GOVERNANCE', days: 7 } },
  plans: [
    dev.plans[0]!,
    endpointPlan('files-minio', 's3://minio-backups/cairn/files-minio/?endpoint=https://minio.internal:9000&path-style=true', MINIO_KEY),
    endpointPlan('files-ceph', 's3://ceph-backups/files-ceph?endpoint=https://rgw.internal&region=default', CEPH_KEY),
    // MariaDB's binlog push runs in the agent, so PITR works at an endpoint; archive-lag lists its log archive there.
    {
      ...endpointPlan('maria-minio', 's3://minio-backups/cairn/maria-minio/?endpoint=https://minio.internal:9000', MARIA_KEY),
      engine: 'mariadb',
      engineOptions: { connection: { socket: '/run/mysqld/mysqld.sock', user: 'cairn' } },
      pitr: { enabled: true },
    },
  ],
};
const out = synthEnvironment('ep', { ep: config });
const model = new TemplateModel(out.json, out.config.account, out.config.region);
const plan = (id: string): Plan => out.config.plans.find((p) => p.id === id)!;
const logicalId = (element: unknown): string => out.stack.getLogicalId(element as CfnElement);
const parameterArn = (name: string): string => `arn:aws:ssm:${out.config.region}:${out.config.account}:parameter${name}`;
const keyArn = (element: unknown): string => model.text({ 'Fn::GetAtt': [logicalId(element), 'Arn'] });

type Statement = { Sid?: string; Effect: string; Action: string | string[]; Resource: unknown; Condition?: unknown };
function hostStatements(planId: string): Statement[] {
  const id = logicalId(out.stack.hostPolicies.get(planId)!.policy.node.defaultChild);
  return (model.resource(id).Properties.PolicyDocument as { Statement: Statement[] }).Statement;
}
const actions = (s: Statement): string[] => (Array.isArray(s.Action) ? s.Action : [s.Action]);

function scopeOf(p: Plan): CallScope {
  const location = repositoryLocation(p.repository.url);
  const endpoint = repositoryEndpoint(p.repository);
  return {
    partition: 'aws',
    region: out.config.region,
    account: out.config.account,
    bucket: location.bucket,
    prefix: location.prefix,
    ...(endpoint !== undefined
      ? { endpointKeyParameter: endpoint.credentialsParameter, controlEndpointKeyParameter: endpoint.controlCredentialsParameter }
      : { bucketKeyArn: keyArn(out.stack.storage.key.node.defaultChild) }),
    planParameterName: planParameterName(out.config.envName, p.id),
    secretParameterNames: referencedParameters(p, 'host'),
    controlSecretParameterNames: referencedParameters(p, 'control'),
    parameterKeyArn: keyArn(out.stack.planParameters.key.node.defaultChild),
    seal: {
      parameterName: controlSealParameterName(out.config.envName),
      secretArn: model.text({ Ref: logicalId(out.stack.functions.controlSeal.node.defaultChild) }),
    },
    repositoryId: 'c0ffee0123456789',
    stateMachineArn: `arn:aws:states:${out.config.region}:${out.config.account}:stateMachine:backup`,
  };
}

function hostOf(p: Plan): Caller {
  return {
    principal: `arn:aws:iam::${out.config.account}:role/cairn-host-${p.id}`,
    policies: [
      { name: `host-policy-${p.id}`, policy: model.managedPolicy(logicalId(out.stack.hostPolicies.get(p.id)!.policy.node.defaultChild)) },
      { name: 'AmazonSSMManagedInstanceCore', policy: AMAZON_SSM_MANAGED_INSTANCE_CORE as unknown as PolicyDocument },
    ],
  };
}

function functionOf(name: FunctionName): Caller {
  const role = logicalId(out.stack.functions[name]!.role!.node.defaultChild);
  return {
    principal: `arn:aws:iam::${out.config.account}:role/${role}`,
    policies: model.rolePolicies(role).map((policy, i) => ({ name: `${name}-${i}`, policy })),
  };
}

const DENIED: Decision[] = ['ImplicitlyDenied', 'ExplicitlyDenied'];
const describeCall = (who: string, c: AwsCall): string => `${who}: ${c.api} (${c.action} ${c.resource})`;

describe('a plan at an S3-compatible endpoint in the synthesized template', () => {
  test("its hosts get the plan's parameter and secrets (the endpoint's key among them), decrypted per parameter, and no S3 or bucket-key grant", () => {
    for (const [id, key] of [
      ['files-minio', MINIO_KEY],
      ['files-ceph', CEPH_KEY],
    ] as const) {
      const statements = hostStatements(id);
      assert.deepEqual(
        statements.filter((s) => actions(s).some((a) => a.startsWith('s3:') && a !== 's3:GetObject')),
        [],
        `${id}: no S3 statement but the agent bundle's download`,
      );
      const download = statements.filter((s) => actions(s).includes('s3:GetObject'));
      assert.deepEqual(
        download.map((s) => s.Sid),
        ['DownloadAgentBundle'],
      );
      assert.equal(
        statements.find((s) => s.Sid === 'RepositoryBucketKey'),
        undefined,
      );
      const read = statements.find((s) => s.Sid === 'ReadPlanAndSecrets')!;
      assert.ok(JSON.stringify(read.Resource).includes(`parameter${key}`), `${id} reads ${key}`);
      const decrypt = JSON.stringify(statements.find((s) => s.Sid === 'DecryptPlanSecrets')!.Condition);
      assert.ok(decrypt.includes(`parameter${key}`), `${id} decrypts ${key} by its PARAMETER_ARN`);
      const other = key === MINIO_KEY ? CEPH_KEY : MINIO_KEY;
      assert.ok(!JSON.stringify(statements).includes(other), `${id}'s policy never names ${other}`);
      assert.ok(!JSON.stringify(statements).includes(control(key)), `${id}'s hosts never name the control plane's key, which deletes`);
    }
  });

  test('no function is granted anything in the endpoint buckets or under those plans in the stack bucket; all may read their keys', () => {
    const policies = resourcesOf(out.json, 'AWS::IAM::Policy').map(([, r]) => JSON.stringify(r.Properties.PolicyDocument));
    for (const text of policies) {
      for (const name of [
        'minio-backups',
        'ceph-backups',
        'cairn/files-minio',
        'plans/files-minio/',
        'plans/files-ceph/',
        'plans/maria-minio/',
      ])
        assert.ok(!text.includes(name), `a role policy names ${name}`);
    }
    for (const name of ['planBackup', 'finalizeBackup', 'applyRetention', 'gcSweep', 'planRestore', 'recordResult', 'freshness'] as const) {
      const role = logicalId(out.stack.functions[name].role!.node.defaultChild);
      const text = JSON.stringify(model.rolePolicies(role));
      for (const key of [MINIO_KEY, CEPH_KEY, MARIA_KEY]) {
        assert.ok(text.includes(`parameter${control(key)}`), `${name} may read ${control(key)}`);
        assert.ok(!text.includes(`parameter${key}"`) && !text.includes(`parameter${key}'`), `${name} never names the hosts' key ${key}`);
      }
    }
  });
});

describe('the IAM evaluation of an endpoint plan', () => {
  test('every inventoried call of its hosts and of every function is allowed, and none of them is an S3 call', async () => {
    const failures: string[] = [];
    let evaluated = 0;
    for (const id of ['files-minio', 'files-ceph', 'maria-minio']) {
      const scope = scopeOf(plan(id));
      for (const [operation, calls] of Object.entries(agentCalls(scope))) {
        assert.deepEqual(
          calls.filter((c) => c.action.startsWith('s3:')),
          [],
          `${id} ${operation}: the endpoint's calls are not AWS calls`,
        );
        for (const call of calls) {
          const decision = await evaluate(model, hostOf(plan(id)), call);
          evaluated++;
          if (decision !== 'Allowed') failures.push(`${describeCall(`host of ${id} ${operation}`, call)} → ${decision}`);
        }
      }
      assert.ok(
        agentCalls(scope).backup.some((c) => c.resource === parameterArn(repositoryEndpoint(plan(id).repository)!.credentialsParameter)),
        "the backup reads the hosts' endpoint key parameter",
      );
      assert.ok(
        functionCalls(scope).gcSweep.some(
          (c) => c.resource === parameterArn(repositoryEndpoint(plan(id).repository)!.controlCredentialsParameter),
        ),
        "the GC sweep reads the control plane's endpoint key parameter",
      );
      for (const [name, calls] of Object.entries(functionCalls(scope)) as Array<[FunctionName, AwsCall[]]>) {
        if (out.stack.functions[name] === undefined) continue;
        // archive-lag lists only PITR plans' archives.
        if (name === 'archiveLag' && plan(id).pitr?.enabled !== true) continue;
        for (const call of calls) {
          const decision = await evaluate(model, functionOf(name), call);
          evaluated++;
          if (decision !== 'Allowed') failures.push(`${describeCall(`${name} for ${id}`, call)} → ${decision}`);
        }
      }
    }
    assert.deepEqual(failures, []);
    assert.ok(evaluated > 40, `evaluated ${evaluated} calls`);
  });

  test("a host may not read another plan's endpoint key, nor touch the stack bucket for its endpoint plan", async () => {
    const minio = new CallBuilder(scopeOf(plan('files-minio')));
    const [, decryptCeph] = minio.getSecret(CEPH_KEY) as [AwsCall, AwsCall];
    const [, decryptMinio] = minio.getSecret(MINIO_KEY) as [AwsCall, AwsCall];
    const cases: Array<{ who: Plan; why: string; call: AwsCall; expect: Decision[] }> = [
      { who: plan('files-minio'), why: "the minio plan's host decrypts the ceph plan's endpoint key", call: decryptCeph, expect: DENIED },
      { who: plan('files-ceph'), why: "the ceph plan's host decrypts the minio plan's endpoint key", call: decryptMinio, expect: DENIED },
      {
        who: plan('app-db'),
        why: "the stack-bucket plan's host decrypts the minio plan's endpoint key",
        call: decryptMinio,
        expect: DENIED,
      },
      { who: plan('files-minio'), why: 'its own key, through SSM', call: decryptMinio, expect: ['Allowed'] },
    ];
    // Its own plan's control key, which may delete at the endpoint: neither fetched through the host policy nor decrypted.
    const [getControl, decryptControl] = minio.getSecret(control(MINIO_KEY)) as [AwsCall, AwsCall];
    cases.push({ who: plan('files-minio'), why: "the host decrypts its plan's control-plane key", call: decryptControl, expect: DENIED });
    const failures: string[] = [];
    // AmazonSSMManagedInstanceCore allows ssm:GetParameter on *; the ciphertext is useless without the decrypt denied above.
    assert.equal(await evaluate(model, hostOf(plan('files-minio')), getControl), 'Allowed');
    // The stack bucket, under the endpoint plan's would-be prefix: nothing, read or write.
    const inBucket = new CallBuilder({
      ...scopeOf(plan('app-db')),
      prefix: 'plans/files-minio/',
    });
    for (const call of [...inBucket.read('config'), ...inBucket.create('snapshots/s1'), ...inBucket.list('snapshots/')]) {
      if (call.action.startsWith('s3:')) cases.push({ who: plan('files-minio'), why: 'the stack bucket', call, expect: DENIED });
      else cases.push({ who: plan('files-minio'), why: "the stack bucket's key", call, expect: DENIED });
    }
    for (const c of cases) {
      const decision = await evaluate(model, hostOf(c.who), c.call);
      if (!c.expect.includes(decision)) failures.push(`${c.why}: ${describeCall(`host of ${c.who.id}`, c.call)} → ${decision}`);
    }
    assert.deepEqual(failures, []);
  });

  test("no function may read a plan's hosts' endpoint key, and each that opens the plan's repository reads the control plane's", async () => {
    const failures: string[] = [];
    let checked = 0;
    for (const id of ['files-minio', 'maria-minio']) {
      const key = repositoryEndpoint(plan(id).repository)!;
      const b = new CallBuilder(scopeOf(plan(id)));
      const [getHost, decryptHost] = b.getSecret(key.credentialsParameter) as [AwsCall, AwsCall];
      const [getControl, decryptControl] = b.getSecret(key.controlCredentialsParameter) as [AwsCall, AwsCall];
      for (const name of Object.keys(functionCalls(scopeOf(plan(id)))) as FunctionName[]) {
        if (out.stack.functions[name] === undefined) continue;
        checked++;
        // archive-lag reads only PITR plans' keys.
        const control: Decision[] = name === 'archiveLag' && plan(id).pitr?.enabled !== true ? DENIED : ['Allowed'];
        for (const [call, expect] of [
          [getHost, DENIED],
          [decryptHost, DENIED],
          [getControl, control],
          [decryptControl, control],
        ] as Array<[AwsCall, Decision[]]>) {
          const decision = await evaluate(model, functionOf(name), call);
          if (!expect.includes(decision)) failures.push(`${describeCall(`${name} for ${id}`, call)} → ${decision}`);
        }
      }
    }
    assert.deepEqual(failures, []);
    assert.ok(checked >= 16, `checked ${checked} function roles`);
  });
});
