/**
 * The AWS calls each Cairn component makes, per operation, as IAM sees them: the action, the
 * resource ARN and the condition keys the request carries (docs/cdk.md, "What each principal may
 * call"). Pure data: the code that makes the calls is agent/storage/s3.ts and s3-multipart.ts,
 * agent/keys/kms.ts, agent/orchestration/*, and the handlers in functions/ (through the same
 * storage and plan source). test/cdk/iam-evaluation.test.ts evaluates every call here, as the
 * principal that makes it, against the synthesized policies; a call added to the code belongs here.
 *
 * Object keys are representative names of the repository layout (layout.ts) under the plan's prefix.
 */
import {
  COLLECTIONS_PREFIX,
  CONFIG_KEY,
  HISTORY_PREFIX,
  INDEX_PREFIX,
  KEYS_PREFIX,
  LEASE_KEY,
  LOCKS_PREFIX,
  LOGS_PREFIX,
  PACKS_PREFIX,
  PINS_PREFIX,
  RUNS_PREFIX,
  SNAPSHOTS_PREFIX,
} from './layout.ts';

/** The encryption-context key the agent sends with every KMS call on a repository key (agent/keys/kms.ts). */
export const REPOSITORY_CONTEXT_KEY = 'cairn:repository';

export type AgentOperation = 'backup' | 'restore' | 'verify' | 'drill' | 'archive';
export type FunctionName =
  'planBackup' | 'finalizeBackup' | 'applyRetention' | 'gcSweep' | 'planRestore' | 'planVerify' | 'recordResult' | 'archiveLag';

export interface AwsCall {
  /** The SDK command (S3's HeadObject is authorized as s3:GetObject, for example). */
  api: string;
  action: string;
  resource: string;
  context: Record<string, string | string[]>;
  /** Set when the code expects and handles a refusal of this call (why a 403 is harmless). */
  refusalHandled?: string;
}

/** Where one plan's calls go: concrete names for one account and region. */
export interface CallScope {
  partition: string;
  region: string;
  account: string;
  bucket: string;
  /** The plan's key prefix in the bucket ('' or ending in /). */
  prefix: string;
  /** The bucket's SSE-KMS key (S3 calls it on the caller's behalf); absent for a bucket outside the stack, whose encryption it does not know. */
  bucketKeyArn?: string;
  planParameterName: string;
  /** SecureString parameters the plan names (passphrase, database password). */
  secretParameterNames: readonly string[];
  /** The key Cairn's SecureStrings are encrypted with. */
  parameterKeyArn: string;
  /** keySource.kmsKeyArn, when the plan wraps its master key with KMS. */
  repositoryKeyArn?: string;
  repositoryId: string;
  /** A state machine execution's task token (SendTask* authorize no resource: "*"). */
  stateMachineArn: string;
}

/** Builds the calls of one scope; each S3 object call is followed by the KMS calls SSE-KMS makes for it. */
export class CallBuilder {
  readonly scope: CallScope;
  constructor(scope: CallScope) {
    this.scope = scope;
  }

  get bucketArn(): string {
    return `arn:${this.scope.partition}:s3:::${this.scope.bucket}`;
  }

  objectArn(key: string): string {
    return `${this.bucketArn}/${this.scope.prefix}${key}`;
  }

  parameterArn(name: string): string {
    return `arn:${this.scope.partition}:ssm:${this.scope.region}:${this.scope.account}:parameter${name}`;
  }

  /**
   * What S3 asks KMS for on the caller's behalf. The bucket has S3 Bucket Keys on, so the
   * encryption context is the bucket's ARN, not the object's.
   */
  private bucketKey(action: 'kms:Decrypt' | 'kms:GenerateDataKey'): AwsCall[] {
    if (this.scope.bucketKeyArn === undefined) return [];
    return [
      {
        api: `(S3 SSE-KMS) ${action.slice(4)}`,
        action,
        resource: this.scope.bucketKeyArn,
        context: { 'kms:ViaService': `s3.${this.scope.region}.amazonaws.com`, 'kms:EncryptionContext:aws:s3:arn': this.bucketArn },
      },
    ];
  }

  read(key: string): AwsCall[] {
    return [{ api: 'GetObject', action: 's3:GetObject', resource: this.objectArn(key), context: {} }, ...this.bucketKey('kms:Decrypt')];
  }

  /** HeadObject needs s3:GetObject and makes no KMS call. */
  stat(key: string): AwsCall[] {
    return [{ api: 'HeadObject', action: 's3:GetObject', resource: this.objectArn(key), context: {} }];
  }

