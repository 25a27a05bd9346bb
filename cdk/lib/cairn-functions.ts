// One unit: every control-plane function and its IAM grants, since each grant is written against the others (who reads,
// who writes, who deletes, who may read the seal key); split, the least-privilege split would be harder to review.
import { Duration, RemovalPolicy, Stack, type CfnElement } from 'aws-cdk-lib';
import * as iam from 'aws-cdk-lib/aws-iam';
import type * as kms from 'aws-cdk-lib/aws-kms';
import type * as s3 from 'aws-cdk-lib/aws-s3';
import * as secretsmanager from 'aws-cdk-lib/aws-secretsmanager';
import { Construct } from 'constructs';
import {
  awsS3Location,
  pitrOf,
  planParameterName,
  planParameterPrefix,
  referencedParameters,
  repositoryEndpoint,
  type Plan,
} from '../../agent/core/plan.ts';
import {
  CONFIG_KEY,
  HISTORY_PREFIX,
  KEY_CHECK_KEY,
  KEYS_PREFIX,
  LEASE_KEY,
  LOGS_PREFIX,
  ORCHESTRATION_PREFIX,
  RUNS_PREFIX,
} from '../../agent/core/layout.ts';
import { REPOSITORY_CONTEXT_KEY } from '../../agent/core/aws-calls.ts';
import { controlSealParameterName, controlSealSecretName } from '../../agent/core/run-lease.ts';
import { CairnFunction } from './cairn-function.ts';
import { acknowledge, acknowledgeFindings, arnFinding, attrFinding } from './nag.ts';

/** Where an `each` plan's hosts keep their own run lease and run records (functions/host-records.ts). */
const HOSTS_PREFIX = `${ORCHESTRATION_PREFIX}hosts/`;

export interface CairnFunctionsProps {
  envName: string;
  plans: readonly Plan[];
  bucket: s3.IBucket;
  /** The bucket's name from the config: `bucket.bucketName` is a token at synth time and matches no plan URL. */
  bucketName: string;
  bucketKey: kms.IKey;
  /** Cairn's SecureString key (plan-parameters.ts). */
  parameterKey: kms.IKey;
  documentName: string;
  /** The bucket's Object Lock (repository.objectLock): with it, extend-locks keeps reused packs locked. */
  objectLock?: { mode: 'GOVERNANCE' | 'COMPLIANCE'; days: number } | undefined;
}

/**
 * The control plane's Lambda functions (handlers in functions/), each with its
 * own role: every one reads plans and the repository; finalize and record-result
 * also write; only apply-retention and gc-sweep may delete repository objects.
 * With a PITR plan, archive-lag too: it lists the plans' log archives and
 * nothing else.
 */
export class CairnFunctions extends Construct {
  readonly planBackup: CairnFunction;
  readonly finalizeBackup: CairnFunction;
  readonly applyRetention: CairnFunction;
  readonly gcSweep: CairnFunction;
  readonly planRestore: CairnFunction;
  readonly planVerify: CairnFunction;
  readonly recordResult: CairnFunction;
  /** Makes a plan's repository when its prefix holds none (the Backup and Retention machines' first state). */
  readonly createRepository: CairnFunction;
  /** Publishes each plan's newest good backup age on a schedule (the freshness alarm's metric). */
  readonly freshness: CairnFunction;
  /** Only when some plan has PITR on. */
  readonly archiveLag: CairnFunction | undefined;
  /** Only with Object Lock: keeps what a new snapshot uses locked for the lock period (the Backup machine's ExtendLocks). */
  readonly extendLocks: CairnFunction | undefined;
  /** The key the run lease and run records are sealed with (agent/core/run-lease.ts): functions only, never hosts. */
  readonly controlSeal: secretsmanager.Secret;

