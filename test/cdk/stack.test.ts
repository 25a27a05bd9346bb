import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import type { CfnElement } from 'aws-cdk-lib';
import { Match } from 'aws-cdk-lib/assertions';
import { parsePlan, referencedParameters, type EnvironmentConfigInput } from '../../agent/core/plan.ts';
import { AGENT_DOCUMENT_PARAMETERS, AGENT_OPERATIONS } from '../../cdk/lib/agent-command-document.ts';
import { dev } from '../../cdk/config/dev.ts';
import { resourcesOf, synthEnvironment } from './synth-helpers.ts';

const aslValidator = createRequire(import.meta.url)('asl-validator') as (definition: unknown) => {
  isValid: boolean;
  errorsText: () => string;
};

// Names only, never values: the sentinel must appear as a name in ARNs, nothing else may leak.
const SENTINEL_SECRET_NAME = '/cairn/sentinel/SENTINEL-db-password-name';
const sentinel: EnvironmentConfigInput = {
  ...dev,
  plans: [
    { ...dev.plans[0]!, engineOptions: { ...dev.plans[0]!.engineOptions, passwordParameter: SENTINEL_SECRET_NAME } },
    {
      id: 'files-kms',
      targets: { instanceIds: ['i-0123456789abcdef0'] },
      engine: 'files',
      engineOptions: { paths: ['/etc'] },
      schedule: { expression: 'rate(12 hours)' },
      retention: { keepLast: 3 },
      keySource: { kmsKeyArn: 'arn:aws:kms:eu-central-1:111111111111:key/0d2a3e7b-1111-2222-3333-444455556666' },
      rpo: '13h',
      repository: { url: 's3://other-team-bucket/cairn/files-kms/' },
    },
  ],
};

// Point-in-time recovery in every shape: PostgreSQL (archive_command), MariaDB on a schedule by tag
// and by instance id on another bucket, and MariaDB with a follower service instead of a schedule.
const pitrConfig: EnvironmentConfigInput = {
  ...dev,
  plans: [
    dev.plans[0]!,
    {
      id: 'pg-pitr',
      targets: { instanceIds: ['i-0123456789abcdef0'] },
      engine: 'postgres',
      schedule: { expression: 'cron(0 3 * * ? *)' },
      retention: { keepDaily: 7 },
      keySource: { passphraseParameter: '/cairn/pitr/pg-pitr/passphrase' },
      rpo: '26h',
      pitr: { enabled: true, archiveStream: 'pg-7000000000000000042', maxArchiveLagMinutes: 20 },
    },
    {
      id: 'maria-tagged',
      targets: { tag: { key: 'cairn:plan', value: 'maria-tagged' } },
      engine: 'mariadb',
      engineOptions: {
        connection: { socket: '/run/mysqld/mysqld.sock', user: 'cairn' },
        passwordParameter: '/cairn/pitr/maria/db-password',
      },
      schedule: { expression: 'cron(0 3 * * ? *)' },
      retention: { keepDaily: 7 },
      keySource: { passphraseParameter: '/cairn/pitr/maria/passphrase' },
      rpo: '26h',
      pitr: { enabled: true, binlogPushSchedule: 'rate(10 minutes)', maxArchiveLagMinutes: 30 },
    },
    {
      id: 'maria-ext',
      targets: { instanceIds: ['i-0123456789abcdef1', 'mi-0123456789abcdef0'] },
      engine: 'mariadb',
      schedule: { expression: 'cron(0 3 * * ? *)' },
      retention: { keepDaily: 7 },
      keySource: { passphraseParameter: '/cairn/pitr/maria-ext/passphrase' },
      rpo: '26h',
      repository: { url: 's3://other-team-bucket/cairn/maria-ext/' },
      pitr: { enabled: true },
    },
    {
      id: 'maria-follow',
      targets: { instanceIds: ['i-0123456789abcdef2'] },
      engine: 'mariadb',
      schedule: { expression: 'cron(0 3 * * ? *)' },
      retention: { keepDaily: 7 },
      keySource: { passphraseParameter: '/cairn/pitr/maria-follow/passphrase' },
      rpo: '26h',
      pitr: { enabled: true, binlogPushSchedule: 'follow', maxArchiveLagMinutes: 5 },
    },
  ],
};

const devOut = synthEnvironment('dev');
const prodOut = synthEnvironment('prod');
const sentinelOut = synthEnvironment('sentinel', { sentinel });
const pitrOut = synthEnvironment('pitr', { pitr: pitrConfig });

type Statement = {
  Effect: string;
  Action: string | string[];
  Resource: unknown;
  Condition?: Record<string, Record<string, unknown>>;
  Sid?: string;
};
const actionsOf = (s: Statement): string[] => (Array.isArray(s.Action) ? s.Action : [s.Action]);

function hostPolicies(json: Record<string, unknown>): Array<[string, Statement[]]> {
  return resourcesOf(json, 'AWS::IAM::ManagedPolicy')
    .filter(([, r]) => String(r.Properties.ManagedPolicyName).includes('-host-'))
    .map(([id, r]) => [id, (r.Properties.PolicyDocument as { Statement: Statement[] }).Statement]);
}

/** Turns template text (Fn::Join of strings, Ref, Fn::GetAtt) into a string. */
function resolveText(v: unknown): string {
  if (typeof v === 'string') return v;
  const o = v as Record<string, unknown>;
  if ('Fn::Join' in o) {
    const [sep, parts] = o['Fn::Join'] as [string, unknown[]];
    return parts.map(resolveText).join(sep);
  }
  if ('Ref' in o) return `arn:aws:ref:::${String(o.Ref)}`;
  if ('Fn::GetAtt' in o) return `arn:aws:lambda:eu-central-1:111111111111:function:${(o['Fn::GetAtt'] as string[])[0]}`;
  throw new Error(`cannot resolve ${JSON.stringify(v)}`);
}

/** Turns a DefinitionString into the ASL JSON. */
function definitionOf(machine: { Properties: Record<string, unknown> }): Record<string, unknown> {
  return JSON.parse(resolveText(machine.Properties.DefinitionString)) as Record<string, unknown>;
}