  /** s3.ts checkBucket: after a 404 on HeadObject, tells a missing bucket from a missing key (needs an unconditioned s3:ListBucket). */
  headBucket(): AwsCall[] {
    return [
      {
        api: 'HeadBucket',
        action: 's3:ListBucket',
        resource: this.bucketArn,
        context: {},
        refusalHandled: 'checkBucket treats any answer but 404 as "the bucket exists" and keeps the 404 of the object',
      },
    ];
  }

  list(prefix: string): AwsCall[] {
    return [
      {
        api: 'ListObjectsV2',
        action: 's3:ListBucket',
        resource: this.bucketArn,
        context: { 's3:prefix': `${this.scope.prefix}${prefix}` },
      },
    ];
  }

  /** PutObject with If-None-Match: * (create-if-absent, DeletableStorage.put with ifAbsent). */
  create(key: string): AwsCall[] {
    return [
      {
        api: 'PutObject',
        action: 's3:PutObject',
        resource: this.objectArn(key),
        context: { 's3:if-none-match': '*', 's3:ObjectCreationOperation': 'true' },
      },
      ...this.bucketKey('kms:GenerateDataKey'),
    ];
  }

  /** s3-multipart.ts: CreateMultipartUpload, UploadPart, CompleteMultipartUpload with If-None-Match: *, Abort on failure. */
  createMultipart(key: string): AwsCall[] {
    const object = this.objectArn(key);
    const part = { 's3:ObjectCreationOperation': 'false' };
    return [
      { api: 'CreateMultipartUpload', action: 's3:PutObject', resource: object, context: part },
      ...this.bucketKey('kms:GenerateDataKey'),
      { api: 'UploadPart', action: 's3:PutObject', resource: object, context: part },
      ...this.bucketKey('kms:Decrypt'),
      {
        api: 'CompleteMultipartUpload',
        action: 's3:PutObject',
        resource: object,
        context: { 's3:if-none-match': '*', 's3:ObjectCreationOperation': 'true' },
      },
      { api: 'AbortMultipartUpload', action: 's3:AbortMultipartUpload', resource: object, context: {} },
    ];
  }

  delete(key: string): AwsCall[] {
    return [{ api: 'DeleteObject', action: 's3:DeleteObject', resource: this.objectArn(key), context: {} }];
  }

  getParameter(name: string): AwsCall[] {
    return [{ api: 'GetParameter', action: 'ssm:GetParameter', resource: this.parameterArn(name), context: {} }];
  }

  /** GetParameter WithDecryption: SSM asks KMS to decrypt with the parameter's ARN as encryption context. */
  getSecret(name: string): AwsCall[] {
    return [
      ...this.getParameter(name),
      {
        api: '(SSM SecureString) Decrypt',
        action: 'kms:Decrypt',
        resource: this.scope.parameterKeyArn,
        context: {
          'kms:ViaService': `ssm.${this.scope.region}.amazonaws.com`,
          'kms:EncryptionContext:PARAMETER_ARN': this.parameterArn(name),
        },
      },
    ];
  }

  /** The plan's parameter and every secret it names (PlanSource.plan, openRepository, engine passwords). */
  planAndSecrets(): AwsCall[] {
    return [...this.getParameter(this.scope.planParameterName), ...this.scope.secretParameterNames.flatMap((n) => this.getSecret(n))];
  }

  /** agent/keys/kms.ts: unwrapping a KMS key file. */
  unwrapMasterKey(): AwsCall[] {
    const key = this.scope.repositoryKeyArn;
    if (key === undefined) return [];
    return [
      {
        api: 'Decrypt',
        action: 'kms:Decrypt',
        resource: key,
        context: { [`kms:EncryptionContext:${REPOSITORY_CONTEXT_KEY}`]: this.scope.repositoryId },
      },
    ];
  }

  /** Opening the repository: config, key files, the stat that tells an empty prefix. */
  openRepository(): AwsCall[] {
    return [
      ...this.stat(CONFIG_KEY),
      ...this.headBucket(),
      ...this.read(CONFIG_KEY),
      ...this.list(KEYS_PREFIX),
      ...this.read(`${KEYS_PREFIX}k1`),
      ...this.unwrapMasterKey(),
      ...this.list(INDEX_PREFIX),
      ...this.read(`${INDEX_PREFIX}i1`),
    ];
  }

  /** task-reporter.ts and the document script's send-task-failure. */
  reportTask(): AwsCall[] {
    return ['SendTaskHeartbeat', 'SendTaskSuccess', 'SendTaskFailure'].map((api) => ({
      api,
      action: `states:${api}`,
      resource: '*',
      context: {},
    }));
  }
}