  constructor(scope: Construct, id: string, props: CairnFunctionsProps) {
    super(scope, id);
    const stack = Stack.of(this);
    const environment = {
      ENV_NAME: props.envName,
      PLAN_PARAMETER_PREFIX: planParameterPrefix(props.envName),
      BUCKET_NAME: props.bucket.bucketName,
      DOCUMENT_NAME: props.documentName,
      POWERTOOLS_SERVICE_NAME: 'cairn',
      POWERTOOLS_METRICS_NAMESPACE: 'Cairn',
      // apply-retention keeps every snapshot younger than the lock; extend-locks keeps what they use locked.
      ...(props.objectLock ? { OBJECT_LOCK_DAYS: String(props.objectLock.days), OBJECT_LOCK_MODE: props.objectLock.mode } : {}),
    };
    const make = (fid: string, entry: string, description: string, timeout?: Duration): CairnFunction =>
      new CairnFunction(this, fid, { entry, description, environment, ...(timeout === undefined ? {} : { timeout }) });

    this.planBackup = make('PlanBackup', 'plan-backup', 'Cairn: plans a backup run (targets, request, skip if already done)');
    this.finalizeBackup = make('FinalizeBackup', 'finalize-backup', 'Cairn: checks and records a finished backup');
    this.applyRetention = make(
      'ApplyRetention',
      'apply-retention',
      'Cairn: applies the retention policy and marks garbage',
      Duration.minutes(15),
    );
    this.gcSweep = make(
      'GcSweep',
      'gc-sweep',
      'Cairn: deletes unreferenced packs of one prefix after the grace period',
      Duration.minutes(15),
    );
    this.planRestore = make('PlanRestore', 'plan-restore', 'Cairn: validates restore input and plans the restore');
    this.planVerify = make('PlanVerify', 'plan-verify', 'Cairn: plans a verify or restore drill');
    this.recordResult = make('RecordResult', 'record-result', 'Cairn: records the outcome of a run (history, metrics)');
    this.createRepository = make(
      'CreateRepository',
      'create-repository',
      "Cairn: creates a plan's repository if absent, with the plan's key source",
    );
    this.freshness = make('Freshness', 'freshness', "Cairn: publishes the age of each plan's newest good backup");
    this.extendLocks = props.objectLock
      ? make('ExtendLocks', 'extend-locks', 'Cairn: keeps the objects a new snapshot uses under Object Lock', Duration.minutes(15))
      : undefined;

    this.archiveLag = this.archiveLagFunction(props, make);
    this.controlSeal = this.controlSealSecret(props.envName);

    const all = [
      this.planBackup,
      this.finalizeBackup,
      this.applyRetention,
      this.gcSweep,
      this.planRestore,
      this.planVerify,
      this.recordResult,
      this.createRepository,
      this.freshness,
      ...(this.extendLocks ? [this.extendLocks] : []),
    ];
    const secretNames = [...new Set(props.plans.flatMap((p) => referencedParameters(p, 'control')))];
    const parameterArn = (name: string): string => `arn:${stack.partition}:ssm:${stack.region}:${stack.account}:parameter${name}`;
    for (const fn of all) {
      props.bucket.grantRead(fn);
      fn.addToRolePolicy(
        new iam.PolicyStatement({
          actions: ['ssm:GetParameter'],
          resources: [parameterArn(`${planParameterPrefix(props.envName)}*`), ...secretNames.map(parameterArn)],
        }),
      );
      if (secretNames.length > 0) {
        // The plans' SecureStrings, decrypted through SSM with the parameter's ARN as encryption context.
        fn.addToRolePolicy(
          new iam.PolicyStatement({
            actions: ['kms:Decrypt'],
            resources: [props.parameterKey.keyArn],
            conditions: {
              StringEquals: {
                'kms:ViaService': `ssm.${stack.region}.amazonaws.com`,
                'kms:EncryptionContext:PARAMETER_ARN': secretNames.map(parameterArn),
              },
            },
          }),
        );
      }
      const kmsKeys = [...new Set(props.plans.flatMap((p) => ('kmsKeyArn' in p.keySource ? [p.keySource.kmsKeyArn] : [])))];
      if (kmsKeys.length > 0)
        fn.addToRolePolicy(
          new iam.PolicyStatement({
            actions: ['kms:Decrypt'],
            resources: kmsKeys,
            conditions: { StringLike: { [`kms:EncryptionContext:${REPOSITORY_CONTEXT_KEY}`]: '?*' } },
          }),
        );
    }
    // Deletes stay inside the plans' prefixes of the environment's bucket (current objects only: no
    // s3:DeleteObjectVersion, so a delete leaves a noncurrent version until the lifecycle expires it).
    // A plan at an S3-compatible endpoint gets no S3 grant at all: its access key (a plan secret, above) signs for it.
    const s3Plans = props.plans.flatMap((p) => awsS3Location(p) ?? []);
    const ownPrefixes = s3Plans.filter((l) => l.bucket === props.bucketName).map((l) => props.bucket.arnForObjects(`${l.prefix}*`));
    // Writes too, and only objects: not bucket.grantPut, whose action set also sets Object Lock retention,
    // legal holds and tags on the whole bucket (a retention can only be extended by extend-locks, below).
    for (const fn of [this.finalizeBackup, this.recordResult, this.applyRetention, this.gcSweep]) {
      if (ownPrefixes.length === 0) continue;
      fn.addToRolePolicy(
        new iam.PolicyStatement({ sid: 'PutInPlanPrefixes', actions: ['s3:PutObject', 's3:AbortMultipartUpload'], resources: ownPrefixes }),
      );
      fn.addToRolePolicy(
        new iam.PolicyStatement({
          sid: 'PutDataKey',
          actions: ['kms:GenerateDataKey'],
          resources: [props.bucketKey.keyArn],
          conditions: { StringEquals: { 'kms:ViaService': `s3.${stack.region}.amazonaws.com` } },
        }),
      );
    }
    for (const fn of [this.applyRetention, this.gcSweep]) {
      if (ownPrefixes.length > 0)
        fn.addToRolePolicy(new iam.PolicyStatement({ sid: 'DeleteInPlanPrefixes', actions: ['s3:DeleteObject'], resources: ownPrefixes }));
    }
    // Object Lock: extend-locks reads and extends the retention of objects under the plans' prefixes, nothing else
    // (no s3:BypassGovernanceRetention: it never shortens a lock).
    if (this.extendLocks && ownPrefixes.length > 0)
      this.extendLocks.addToRolePolicy(
        new iam.PolicyStatement({
          sid: 'ObjectLockInPlanPrefixes',
          actions: ['s3:GetObjectRetention', 's3:PutObjectRetention'],
          resources: ownPrefixes,
        }),
      );
    // The run lease (one object per plan, orchestration/lease) is taken by plan-backup and
    // given back by finalize-backup or record-result: put and delete on that key only. plan-backup
    // also creates the scheduled time's run record (orchestration/runs/<hash>, create-if-absent),
    // and writing into the environment's SSE-KMS bucket needs a data key.
    const runFindings: string[] = [];
    // An `each` plan's hosts have a lease and run records each, under orchestration/hosts/<instance id>/
    // (functions/host-records.ts); granted for every plan, since a plan may switch targets.mode without redeploying roles.
    const hostRecords = (l: { bucket: string; prefix: string }, rest: string): string =>
      `s3:::${l.bucket}/${l.prefix}${HOSTS_PREFIX}*/${rest}`;
    const leaseArns = [
      ...s3Plans.map((l) => `arn:${stack.partition}:s3:::${l.bucket}/${l.prefix}${LEASE_KEY}`),
      ...s3Plans.map((l) => `arn:${stack.partition}:${hostRecords(l, 'lease')}`),
    ];
    runFindings.push(...s3Plans.map((l) => `Resource::${arnFinding(stack, hostRecords(l, 'lease'))}`));
    if (leaseArns.length > 0) {
      for (const fn of [this.planBackup, this.finalizeBackup, this.recordResult]) {
        fn.addToRolePolicy(
          new iam.PolicyStatement({ sid: 'RunLease', actions: ['s3:PutObject', 's3:DeleteObject'], resources: leaseArns }),
        );
      }
      const runArns = [
        ...s3Plans.map((l) => `arn:${stack.partition}:s3:::${l.bucket}/${l.prefix}${RUNS_PREFIX}*`),
        ...s3Plans.map((l) => `arn:${stack.partition}:${hostRecords(l, 'runs/*')}`),
      ];
      runFindings.push(...s3Plans.map((l) => `Resource::${arnFinding(stack, hostRecords(l, 'runs/*'))}`));
      this.planBackup.addToRolePolicy(new iam.PolicyStatement({ sid: 'RunRecords', actions: ['s3:PutObject'], resources: runArns }));
      runFindings.push(...s3Plans.map((l) => `Resource::${arnFinding(stack, `s3:::${l.bucket}/${l.prefix}${RUNS_PREFIX}*`)}`));
      if (s3Plans.some((l) => l.bucket === props.bucketName)) {
        this.planBackup.addToRolePolicy(
          new iam.PolicyStatement({
            sid: 'RunLeaseDataKey',
            actions: ['kms:GenerateDataKey'],
            resources: [props.bucketKey.keyArn],
            conditions: { StringEquals: { 'kms:ViaService': `s3.${stack.region}.amazonaws.com` } },
          }),
        );
      }
    }
    this.grantRepositoryCreation(props, s3Plans, runFindings);
    // Plans whose repository is another bucket than the environment's: the same split of read, write and delete on their prefix.
    const external = s3Plans.filter((l) => l.bucket !== props.bucketName);
    const externalFindings: string[] = [];
    if (external.length > 0) {
      const objects = external.map((l) => `arn:${stack.partition}:s3:::${l.bucket}/${l.prefix}*`);
      externalFindings.push(...external.map((l) => `Resource::${arnFinding(stack, `s3:::${l.bucket}/${l.prefix}*`)}`));
      const buckets = [...new Set(external.map((l) => `arn:${stack.partition}:s3:::${l.bucket}`))];
      for (const fn of all) {
        fn.addToRolePolicy(new iam.PolicyStatement({ actions: ['s3:ListBucket'], resources: buckets }));
        fn.addToRolePolicy(new iam.PolicyStatement({ actions: ['s3:GetObject'], resources: objects }));
      }
      for (const fn of [this.finalizeBackup, this.recordResult, this.applyRetention, this.gcSweep])
        fn.addToRolePolicy(new iam.PolicyStatement({ actions: ['s3:PutObject'], resources: objects }));
      for (const fn of [this.applyRetention, this.gcSweep])
        fn.addToRolePolicy(new iam.PolicyStatement({ actions: ['s3:DeleteObject'], resources: objects }));
    }
    // Tag-selected targets are resolved to the managed instances that carry the tag.
    for (const fn of [this.planBackup, this.planRestore, this.planVerify]) {
      fn.addToRolePolicy(
        new iam.PolicyStatement({ actions: ['ssm:DescribeInstanceInformation', 'ec2:DescribeInstances'], resources: ['*'] }),
      );
    }
    const bucketFinding = `${attrFinding(props.bucket.node.defaultChild as CfnElement)}/*`;
    for (const fn of all) {
      acknowledgeFindings(
        fn,
        'AwsSolutions-IAM5',
        [
          `Resource::${bucketFinding}`,
          'Action::s3:GetObject*',
          'Action::s3:GetBucket*',
          'Action::s3:List*',
          'Action::s3:Abort*',
          ...s3Plans
            .filter((l) => l.bucket === props.bucketName)
            .map((l) => `Resource::${bucketFinding}`.replace(/\/\*$/, `/${l.prefix}*`)),
          'Action::kms:GenerateDataKey*',
          'Action::kms:ReEncrypt*',
          `Resource::${arnFinding(stack, `ssm:${stack.region}:${stack.account}:parameter${planParameterPrefix(props.envName)}*`)}`,
          ...externalFindings,
          ...runFindings,
        ],
        "The control plane reads (and, per function, writes or deletes) every plan's prefix of this environment's repository bucket and every plan parameter of the environment; the action groups are the CDK grant sets for read, put and delete on that one bucket and its key.",
      );
      acknowledgeFindings(
        fn,
        'AwsSolutions-IAM5',
        ['Resource::*'],
        'ssm:DescribeInstanceInformation and ec2:DescribeInstances (resolving tag-selected hosts) and X-Ray writes support no resource scoping.',
      );
      acknowledgeFunctionDefaults(fn);
    }
  }