describe('CDK app', () => {
  test('cdk-nag AwsSolutions passes for dev, prod and a config with an external bucket and a KMS key', () => {
    // synthEnvironment throws on any unacknowledged finding; reaching here means all three passed.
    for (const out of [devOut, prodOut, sentinelOut, pitrOut]) assert.ok(Object.keys(out.json.Resources as object).length > 20);
  });

  test('the repository bucket and its key are retained by cdk destroy', () => {
    for (const out of [devOut, prodOut]) {
      const bucket = out.stack.getLogicalId(out.stack.storage.bucket.node.defaultChild as CfnElement);
      const key = out.stack.getLogicalId(out.stack.storage.key.node.defaultChild as CfnElement);
      const resources = out.json.Resources as Record<string, { DeletionPolicy?: string; UpdateReplacePolicy?: string }>;
      for (const id of [bucket, key]) {
        assert.equal(resources[id]?.DeletionPolicy, 'Retain', id);
        assert.equal(resources[id]?.UpdateReplacePolicy, 'Retain', id);
      }
    }
    prodOut.template.hasResource('AWS::KMS::Key', { Properties: Match.objectLike({ EnableKeyRotation: true }), DeletionPolicy: 'Retain' });
  });

  test('the bucket is SSE-KMS, versioned, private, TLS-only and logged', () => {
    devOut.template.hasResourceProperties('AWS::S3::Bucket', {
      BucketName: 'cairn-dev-111111111111-eu-central-1',
      BucketEncryption: {
        ServerSideEncryptionConfiguration: [
          Match.objectLike({ ServerSideEncryptionByDefault: Match.objectLike({ SSEAlgorithm: 'aws:kms' }) }),
        ],
      },
      VersioningConfiguration: { Status: 'Enabled' },
      PublicAccessBlockConfiguration: {
        BlockPublicAcls: true,
        BlockPublicPolicy: true,
        IgnorePublicAcls: true,
        RestrictPublicBuckets: true,
      },
      LoggingConfiguration: Match.objectLike({ DestinationBucketName: Match.anyValue() }),
    });
    devOut.template.hasResourceProperties('AWS::S3::BucketPolicy', {
      PolicyDocument: {
        Statement: Match.arrayWith([Match.objectLike({ Effect: 'Deny', Condition: { Bool: { 'aws:SecureTransport': 'false' } } })]),
      },
    });
  });

  test('Object Lock and lifecycle follow the config: dev without a lock, prod COMPLIANCE', () => {
    const bucketProps = (out: typeof devOut): Record<string, unknown> =>
      resourcesOf(out.json, 'AWS::S3::Bucket').find(
        ([, r]) =>
          String(r.Properties.BucketName).startsWith(`cairn-${out.config.envName}-`) && !String(r.Properties.BucketName).endsWith('-logs'),
      )![1].Properties;
    const d = bucketProps(devOut);
    assert.notEqual(d.ObjectLockEnabled, true);
    assert.equal(d.ObjectLockConfiguration, undefined);
    assert.deepEqual((d.LifecycleConfiguration as { Rules: unknown[] }).Rules, [
      { Id: 'abort-incomplete-multipart-uploads', AbortIncompleteMultipartUpload: { DaysAfterInitiation: 2 }, Status: 'Enabled' },
      {
        Id: 'expire-noncurrent-versions',
        NoncurrentVersionExpiration: { NoncurrentDays: 7 },
        ExpiredObjectDeleteMarker: true,
        Status: 'Enabled',
      },
    ]);
    const p = bucketProps(prodOut);
    assert.equal(p.ObjectLockEnabled, true);
    assert.deepEqual(p.ObjectLockConfiguration, {
      ObjectLockEnabled: 'Enabled',
      Rule: { DefaultRetention: { Mode: 'COMPLIANCE', Days: 35 } },
    });
    assert.match(JSON.stringify(p.LifecycleConfiguration), /"NoncurrentDays":90/);
    assert.match(JSON.stringify(p.LifecycleConfiguration), /"DaysAfterInitiation":7/);
  });

  test('prod replicates to a replica bucket with its own key and Object Lock; dev has no replica', () => {
    assert.equal(devOut.replicaStack, undefined);
    assert.equal(devOut.template.toJSON().Resources && JSON.stringify(devOut.json).includes('ReplicationConfiguration'), false);
    const replica = prodOut.replicaTemplate!;
    assert.equal(prodOut.replicaStack!.region, 'eu-west-1');
    replica.hasResourceProperties('AWS::S3::Bucket', {
      BucketName: 'cairn-prod-222222222222-eu-central-1-replica',
      ObjectLockEnabled: true,
      ObjectLockConfiguration: { ObjectLockEnabled: 'Enabled', Rule: { DefaultRetention: { Mode: 'COMPLIANCE', Days: 35 } } },
      VersioningConfiguration: { Status: 'Enabled' },
    });
    replica.hasResource('AWS::KMS::Key', { Properties: Match.objectLike({ EnableKeyRotation: true }), DeletionPolicy: 'Retain' });
    replica.hasResourceProperties('AWS::KMS::Alias', { AliasName: 'alias/cairn-prod-replica' });
    prodOut.template.hasResourceProperties('AWS::S3::Bucket', {
      ReplicationConfiguration: {
        Role: Match.anyValue(),
        Rules: [
          Match.objectLike({
            Status: 'Enabled',
            Destination: Match.objectLike({
              Bucket: Match.objectLike({ 'Fn::Join': ['', Match.arrayWith([':s3:::cairn-prod-222222222222-eu-central-1-replica'])] }),
              EncryptionConfiguration: { ReplicaKmsKeyID: Match.anyValue() },
            }),
          }),
        ],
      },
    });
  });

  test('the host policy grants no delete, creates only with If-None-Match: *, denies orchestration/ and gc/, and reports through task tokens', () => {
    for (const out of [devOut, prodOut, sentinelOut, pitrOut]) {
      const policies = hostPolicies(out.json);
      assert.equal(policies.length, out.config.plans.length);
      for (const [id, statements] of policies) {
        const deny = statements.find((s) => s.Sid === 'DenyControlPlaneRecords');
        assert.ok(deny !== undefined && deny.Effect === 'Deny', `${id}: an explicit deny on the control plane's records`);
        const denied = (Array.isArray(deny.Resource) ? deny.Resource : [deny.Resource]).map((r: unknown) => resolveText(r));
        assert.equal(denied.length, 2, JSON.stringify(denied));
        assert.match(denied[0] as string, /\/orchestration\/\*$/);
        assert.match(denied[1] as string, /\/gc\/\*$/);
        for (const s of statements) {
          if (s.Effect === 'Deny') continue;
          for (const action of actionsOf(s)) {
            assert.doesNotMatch(action, /^s3:(Delete|\*|PutObject\*|PutLifecycle|PutBucket|Replicate)|^\*$/i, `${id} grants ${action}`);
          }
          if (actionsOf(s).includes('s3:PutObject')) {
            const c = JSON.stringify(s.Condition);
            assert.ok(
              c === '{"StringEquals":{"s3:if-none-match":"*"}}' || c === '{"Bool":{"s3:ObjectCreationOperation":"false"}}',
              `${id}: unconditioned PutObject ${c}`,
            );
          }
          if (actionsOf(s).some((a) => a.startsWith('states:'))) {
            assert.deepEqual(actionsOf(s).sort(), ['states:SendTaskFailure', 'states:SendTaskHeartbeat', 'states:SendTaskSuccess']);
            // SendTask* authorize no resource type: IAM matches them only on "*" (the task token is the capability).
            assert.equal(s.Resource, '*');
            continue;
          }
          assert.notEqual(s.Resource, '*', `${id} grants on *`);
        }
      }
    }
    // Read and create are on the plan's prefix only.
    const [, statements] = hostPolicies(devOut.json)[0]!;
    assert.match(JSON.stringify(statements), /cairn-dev-111111111111-eu-central-1\/plans\/app-db\/\*/);
    assert.doesNotMatch(JSON.stringify(statements), /eu-central-1\/\*"/);
  });

  test('secrets are referenced by parameter name only', () => {
    const text = JSON.stringify(sentinelOut.json);
    assert.doesNotMatch(text, /SecureString/);
    // The name appears in the plan JSON and in the read grants (host policy, functions), as ARNs.
    const [, statements] = hostPolicies(sentinelOut.json).find(([id]) => id.includes('appdb'))!;
    const get = statements.find((s) => actionsOf(s).includes('ssm:GetParameter'))!;
    assert.match(JSON.stringify(get.Resource), new RegExp(`:parameter${SENTINEL_SECRET_NAME}"`));
    assert.match(JSON.stringify(get.Resource), /:parameter\/cairn\/sentinel\/plans\/app-db"/);
    assert.equal((get.Resource as unknown[]).length, 3, 'the plan and its two secrets, nothing else');
    // The KMS-keyed plan on another team's bucket gets its key and prefix, and no bucket-key grant.
    const [, kmsStatements] = hostPolicies(sentinelOut.json).find(([id]) => id.includes('fileskms'))!;
    assert.match(JSON.stringify(kmsStatements), /other-team-bucket\/cairn\/files-kms\/\*/);
    assert.match(JSON.stringify(kmsStatements), /key\/0d2a3e7b-1111-2222-3333-444455556666/);
    assert.ok(!kmsStatements.some((s) => s.Sid === 'RepositoryBucketKey'));
  });

  test('the parameter key: rotated, retained, usable only through SSM, and decrypting per plan through PARAMETER_ARN', () => {
    for (const out of [devOut, prodOut, sentinelOut]) {
      const { envName, region, account } = out.config;
      const keyId = out.stack.getLogicalId(out.stack.planParameters.key.node.defaultChild as CfnElement);
      const key = resourcesOf(out.json, 'AWS::KMS::Key').find(([id]) => id === keyId)![1];
      assert.equal(key.Properties.EnableKeyRotation, true);
      assert.equal(key.DeletionPolicy, 'Retain');
      const aliases = resourcesOf(out.json, 'AWS::KMS::Alias').filter(
        ([, a]) => a.Properties.AliasName === `alias/cairn-${envName}-parameters`,
      );
      assert.equal(aliases.length, 1);
      assert.deepEqual(aliases[0]![1].Properties.TargetKeyId, { 'Fn::GetAtt': [keyId, 'Arn'] });
      const statements = (key.Properties.KeyPolicy as { Statement: Statement[] }).Statement;
      assert.equal(statements.length, 2, 'the account root (IAM delegation) and the SSM-only deny');
      const [root, deny] = statements as [Statement, Statement];
      assert.equal(root.Effect, 'Allow');
      assert.match(resolveText((root as unknown as { Principal: { AWS: unknown } }).Principal.AWS), new RegExp(`:iam::${account}:root$`));
      assert.equal(deny.Effect, 'Deny');
      assert.deepEqual((deny as unknown as { Principal: unknown }).Principal, { AWS: '*' });
      assert.deepEqual(actionsOf(deny).sort(), ['kms:Decrypt', 'kms:Encrypt', 'kms:GenerateDataKey*', 'kms:ReEncrypt*']);
      assert.deepEqual(deny.Condition, { StringNotEquals: { 'kms:ViaService': `ssm.${region}.amazonaws.com` } });
      // Each host decrypts exactly its own plan's secrets, through SSM.
      for (const plan of out.config.plans) {
        const policyId = out.stack.getLogicalId(out.stack.hostPolicies.get(plan.id)!.policy.node.defaultChild as CfnElement);
        const [, statements] = hostPolicies(out.json).find(([id]) => id === policyId)!;
        const secrets = referencedParameters(plan, 'host');
        const found = statements.find((x) => x.Sid === 'DecryptPlanSecrets');
        if (secrets.length === 0) {
          assert.equal(found, undefined, `${plan.id} names no secret, so decrypts none`);
          continue;
        }
        const decrypt = found!;
        assert.deepEqual(decrypt.Resource, { 'Fn::GetAtt': [keyId, 'Arn'] });
        assert.deepEqual(actionsOf(decrypt), ['kms:Decrypt']);
        const condition = decrypt.Condition!.StringEquals!;
        assert.equal(condition['kms:ViaService'], `ssm.${region}.amazonaws.com`);
        const named = [condition['kms:EncryptionContext:PARAMETER_ARN']].flat().map((v) => JSON.stringify(v));
        assert.equal(named.length, secrets.length, `${plan.id}: its own secrets only`);
        for (const name of secrets)
          assert.ok(
            named.some((n) => n.includes(`:ssm:${region}:${account}:parameter${name}"`)),
            `${plan.id}: ${name}`,
          );
      }
    }
  });

  test('one plan parameter per plan holds the validated plan JSON', () => {
    for (const out of [devOut, prodOut]) {
      const params = resourcesOf(out.json, 'AWS::SSM::Parameter');
      assert.equal(params.length, out.config.plans.length);
      for (const plan of out.config.plans) {
        const [, p] = params.find(([, r]) => r.Properties.Name === `/cairn/${out.config.envName}/plans/${plan.id}`)!;
        assert.equal(p.Properties.Type, 'String');
        assert.deepEqual(parsePlan(JSON.parse(p.Properties.Value as string), 'test'), plan);
      }
    }
  });

  test('every SSM document parameter is validated and passed as an environment variable', () => {
    const [[, doc]] = resourcesOf(prodOut.json, 'AWS::SSM::Document') as [[string, { Properties: Record<string, unknown> }]];
    assert.equal(doc.Properties.DocumentType, 'Command');
    const content = doc.Properties.Content as {
      schemaVersion: string;
      parameters: Record<string, Record<string, unknown>>;
      mainSteps: Array<{ action: string; inputs: Record<string, unknown> }>;
    };
    assert.equal(content.schemaVersion, '2.2');
    assert.deepEqual(Object.keys(content.parameters).sort(), ['operation', 'planId', 'request', 'taskToken']);
    for (const [name, param] of Object.entries(content.parameters)) {
      assert.equal(param.interpolationType, 'ENV_VAR', name);
      assert.ok(param.allowedPattern !== undefined || param.allowedValues !== undefined, `${name} has no allowedPattern/allowedValues`);
    }
    assert.deepEqual(content.parameters.operation!.allowedValues, [...AGENT_OPERATIONS]);
    assert.deepEqual(content.parameters, JSON.parse(JSON.stringify(AGENT_DOCUMENT_PARAMETERS)));
    assert.deepEqual(
      content.mainSteps.map((s) => s.action),
      ['aws:downloadContent', 'aws:runShellScript'],
    );
    const script = (content.mainSteps[1]!.inputs.runCommand as string[]).join('\n');
    assert.doesNotMatch(script, /\{\{/, 'no text substitution of parameters');
    assert.match(script, /^operation="\$\{SSM_operation:-\}"$/m);
    // Every use of a parameter is quoted: no bare $SSM_ or $operation outside double quotes.
    assert.doesNotMatch(script, /[^"{]\$SSM_/);
    assert.match(script, /CAIRN_AGENT_SHA256='[0-9a-f]{64}'/);
    assert.match(script, /send-task-failure/);
    assert.match(script, /Cairn\.AgentCrashed/);
  });

  test('the functions run Node 22 on arm64 with the shared environment; only retention and GC may delete', () => {
    const fns = resourcesOf(prodOut.json, 'AWS::Lambda::Function');
    assert.equal(fns.length, 11, 'nine, archive-lag for the PITR plan and extend-locks for Object Lock');
    assert.equal(resourcesOf(devOut.json, 'AWS::Lambda::Function').length, 9, 'no archive-lag function without a PITR plan');
    for (const [id, fn] of fns) {
      assert.equal(fn.Properties.Runtime, 'nodejs22.x', id);
      assert.deepEqual(fn.Properties.Architectures, ['arm64'], id);
      assert.deepEqual(fn.Properties.TracingConfig, { Mode: 'Active' }, id);
      const env = (fn.Properties.Environment as { Variables: Record<string, unknown> }).Variables;
      for (const name of ['ENV_NAME', 'PLAN_PARAMETER_PREFIX', 'BUCKET_NAME', 'DOCUMENT_NAME', 'POWERTOOLS_SERVICE_NAME'])
        assert.ok(env[name] !== undefined, `${id} lacks ${name}`);
      assert.equal(env.POWERTOOLS_METRICS_NAMESPACE, 'Cairn');
      assert.equal(env.PLAN_PARAMETER_PREFIX, '/cairn/prod/plans/');
    }
    // Deleting repository objects: apply-retention and gc-sweep only. The others may delete the
    // run leases (the plan's orchestration/lease and an each plan's orchestration/hosts/*/lease), nothing else.
    for (const out of [prodOut, sentinelOut, pitrOut]) {
      const deleters = new Set<string>();
      for (const [id, p] of resourcesOf(out.json, 'AWS::IAM::Policy')) {
        for (const s of (p.Properties.PolicyDocument as { Statement: Statement[] }).Statement) {
          if (!actionsOf(s).some((a) => /^s3:Delete/i.test(a))) continue;
          const resources = (Array.isArray(s.Resource) ? s.Resource : [s.Resource]).map((r) => JSON.stringify(r));
          if (resources.every((r) => /\/orchestration\/(hosts\/\*\/)?lease"/.test(r))) continue;
          deleters.add(id.replace(/ServiceRole.*$/, ''));
        }
      }
      assert.deepEqual(
        [...deleters].sort(),
        ['FunctionsApplyRetention', 'FunctionsGcSweep'].map((f) => [...deleters].find((d) => d.startsWith(f)) ?? f).sort(),
      );
      assert.equal(deleters.size, 2);
    }
  });

  test('Object Lock: extend-locks keeps reused objects locked, with retention rights on the plan prefixes only; OBJECT_LOCK_DAYS is set', () => {
    const fnEnv = (out: typeof prodOut, fn: unknown): Record<string, unknown> => {
      const id = out.stack.getLogicalId(fn as CfnElement);
      const r = resourcesOf(out.json, 'AWS::Lambda::Function').find(([k]) => k === id)!;
      return (r[1].Properties.Environment as { Variables: Record<string, unknown> }).Variables;
    };
    const extend = prodOut.stack.functions.extendLocks!;
    assert.ok(extend, 'prod has Object Lock, so extend-locks');
    assert.equal(devOut.stack.functions.extendLocks, undefined, 'dev has no Object Lock, so no extend-locks');
    for (const fn of [extend, prodOut.stack.functions.applyRetention]) {
      const vars = fnEnv(prodOut, fn.node.defaultChild);
      assert.equal(vars.OBJECT_LOCK_DAYS, '35', 'the lock period of cdk/config/prod.ts');
      assert.equal(vars.OBJECT_LOCK_MODE, 'COMPLIANCE');
    }
    assert.equal(fnEnv(devOut, devOut.stack.functions.applyRetention.node.defaultChild).OBJECT_LOCK_DAYS, undefined);

    // Who may read or change retention: extend-locks alone, on the plans' prefixes of the environment bucket.
    const role = prodOut.stack.getLogicalId(extend.role!.node.defaultChild as CfnElement);
    const bucketId = prodOut.stack.getLogicalId(prodOut.stack.storage.bucket.node.defaultChild as CfnElement);
    const prefixes = prodOut.config.plans.map((p) => `plans/${p.id}/*`).sort();
    let statements = 0;
    for (const [, p] of resourcesOf(prodOut.json, 'AWS::IAM::Policy')) {
      for (const st of (p.Properties.PolicyDocument as { Statement: Statement[] }).Statement) {
        // (S3 replication's role reads retention to copy it to the replica; none other may change it.)
        if (!actionsOf(st).some((a) => /PutObjectRetention|^s3:\*$|BypassGovernance/.test(a))) continue;
        assert.deepEqual(JSON.stringify(p.Properties.Roles), JSON.stringify([{ Ref: role }]), 'only the extend-locks role');
        assert.deepEqual([...actionsOf(st)].sort(), ['s3:GetObjectRetention', 's3:PutObjectRetention']);
        const resources = (Array.isArray(st.Resource) ? st.Resource : [st.Resource]).map((r) => JSON.stringify(r));
        assert.ok(
          resources.every((r) => r.includes(bucketId)),
          'the environment bucket',
        );
        assert.deepEqual(resources.map((r) => /"\/(plans\/[^"]+)"/.exec(r)?.[1]).sort(), prefixes, 'each plan prefix, never the bucket');
        statements++;
      }
    }
    assert.equal(statements, 1);

    // The Backup machine keeps the locks after FinalizeBackup and before retention, looping until done.
    const backupOf = (out: typeof prodOut): { States: Record<string, Record<string, unknown>> } => {
      const found = resourcesOf(out.json, 'AWS::StepFunctions::StateMachine').find(([, m]) =>
        String(m.Properties.StateMachineName).endsWith('-backup'),
      )!;
      return definitionOf(found[1]) as { States: Record<string, Record<string, unknown>> };
    };
    const prod = backupOf(prodOut).States;
    assert.equal(prod.FinalizeBackup?.Next, 'StartLocks');
    assert.equal(prod.StartLocks?.Next, 'ExtendLocks');
    assert.equal(prod.ExtendLocks?.Next, 'LocksKept?');
    // payloadResponseOnly: the Parameters are the payload.
    assert.deepEqual(prod.ExtendLocks?.Parameters, {
      'planId.$': '$.planId',
      'snapshotId.$': '$.finalized.snapshotId',
      'locks.$': '$.locks',
    });
    assert.deepEqual(prod['LocksKept?']?.Choices, [{ Variable: '$.locks.done', BooleanEquals: true, Next: 'ApplyRetention' }]);
    assert.equal(prod['LocksKept?']?.Default, 'ExtendLocks');
    assert.deepEqual(
      (prod.ExtendLocks?.Catch as Array<{ Next: string }>).map((c) => c.Next),
      ['RecordFailure'],
    );
    const dev = backupOf(devOut).States;
    assert.equal(dev.FinalizeBackup?.Next, 'ApplyRetention');
    assert.equal(dev.ExtendLocks, undefined);
  });

  test('deletes stay inside the plan prefixes: no function may delete elsewhere in the bucket, nor versions', () => {
    for (const out of [devOut, prodOut, sentinelOut, pitrOut]) {
      for (const [id, p] of resourcesOf(out.json, 'AWS::IAM::Policy')) {
        for (const st of (p.Properties.PolicyDocument as { Statement: Statement[] }).Statement) {
          const deletes = actionsOf(st).filter((a) => /^s3:(Delete|\*)/i.test(a));
          if (deletes.length === 0 || st.Effect !== 'Allow') continue;
          assert.deepEqual(deletes, ['s3:DeleteObject'], `${id}: current objects only (no DeleteObjectVersion)`);
          for (const r of Array.isArray(st.Resource) ? st.Resource : [st.Resource]) {
            const text = JSON.stringify(r);
            assert.match(text, /\/(plans\/[a-z0-9-]+|cairn\/[a-z0-9-]+)\/[^"]*"/, `${id}: ${text} is under a plan prefix`);
            assert.doesNotMatch(text, /"\/\*"\]/, `${id}: not the whole bucket`);
          }
        }
      }
    }
  });

  test('state machines are Standard, JSONPath, valid ASL, logging ALL without execution data, with X-Ray on', () => {
    const machines = resourcesOf(prodOut.json, 'AWS::StepFunctions::StateMachine');
    assert.equal(machines.length, 4);
    for (const [id, m] of machines) {
      assert.equal(m.Properties.StateMachineType, 'STANDARD', id);
      assert.deepEqual(m.Properties.TracingConfiguration, { Enabled: true }, id);
      assert.equal((m.Properties.LoggingConfiguration as { Level: string }).Level, 'ALL', id);
      // No execution data in the logs: inputs and outputs carry task tokens.
      assert.equal((m.Properties.LoggingConfiguration as { IncludeExecutionData: boolean }).IncludeExecutionData, false, id);
      const asl = definitionOf(m);
      assert.notEqual(asl.QueryLanguage, 'JSONata', id);
      assert.doesNotMatch(JSON.stringify(asl), /JSONata|\{%/, id);
      const result = aslValidator(structuredClone(asl));
      assert.ok(result.isValid, `${id}: ${result.errorsText()}`);
    }
  });

  test('the repository is made by create-repository before the first backup and the first retention, create-if-absent only', () => {
    const machine = (kind: string): Record<string, unknown> => {
      const found = resourcesOf(prodOut.json, 'AWS::StepFunctions::StateMachine').find(([, m]) =>
        String(m.Properties.StateMachineName).endsWith(`-${kind}`),
      );
      return definitionOf(found![1]);
    };
    const backup = machine('backup') as { States: Record<string, { Type: string; Next?: string; Default?: string; Resource?: string }> };
    assert.equal(backup.States['Skipped?']?.Default, 'EnsureRepository', 'a run that holds the lease first ensures the repository');
    assert.equal(backup.States.EnsureRepository?.Next, 'EachHost?', 'then one agent run, or one per host of an each plan');
    const each = backup.States['EachHost?'] as unknown as { Choices: Array<{ Next: string }>; Default: string };
    assert.equal(each.Default, 'RunAgent');
    assert.deepEqual(
      each.Choices.map((c) => c.Next),
      ['BackupHosts'],
    );
    const retention = machine('retention') as { StartAt: string; States: Record<string, { Next?: string }> };
    assert.equal(retention.StartAt, 'EnsureRepository');
    assert.equal(retention.States.EnsureRepository?.Next, 'ApplyRetention');
    // Its writes: config, key files and history, each only with If-None-Match: * (it can make a repository, never overwrite one).
    const role = prodOut.stack.getLogicalId(prodOut.stack.functions.createRepository.role!.node.defaultChild as CfnElement);
    const puts = resourcesOf(prodOut.json, 'AWS::IAM::Policy')
      .filter(([, p]) => JSON.stringify(p.Properties.Roles).includes(`"${role}"`))
      .flatMap(([, p]) => (p.Properties.PolicyDocument as { Statement: Statement[] }).Statement)
      .filter((st) => st.Effect === 'Allow' && actionsOf(st).some((a) => /^s3:Put/.test(a)));
    assert.equal(puts.length, 1);
    assert.deepEqual(puts[0]!.Condition, { StringEquals: { 's3:if-none-match': '*' } });
    assert.match(JSON.stringify(puts[0]!.Resource), /\/config"[\s\S]*\/keys\/\*"[\s\S]*\/history\/\*"/);
  });

  test('the Backup machine sends the agent command with the task token and heartbeat from the plan', () => {
    const backup = prodOut.stack.stateMachines.backup;
    const [, m] = resourcesOf(prodOut.json, 'AWS::StepFunctions::StateMachine').find(
      ([id]) => id === prodOut.stack.getLogicalId(backup.node.defaultChild as CfnElement),
    )!;
    const asl = definitionOf(m) as { StartAt: string; States: Record<string, Record<string, unknown>> };
    assert.equal(asl.StartAt, 'PlanBackup');
    const run = asl.States.RunAgent!;
    assert.equal(run.Resource, 'arn:aws:states:::aws-sdk:ssm:sendCommand.waitForTaskToken');
    assert.equal(run.HeartbeatSecondsPath, '$.plan.heartbeatSeconds');
    assert.equal(run.TimeoutSecondsPath, '$.plan.timeoutSeconds');
    assert.equal(run.ResultPath, '$.agent');
    assert.deepEqual((run.Parameters as { Parameters: unknown }).Parameters, {
      operation: ['backup'],
      'planId.$': 'States.Array($.planId)',
      'taskToken.$': 'States.Array($$.Task.Token)',
      'request.$': 'States.Array($.plan.request)',
    });
    for (const [name, state] of Object.entries(asl.States)) {
      if (state.Type === 'Task' || state.Type === 'Map') {
        if (name === 'RecordFailure') continue;
        assert.deepEqual(state.Catch, [{ ErrorEquals: ['States.ALL'], ResultPath: '$.error', Next: 'RecordFailure' }], name);
      }
    }
    assert.deepEqual(asl.States.Failed, { Type: 'Fail', ErrorPath: '$.error.Error', CausePath: '$.error.Cause' });
    const gc = asl.States.GcSweep as { ItemsPath: string; MaxConcurrency: number; ItemProcessor: { ProcessorConfig: { Mode: string } } };
    assert.equal(gc.ItemsPath, '$.retention.gc.prefixes');
    assert.equal(gc.MaxConcurrency, 16);
    assert.equal(gc.ItemProcessor.ProcessorConfig.Mode, 'DISTRIBUTED');
  });

  test('one backup and one retention schedule per plan, a verify schedule per plan with verification, each with a DLQ and retries', () => {
    for (const out of [devOut, prodOut]) {
      const schedules = resourcesOf(out.json, 'AWS::Scheduler::Schedule');
      const named = (kind: string): typeof schedules =>
        schedules.filter(([, s]) => String(s.Properties.Name).startsWith(`cairn-${out.config.envName}-${kind}-`));
      assert.equal(named('backup').length, out.config.plans.length);
      assert.equal(named('retention').length, out.config.plans.length);
      assert.equal(named('verify').length, out.config.plans.filter((p) => p.verification !== undefined).length);
      for (const [id, s] of schedules) {
        const target = s.Properties.Target as { DeadLetterConfig?: unknown; RetryPolicy?: { MaximumRetryAttempts: number }; Input: string };
        assert.ok(target.DeadLetterConfig, `${id} has no DLQ`);
        // The PITR and freshness schedules measure or push every few minutes: a late one is superseded by the next, not retried for hours.
        const frequent = /-(archive-lag|binlog-push-|freshness)/.test(String(s.Properties.Name));
        assert.equal(target.RetryPolicy?.MaximumRetryAttempts, frequent ? 2 : 5, id);
      }
      for (const plan of out.config.plans) {
        const [, s] = named('backup').find(([, r]) => r.Properties.Name === `cairn-${out.config.envName}-backup-${plan.id}`)!;
        assert.deepEqual(JSON.parse((s.Properties.Target as { Input: string }).Input), {
          planId: plan.id,
          scheduledTime: '<aws.scheduler.scheduled-time>',
        });
        assert.equal(s.Properties.ScheduleExpression, plan.schedule.expression);
        assert.equal(s.Properties.ScheduleExpressionTimezone, plan.schedule.timeZone);
      }
    }
    prodOut.template.hasResourceProperties('AWS::SQS::Queue', { KmsMasterKeyId: Match.anyValue() });
  });

  test('alarms per plan: failures, skipped retention, partial backups, verify and drill, freshness against the RPO', () => {
    const alarms = resourcesOf(prodOut.json, 'AWS::CloudWatch::Alarm');
    const plans = prodOut.config.plans;
    const verified = plans.filter((p) => p.verification !== undefined).length;
    assert.equal(alarms.length, 7 * plans.length + 2 * verified + 1, 'and the archive-lag alarm of the PITR plan');
    const byName = (name: string): Record<string, unknown> => alarms.find(([, a]) => a.Properties.AlarmName === name)![1].Properties;

    // "The newest good backup is older than the RPO": measured from the repository every 15 minutes, both
    // measurements of the 30-minute period above the RPO (Minimum), silence breaching.
    const fresh = byName('cairn-prod-orders-db-freshness');
    assert.equal(fresh.MetricName, 'NewestGoodBackupAgeSeconds');
    assert.equal(fresh.Namespace, 'Cairn');
    assert.equal(fresh.Statistic, 'Minimum');
    assert.equal(fresh.Period, 1800);
    assert.equal(fresh.EvaluationPeriods, 1);
    assert.equal(fresh.ComparisonOperator, 'GreaterThanThreshold');
    assert.equal(fresh.Threshold, 7 * 3600);
    assert.equal(fresh.TreatMissingData, 'breaching');
    assert.deepEqual(fresh.Dimensions, [{ Name: 'PlanId', Value: 'orders-db' }]);
    const [, schedule] = resourcesOf(prodOut.json, 'AWS::Scheduler::Schedule').find(
      ([, r]) => r.Properties.Name === 'cairn-prod-freshness',
    )!;
    assert.equal(schedule.Properties.ScheduleExpression, 'rate(15 minutes)');
    const input = JSON.parse((schedule.Properties.Target as { Input: string }).Input) as { planIds: string[] };
    assert.deepEqual(
      input.planIds,
      plans.map((p) => p.id),
    );

    // Events: one is enough, and no event is no problem.
    for (const metric of [
      'BackupFailed',
      'RestoreFailed',
      'AgentHeartbeatTimeout',
      'RetentionFailed',
      'RetentionSkipped',
      'PartialBackup',
    ]) {
      const of = alarms.filter(([, a]) => a.Properties.MetricName === metric);
      assert.equal(of.length, plans.length, metric);
      for (const [, a] of of) {
        assert.equal(a.Properties.Statistic, 'Sum', metric);
        assert.equal(a.Properties.Threshold, 1, metric);
        assert.equal(a.Properties.ComparisonOperator, 'GreaterThanOrEqualToThreshold', metric);
        assert.equal(a.Properties.TreatMissingData, 'notBreaching', metric);
      }
    }
    for (const metric of ['VerifyFailed', 'DrillFailed'])
      assert.equal(alarms.filter(([, a]) => a.Properties.MetricName === metric).length, verified, `${metric}: plans with verification`);
    for (const [, a] of alarms) assert.equal((a.Properties.AlarmActions as unknown[]).length, 1);
    prodOut.template.hasResourceProperties('AWS::SNS::Topic', { KmsMasterKeyId: Match.anyValue() });
    prodOut.template.resourceCountIs('AWS::SNS::Subscription', 1);
    devOut.template.resourceCountIs('AWS::SNS::Subscription', 0);
    const dashboard = JSON.stringify(prodOut.template.findResources('AWS::CloudWatch::Dashboard'));
    for (const metric of ['NewestGoodBackupAgeSeconds', 'BytesAdded', 'DurationSeconds', 'DedupeRatio', 'BackupFailed'])
      assert.match(dashboard, new RegExp(metric));
  });

  test('archive-lag runs every 5 minutes for the PITR plans; its function may only list their logs/ and read their plan parameters', () => {
    assert.equal(
      resourcesOf(devOut.json, 'AWS::Scheduler::Schedule').filter(([, r]) => String(r.Properties.Name).includes('archive-lag')).length,
      0,
    );
    const [, schedule] = resourcesOf(pitrOut.json, 'AWS::Scheduler::Schedule').find(
      ([, r]) => r.Properties.Name === 'cairn-pitr-archive-lag',
    )!;
    assert.equal(schedule.Properties.ScheduleExpression, 'rate(5 minutes)');
    const target = schedule.Properties.Target as { Arn: unknown; Input: string };
    assert.deepEqual(JSON.parse(target.Input), { planIds: ['pg-pitr', 'maria-tagged', 'maria-ext', 'maria-follow'] });
    const fn = pitrOut.stack.functions.archiveLag!;
    assert.deepEqual(target.Arn, { 'Fn::GetAtt': [pitrOut.stack.getLogicalId(fn.node.defaultChild as CfnElement), 'Arn'] });

    const role = pitrOut.stack.getLogicalId(fn.role!.node.defaultChild as CfnElement);
    const statements = resourcesOf(pitrOut.json, 'AWS::IAM::Policy')
      .filter(([, p]) => JSON.stringify(p.Properties.Roles) === JSON.stringify([{ Ref: role }]))
      .flatMap(([, p]) => (p.Properties.PolicyDocument as { Statement: Statement[] }).Statement);
    const actions = statements.flatMap(actionsOf).sort();
    assert.deepEqual(actions, ['s3:ListBucket', 's3:ListBucket', 'ssm:GetParameter', 'xray:PutTelemetryRecords', 'xray:PutTraceSegments']);
    const get = statements.find((st) => actionsOf(st).includes('ssm:GetParameter'))!;
    const params = JSON.stringify(get.Resource);
    for (const id of ['pg-pitr', 'maria-tagged', 'maria-ext', 'maria-follow'])
      assert.match(params, new RegExp(`:parameter/cairn/pitr/plans/${id}"`));
    assert.doesNotMatch(params, /app-db|passphrase|password/, 'neither plans without PITR nor secrets');
    const lists = statements.filter((st) => actionsOf(st).includes('s3:ListBucket'));
    assert.deepEqual(
      lists.map((st) => st.Condition?.StringLike?.['s3:prefix']).sort(),
      [['cairn/maria-ext/logs/*'], ['plans/pg-pitr/logs/*', 'plans/maria-tagged/logs/*', 'plans/maria-follow/logs/*']].sort(),
    );
    assert.match(JSON.stringify(lists.map((st) => st.Resource)), /s3:::other-team-bucket"/);
    assert.match(JSON.stringify(lists.map((st) => st.Resource)), /s3:::cairn-pitr-111111111111-eu-central-1"/);
  });

  test("one binlog-push schedule per MariaDB PITR plan that pushes on a schedule: the agent document with operation archive on the plan's hosts", () => {
    const pushes = resourcesOf(pitrOut.json, 'AWS::Scheduler::Schedule').filter(([, r]) =>
      String(r.Properties.Name).startsWith('cairn-pitr-binlog-push-'),
    );
    assert.deepEqual(
      pushes.map(([, r]) => r.Properties.Name).sort(),
      ['cairn-pitr-binlog-push-maria-ext', 'cairn-pitr-binlog-push-maria-tagged'],
      'none for PostgreSQL, none for a follower',
    );
    const input = (name: string): Record<string, unknown> => {
      const [, r] = pushes.find(([, p]) => p.Properties.Name === name)!;
      const t = r.Properties.Target as { Arn: unknown; Input: unknown };
      assert.match(JSON.stringify(t.Arn), /":scheduler:::aws-sdk:ssm:sendCommand"/);
      return { expression: r.Properties.ScheduleExpression, ...(JSON.parse(resolveText(t.Input)) as Record<string, unknown>) };
    };
    const tagged = input('cairn-pitr-binlog-push-maria-tagged');
    assert.equal(tagged.expression, 'rate(10 minutes)');
    assert.equal(tagged.DocumentName, 'Cairn-pitr-Agent');
    assert.deepEqual(tagged.Targets, [{ Key: 'tag:cairn:plan', Values: ['maria-tagged'] }]);
    assert.deepEqual(tagged.Parameters, { operation: ['archive'], planId: ['maria-tagged'] }, 'no task token, no request');
    const ext = input('cairn-pitr-binlog-push-maria-ext');
    assert.equal(ext.expression, 'rate(5 minutes)', 'the default schedule');
    assert.deepEqual(ext.InstanceIds, ['i-0123456789abcdef1', 'mi-0123456789abcdef0']);

    const role = pitrOut.stack.getLogicalId(pitrOut.stack.pitrSchedules!.role.node.defaultChild as CfnElement);
    const statements = resourcesOf(pitrOut.json, 'AWS::IAM::Policy')
      .filter(([, p]) => JSON.stringify(p.Properties.Roles) === JSON.stringify([{ Ref: role }]))
      .flatMap(([, p]) => (p.Properties.PolicyDocument as { Statement: Statement[] }).Statement);
    const sends = statements.filter((st) => actionsOf(st).includes('ssm:SendCommand'));
    assert.deepEqual(
      [...new Set(statements.flatMap(actionsOf))].sort(),
      ['lambda:InvokeFunction', 'sqs:SendMessage', 'ssm:SendCommand'],
      'invoke archive-lag, run the document, dead-letter: nothing else',
    );
    const resources = JSON.stringify(sends.map((st) => st.Resource));
    assert.match(resources, /:document\/Cairn-pitr-Agent"/);
    assert.match(resources, /:instance\/i-0123456789abcdef1"/);
    assert.match(resources, /:managed-instance\/mi-0123456789abcdef0"/);
    assert.match(resources, /:instance\/\*"/, 'a tag-selected plan: any instance, with this document only');
    assert.doesNotMatch(resources, /i-0123456789abcdef2/, 'the follower plan sends nothing');

    const [, prodPush] = resourcesOf(prodOut.json, 'AWS::Scheduler::Schedule').find(
      ([, r]) => r.Properties.Name === 'cairn-prod-binlog-push-orders-db',
    )!;
    assert.deepEqual(
      (JSON.parse(resolveText((prodPush.Properties.Target as { Input: unknown }).Input)) as { InstanceIds: string[] }).InstanceIds,
      ['i-0a1b2c3d4e5f60718'],
    );
  });

  test('an archive-lag alarm per PITR plan: threshold from maxArchiveLagMinutes, missing data breaching, and on the dashboard', () => {
    const alarms = resourcesOf(pitrOut.json, 'AWS::CloudWatch::Alarm').filter(([, a]) => a.Properties.MetricName === 'ArchiveLagSeconds');
    const byName = Object.fromEntries(alarms.map(([, a]) => [a.Properties.AlarmName as string, a.Properties]));
    assert.deepEqual(Object.keys(byName).sort(), [
      'cairn-pitr-maria-ext-archive-lag',
      'cairn-pitr-maria-follow-archive-lag',
      'cairn-pitr-maria-tagged-archive-lag',
      'cairn-pitr-pg-pitr-archive-lag',
    ]);
    const pg = byName['cairn-pitr-pg-pitr-archive-lag']!;
    assert.equal(pg.Threshold, 20 * 60);
    assert.equal(pg.ComparisonOperator, 'GreaterThanThreshold');
    assert.equal(pg.Statistic, 'Maximum');
    assert.equal(pg.Namespace, 'Cairn');
    assert.equal(pg.TreatMissingData, 'breaching');
    assert.deepEqual(pg.Dimensions, [{ Name: 'PlanId', Value: 'pg-pitr' }]);
    assert.ok(Number(pg.Period) >= 600, 'two measurements per period: one late run is not silence');
    assert.equal(byName['cairn-pitr-maria-ext-archive-lag']!.Threshold, 15 * 60, 'the default');
    assert.equal(byName['cairn-pitr-maria-follow-archive-lag']!.Threshold, 5 * 60);
    for (const a of Object.values(byName)) assert.equal((a.AlarmActions as unknown[]).length, 1);
    assert.match(JSON.stringify(pitrOut.template.findResources('AWS::CloudWatch::Dashboard')), /ArchiveLagSeconds/);
    assert.doesNotMatch(JSON.stringify(devOut.template.findResources('AWS::CloudWatch::Dashboard')), /ArchiveLagSeconds/);
  });

  test('a PostgreSQL PITR plan gets its archive_command and restore_command as outputs; its hosts may create under logs/ and still not delete', () => {
    const outputs = pitrOut.json.Outputs as Record<string, { Value: unknown; Description?: string }>;
    const values = Object.values(outputs)
      .map((o) => o.Value)
      .filter((v): v is string => typeof v === 'string' && /_command = /.test(v));
    const cairn =
      '/usr/local/bin/cairn --repo s3://cairn-pitr-111111111111-eu-central-1/plans/pg-pitr/?region=eu-central-1 --password-file /etc/cairn/pg-pitr.passphrase';
    assert.deepEqual(values.sort(), [
      `archive_command = '${cairn} wal-push --stream pg-7000000000000000042 %p'`,
      `restore_command = '${cairn} wal-fetch --stream pg-7000000000000000042 %f "%p"'`,
    ]);
    const [, statements] = hostPolicies(pitrOut.json).find(([id]) => id.includes('pgpitr'))!;
    const glob = (pattern: string): RegExp => new RegExp(`^${pattern.replace(/[.+?^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*')}$`);
    const listed = statements.find((st) => st.Sid === 'ListPlanPrefix')!.Condition!.StringLike!['s3:prefix'] as string[];
    assert.ok(listed.some((p) => glob(p).test('plans/pg-pitr/logs/pg-7000000000000000042/meta/')));
    const create = statements.find((st) => st.Sid === 'CreateOnlyIfAbsent')!;
    const objects = (create.Resource as { 'Fn::Join': [string, unknown[]] })['Fn::Join'][1]
      .filter((p): p is string => typeof p === 'string')
      .join('');
    assert.match(
      objects,
      /:s3:::cairn-pitr-111111111111-eu-central-1\/plans\/pg-pitr\/\*$/,
      'logs/ is under the plan prefix the host may create in',
    );
  });
});