/** The agent on a plan's host (instance role: the plan's host policy plus AmazonSSMManagedInstanceCore). */
export function agentCalls(scope: CallScope): Record<AgentOperation, AwsCall[]> {
  const b = new CallBuilder(scope);
  const common = [...b.planAndSecrets(), ...b.openRepository(), ...b.list(LOCKS_PREFIX), ...b.read(`${LOCKS_PREFIX}l1`)];
  const takeLock = b.create(`${LOCKS_PREFIX}host-1`);
  const readSnapshot = [...b.list(SNAPSHOTS_PREFIX), ...b.read(`${SNAPSHOTS_PREFIX}s1`), ...b.read(`${PACKS_PREFIX}ab/ab01`)];
  return {
    backup: [
      ...common,
      ...takeLock,
      ...b.list(SNAPSHOTS_PREFIX),
      ...b.read(`${SNAPSHOTS_PREFIX}s0`),
      ...b.create(`${PACKS_PREFIX}ab/ab01`),
      ...b.createMultipart(`${PACKS_PREFIX}cd/cd02`),
      ...b.create(`${INDEX_PREFIX}i2`),
      ...b.create(`${SNAPSHOTS_PREFIX}s1`),
      ...b.create(`${HISTORY_PREFIX}h1`),
      ...b.reportTask(),
    ],
    restore: [...common, ...takeLock, ...readSnapshot, ...b.list(LOGS_PREFIX), ...b.create(`${HISTORY_PREFIX}h2`), ...b.reportTask()],
    verify: [...common, ...takeLock, ...readSnapshot, ...b.list(PINS_PREFIX), ...b.create(`${HISTORY_PREFIX}h3`), ...b.reportTask()],
    drill: [...common, ...takeLock, ...readSnapshot, ...b.create(`${HISTORY_PREFIX}h4`), ...b.reportTask()],
    archive: [
      ...common,
      ...b.list(`${LOGS_PREFIX}mariadb/`),
      ...b.stat(`${LOGS_PREFIX}mariadb/files/binlog.000001`),
      ...b.create(`${LOGS_PREFIX}mariadb/files/binlog.000001`),
      ...b.createMultipart(`${LOGS_PREFIX}mariadb/files/binlog.000002`),
      ...b.create(`${LOGS_PREFIX}mariadb/meta/t1`),
    ],
  };
}

/** Each control-plane function (its own role), for one plan. */
export function functionCalls(scope: CallScope): Record<FunctionName, AwsCall[]> {
  const b = new CallBuilder(scope);
  const open = [...b.planAndSecrets(), ...b.openRepository()];
  const describeInstances: AwsCall = {
    api: 'DescribeInstanceInformation',
    action: 'ssm:DescribeInstanceInformation',
    resource: '*',
    context: {},
  };
  const lease = [...b.read(LEASE_KEY), ...b.create(LEASE_KEY), ...b.delete(LEASE_KEY)];
  return {
    planBackup: [...b.getParameter(scope.planParameterName), describeInstances, ...b.create(`${RUNS_PREFIX}r1`), ...lease],
    finalizeBackup: [...open, ...b.read(`${SNAPSHOTS_PREFIX}s1`), ...b.create(`${HISTORY_PREFIX}f1`), ...lease],
    recordResult: [...open, ...b.create(`${HISTORY_PREFIX}r1`), ...lease],
    applyRetention: [
      ...open,
      ...b.create(`${LOCKS_PREFIX}retention-1`),
      ...b.list(SNAPSHOTS_PREFIX),
      ...b.read(`${SNAPSHOTS_PREFIX}s1`),
      ...b.list(PINS_PREFIX),
      ...b.delete(`${SNAPSHOTS_PREFIX}s0`),
      ...b.create(`${INDEX_PREFIX}i3`),
      ...b.delete(`${INDEX_PREFIX}i1`),
      ...b.delete(`${LOGS_PREFIX}mariadb/files/binlog.000001`),
      ...b.create(`${COLLECTIONS_PREFIX}g1`),
      ...b.create(`${HISTORY_PREFIX}a1`),
    ],
    gcSweep: [
      ...b.getParameter(scope.planParameterName),
      ...b.read(`${COLLECTIONS_PREFIX}g1`),
      ...b.list(PACKS_PREFIX),
      ...b.delete(`${PACKS_PREFIX}ab/ab00`),
    ],
    planRestore: [...open, describeInstances, ...b.list(SNAPSHOTS_PREFIX), ...b.read(`${SNAPSHOTS_PREFIX}s1`), ...b.list(LOGS_PREFIX)],
    planVerify: [...b.getParameter(scope.planParameterName), describeInstances],
    archiveLag: [...b.getParameter(scope.planParameterName), ...b.list(`${LOGS_PREFIX}mariadb/meta/`)],
  };
}