  get all(): CairnFunction[] {
    return [
      this.planBackup,
      this.finalizeBackup,
      this.applyRetention,
      this.gcSweep,
      this.planRestore,
      this.planVerify,
      this.recordResult,
      this.createRepository,
      this.freshness,
      ...(this.archiveLag ? [this.archiveLag] : []),
      ...(this.extendLocks ? [this.extendLocks] : []),
    ];
  }

  /**
   * The seal key of the control plane's records: generated by Secrets Manager at deploy, read by the
   * functions that write or release the run lease and the two that write and read the GC work list
   * (agent/core/gc-work-list.ts), through Parameter Store's reference to it.
   */
  private controlSealSecret(envName: string): secretsmanager.Secret {
    const stack = Stack.of(this);
    const secret = new secretsmanager.Secret(this, 'ControlSeal', {
      secretName: controlSealSecretName(envName),
      description: `Cairn ${envName}: seals the run lease, run records and GC work lists in the plans' repositories (hosts may not read it)`,
      generateSecretString: { passwordLength: 64, excludePunctuation: true },
      removalPolicy: RemovalPolicy.DESTROY,
    });
    const reference = `arn:${stack.partition}:ssm:${stack.region}:${stack.account}:parameter${controlSealParameterName(envName)}`;
    for (const fn of [this.planBackup, this.finalizeBackup, this.recordResult, this.applyRetention, this.gcSweep]) {
      fn.addEnvironment('CONTROL_SEAL_PARAMETER', controlSealParameterName(envName));
      secret.grantRead(fn);
      fn.addToRolePolicy(new iam.PolicyStatement({ sid: 'ControlSealReference', actions: ['ssm:GetParameter'], resources: [reference] }));
    }
    acknowledge(
      secret,
      'AwsSolutions-SMG4',
      'Rotating the seal key would only make the live run lease read as forged (it is then taken over); the key protects records that live for one run. Rotate by deleting and redeploying the secret between runs.',
    );
    return secret;
  }

  /**
   * create-repository writes a new repository's config, key files and first history record, each
   * create-if-absent (If-None-Match: *), so it can make a repository but never overwrite one; for a
   * KMS plan it wraps the master key (kms:Encrypt, with Cairn's encryption context),
   * which no host may do (docs/keys.md).
   */
  private grantRepositoryCreation(
    props: CairnFunctionsProps,
    s3Plans: ReadonlyArray<{ bucket: string; prefix: string }>,
    findings: string[],
  ): void {
    const stack = Stack.of(this);
    const fn = this.createRepository;
    if (s3Plans.length > 0) {
      const keys = (l: { bucket: string; prefix: string }): string[] =>
        // Repository.init writes key-check too (found by the e2e recording of SDK calls: AccessDenied in AWS without it).
        [CONFIG_KEY, KEY_CHECK_KEY, `${KEYS_PREFIX}*`, `${HISTORY_PREFIX}*`].map(
          (k) => `arn:${stack.partition}:s3:::${l.bucket}/${l.prefix}${k}`,
        );
      fn.addToRolePolicy(
        new iam.PolicyStatement({
          sid: 'CreateRepositoryObjects',
          actions: ['s3:PutObject'],
          resources: s3Plans.flatMap(keys),
          conditions: { StringEquals: { 's3:if-none-match': '*' } },
        }),
      );
      findings.push(
        ...s3Plans.flatMap((l) =>
          [`${KEYS_PREFIX}*`, `${HISTORY_PREFIX}*`].map((k) => `Resource::${arnFinding(stack, `s3:::${l.bucket}/${l.prefix}${k}`)}`),
        ),
      );
      if (s3Plans.some((l) => l.bucket === props.bucketName)) {
        fn.addToRolePolicy(
          new iam.PolicyStatement({
            sid: 'CreateRepositoryDataKey',
            actions: ['kms:GenerateDataKey'],
            resources: [props.bucketKey.keyArn],
            conditions: { StringEquals: { 'kms:ViaService': `s3.${stack.region}.amazonaws.com` } },
          }),
        );
      }
    }
    // Two wrappings per KMS plan: one naming the plan (hosts decrypt only that one) and one for operators.
    const kmsKeys = [...new Set(props.plans.flatMap((p) => ('kmsKeyArn' in p.keySource ? [p.keySource.kmsKeyArn] : [])))];
    if (kmsKeys.length > 0)
      fn.addToRolePolicy(
        new iam.PolicyStatement({
          sid: 'WrapMasterKeys',
          actions: ['kms:Encrypt'],
          resources: kmsKeys,
          conditions: { StringLike: { [`kms:EncryptionContext:${REPOSITORY_CONTEXT_KEY}`]: '?*' } },
        }),
      );
  }

  /**
   * archive-lag reads the freshness of each PITR plan's log archive from the
   * names of its meta objects: the plan's parameter, and s3:ListBucket limited
   * to the plan's logs/ prefix. No object is read, so no GetObject and no key.
   */
  private archiveLagFunction(
    props: CairnFunctionsProps,
    make: (fid: string, entry: string, description: string) => CairnFunction,
  ): CairnFunction | undefined {
    const plans = props.plans.filter((p) => pitrOf(p) !== undefined);
    if (plans.length === 0) return undefined;
    const stack = Stack.of(this);
    const fn = make('ArchiveLag', 'archive-lag', 'Cairn: publishes the age of the newest archived log event per PITR plan');
    fn.addToRolePolicy(
      new iam.PolicyStatement({
        sid: 'ReadPitrPlans',
        actions: ['ssm:GetParameter'],
        resources: plans.map(
          (p) => `arn:${stack.partition}:ssm:${stack.region}:${stack.account}:parameter${planParameterName(props.envName, p.id)}`,
        ),
      }),
    );
    // A PITR plan at an S3-compatible endpoint (MariaDB): its log archive is listed with the control plane's endpoint key.
    const endpointKeys = plans.flatMap((p) => repositoryEndpoint(p.repository)?.controlCredentialsParameter ?? []);
    if (endpointKeys.length > 0) {
      const arns = endpointKeys.map((name) => `arn:${stack.partition}:ssm:${stack.region}:${stack.account}:parameter${name}`);
      fn.addToRolePolicy(new iam.PolicyStatement({ sid: 'ReadEndpointKeys', actions: ['ssm:GetParameter'], resources: arns }));
      fn.addToRolePolicy(
        new iam.PolicyStatement({
          sid: 'DecryptEndpointKeys',
          actions: ['kms:Decrypt'],
          resources: [props.parameterKey.keyArn],
          conditions: {
            StringEquals: { 'kms:ViaService': `ssm.${stack.region}.amazonaws.com`, 'kms:EncryptionContext:PARAMETER_ARN': arns },
          },
        }),
      );
    }
    const byBucket = new Map<string, string[]>();
    for (const plan of plans) {
      const location = awsS3Location(plan);
      if (location === undefined) continue;
      byBucket.set(location.bucket, [...(byBucket.get(location.bucket) ?? []), `${location.prefix}${LOGS_PREFIX}*`]);
    }
    for (const [bucket, prefixes] of byBucket) {
      fn.addToRolePolicy(
        new iam.PolicyStatement({
          actions: ['s3:ListBucket'],
          resources: [`arn:${stack.partition}:s3:::${bucket}`],
          conditions: { StringLike: { 's3:prefix': prefixes } },
        }),
      );
    }
    acknowledgeFindings(
      fn,
      'AwsSolutions-IAM5',
      ['Resource::*'],
      'X-Ray writes (xray:PutTraceSegments, PutTelemetryRecords) support no resource scoping.',
    );
    acknowledgeFunctionDefaults(fn);
    return fn;
  }
}

/** What every Cairn function's defaults (the factory's runtime and logging role) need acknowledged. */
function acknowledgeFunctionDefaults(fn: CairnFunction): void {
  acknowledgeFindings(
    fn,
    'AwsSolutions-IAM4',
    ['Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole'],
    "AWSLambdaBasicExecutionRole grants only CloudWatch Logs writes, to the function's own log group in practice.",
  );
  acknowledge(
    fn,
    'AwsSolutions-L1',
    'The functions run on nodejs22.x on purpose: the agent and the repository code target Node 22 (package.json engines), and one runtime is tested.',
  );
}
