/**
 * One unit: the whole inventory is one table read at once by the IAM evaluation and the e2e
 * recording, so a reader sees every principal's calls side by side.
 *
 * The AWS calls each Cairn component makes, per operation, as IAM sees them: the action, the
 * resource ARN and the condition keys the request carries (docs/cdk.md, "What each principal may
 * call"). Pure data: the code that makes the calls is agent/storage/s3.ts and s3-multipart.ts,
 * agent/keys/kms.ts, agent/orchestration/*, and the handlers in functions/ (through the same
 * storage and plan source). test/cdk/iam-evaluation.test.ts evaluates every call here, as the
 * principal that makes it, against the synthesized policies; a call added to the code belongs here.
 *
 * Object keys are names of the repository layout (layout.ts) under the plan's prefix, written as
 * templates: `{name}` stands for one path segment's text (`snapshots/{id}`, `packs/{xx}/{id}`). The
 * IAM evaluation sees each with the placeholder's name as its text (`snapshots/id`); the e2e
 * runs' recording of the real SDK commands (test/e2e/sdk-calls.ts, through the test hook
 * aws-call-record.ts) matches every command sent against these templates, so a call the code
 * makes and this file lacks fails a test.
 */
import type { EndpointSide } from './plan-repository.ts';
import {
  COLLECTIONS_PREFIX,
  CONFIG_KEY,
  DAMAGE_PREFIX,
  GC_PREFIX,
  HISTORY_PREFIX,
  INDEX_PREFIX,
  KEY_CHECK_KEY,
  KEYS_PREFIX,
  LEASE_KEY,
  LOCKS_PREFIX,
  LOG_BATCHES_DIR,
  LOG_FILES_DIR,
  LOGS_PREFIX,
  PACKS_PREFIX,
  PINS_PREFIX,
  RUNS_PREFIX,
  SNAPSHOTS_PREFIX,
} from './layout.ts';

/** Key templates of the repository layout (layout.ts): `{…}` is one path segment. */
export const KEY_TEMPLATES = {
  snapshot: `${SNAPSHOTS_PREFIX}{id}`,
  pack: `${PACKS_PREFIX}{xx}/{id}`,
  packDir: `${PACKS_PREFIX}{xx}/`,
  index: `${INDEX_PREFIX}{id}`,
  keyFile: `${KEYS_PREFIX}{id}`,
  lock: `${LOCKS_PREFIX}{holder-seq}`,
  history: `${HISTORY_PREFIX}{stamp-run-seq}`,
  pin: `${PINS_PREFIX}{id}`,
  damage: `${DAMAGE_PREFIX}{id}`,
  /** A GC generation's mark and its `.swept` settlement record. */
  generation: `${GC_PREFIX}{generation}`,
  run: `${RUNS_PREFIX}{scheduled-time}`,
  /** An `each` plan's host: its own lease and run records (functions/host-records.ts). */
  hostLease: `${LEASE_KEY.slice(0, LEASE_KEY.lastIndexOf('/') + 1)}hosts/{instance}/lease`,
  hostRun: `${LEASE_KEY.slice(0, LEASE_KEY.lastIndexOf('/') + 1)}hosts/{instance}/runs/{scheduled-time}`,
  hostsDir: `${LEASE_KEY.slice(0, LEASE_KEY.lastIndexOf('/') + 1)}hosts/`,
  hostSnapshot: `${LEASE_KEY.slice(0, LEASE_KEY.lastIndexOf('/') + 1)}hosts/{instance}/snapshots/{id}`,
  collection: `${COLLECTIONS_PREFIX}{generation}`,
  stream: `${LOGS_PREFIX}{stream}/`,
  logFile: `${LOGS_PREFIX}{stream}/${LOG_FILES_DIR}{name}`,
  logMeta: `${LOGS_PREFIX}{stream}/${LOG_BATCHES_DIR}{name}`,
  logMetaDir: `${LOGS_PREFIX}{stream}/${LOG_BATCHES_DIR}`,
} as const;
const T = KEY_TEMPLATES;

/** The encryption-context key the agent sends with every KMS call on a repository key (agent/keys/kms.ts). */
export const REPOSITORY_CONTEXT_KEY = 'cairn:repository';

export type AgentOperation = 'backup' | 'restore' | 'verify' | 'drill' | 'archive';
export type FunctionName =
  | 'planBackup'
  | 'finalizeBackup'
  | 'applyRetention'
  | 'gcSweep'
  | 'planRestore'
  | 'planVerify'
  | 'recordResult'
  | 'archiveLag'
  | 'freshness'
  | 'extendLocks';

export interface AwsCall {
  /** The SDK command (S3's HeadObject is authorized as s3:GetObject, for example). */
  api: string;
  action: string;
  resource: string;
  context: Record<string, string | string[]>;
  /** Set when the code expects and handles a refusal of this call (why a 403 is harmless). */
  refusalHandled?: string;
  /**
   * The resource (and a listing's prefix) as templates, where the call names objects by template:
   * what a recorded SDK command is matched against. Absent: `resource` and `s3:prefix` are exact.
   */
  match?: { resource: string; prefix?: string };
  /** GetParameter WithDecryption (a SecureString): SSM then calls KMS, the entry after it. */
  decrypts?: true;
}

/** `{name}` placeholders in a template become their names: the text the IAM evaluation sees. */
export function sampleOf(template: string): string {
  return template.replace(/\{([^}]+)\}/g, '$1');
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
  /** SecureString parameters the hosts read for the plan (passphrase, database password, the hosts' endpoint key). */
  secretParameterNames: readonly string[];
  /** Those the functions read (the control plane's endpoint key in place of the hosts'); absent: the same as the hosts'. */
  controlSecretParameterNames?: readonly string[];
  /** The key Cairn's SecureStrings are encrypted with. */
  parameterKeyArn: string;
  /** keySource.kmsKeyArn, when the plan wraps its master key with KMS. */
  repositoryKeyArn?: string;
  repositoryId: string;
  /** A state machine execution's task token (SendTask* authorize no resource: "*"). */
  stateMachineArn: string;
  /**
   * Set when the repository is a bucket at an S3-compatible endpoint (plan-repository.ts): the
   * SecureString parameter holding its access key. Its S3 calls go there, signed with that key,
   * and are no AWS calls (none is listed); reading the key from Parameter Store is.
   */
  endpointKeyParameter?: string;
  /** With endpointKeyParameter: the parameter holding the control plane's key (the functions sign with it; it may delete). */
  controlEndpointKeyParameter?: string;
  /**
   * The control plane's record seal (functions/runtime.ts controlSeal): its Parameter Store reference
   * and the Secrets Manager secret it resolves to. Absent: the seal reads are not listed.
   */
  seal?: { parameterName: string; secretArn: string };
}

/** Builds the calls of one scope; each S3 object call is followed by the KMS calls SSE-KMS makes for it. */
export class CallBuilder {
  readonly scope: CallScope;
  /** Whose calls: a host's (the agent) or the control plane's (a function); they read different endpoint keys. */
  readonly side: EndpointSide;
  constructor(scope: CallScope, side: EndpointSide = 'host') {
    this.scope = scope;
    this.side = side;
  }

  get bucketArn(): string {
    return `arn:${this.scope.partition}:s3:::${this.scope.bucket}`;
  }

  /** The ARN IAM sees for a key or key template. */
  objectArn(key: string): string {
    return `${this.bucketArn}/${this.scope.prefix}${sampleOf(key)}`;
  }

  /** An S3 object call on a key template. */
  private object(api: string, action: string, key: string, context: AwsCall['context']): AwsCall {
    const call: AwsCall = { api, action, resource: this.objectArn(key), context };
    if (key.includes('{')) call.match = { resource: `${this.bucketArn}/${this.scope.prefix}${key}` };
    return call;
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
    if (this.scope.endpointKeyParameter !== undefined) return [];
    return [this.object('GetObject', 's3:GetObject', key, {}), ...this.bucketKey('kms:Decrypt')];
  }

  /** HeadObject needs s3:GetObject and makes no KMS call. */
  stat(key: string): AwsCall[] {
    if (this.scope.endpointKeyParameter !== undefined) return [];
    return [this.object('HeadObject', 's3:GetObject', key, {})];
  }

  /** s3.ts checkBucket: after a 404 on HeadObject, tells a missing bucket from a missing key (needs an unconditioned s3:ListBucket). */
  headBucket(): AwsCall[] {
    if (this.scope.endpointKeyParameter !== undefined) return [];
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
    if (this.scope.endpointKeyParameter !== undefined) return [];
    const call: AwsCall = {
      api: 'ListObjectsV2',
      action: 's3:ListBucket',
      resource: this.bucketArn,
      context: { 's3:prefix': `${this.scope.prefix}${sampleOf(prefix)}` },
    };
    if (prefix.includes('{')) call.match = { resource: this.bucketArn, prefix: `${this.scope.prefix}${prefix}` };
    return [call];
  }

  /** PutObject with If-None-Match: * (create-if-absent, DeletableStorage.put with ifAbsent). */
  create(key: string): AwsCall[] {
    if (this.scope.endpointKeyParameter !== undefined) return [];
    return [
      this.object('PutObject', 's3:PutObject', key, { 's3:if-none-match': '*', 's3:ObjectCreationOperation': 'true' }),
      ...this.bucketKey('kms:GenerateDataKey'),
    ];
  }

  /**
   * PutObject without a condition: replaces what is there. Only the control plane does it, on its
   * own records (a forged run record is replaced: run-lease.ts); hosts are refused it.
   */
  overwrite(key: string): AwsCall[] {
    if (this.scope.endpointKeyParameter !== undefined) return [];
    return [
      this.object('PutObject', 's3:PutObject', key, { 's3:ObjectCreationOperation': 'true' }),
      ...this.bucketKey('kms:GenerateDataKey'),
    ];
  }

  /** s3-multipart.ts: CreateMultipartUpload, UploadPart, CompleteMultipartUpload with If-None-Match: *, Abort on failure. */
  createMultipart(key: string): AwsCall[] {
    if (this.scope.endpointKeyParameter !== undefined) return [];
    const part = { 's3:ObjectCreationOperation': 'false' };
    return [
      this.object('CreateMultipartUpload', 's3:PutObject', key, part),
      ...this.bucketKey('kms:GenerateDataKey'),
      this.object('UploadPart', 's3:PutObject', key, part),
      ...this.bucketKey('kms:Decrypt'),
      this.object('CompleteMultipartUpload', 's3:PutObject', key, { 's3:if-none-match': '*', 's3:ObjectCreationOperation': 'true' }),
      this.object('AbortMultipartUpload', 's3:AbortMultipartUpload', key, {}),
    ];
  }

  /**
   * Object Lock retention of one object (functions/object-retention.ts): read, then extended where it
   * ends earlier than the lock period (never shortened, so no s3:BypassGovernanceRetention).
   */
  keepLocked(key: string): AwsCall[] {
    if (this.scope.endpointKeyParameter !== undefined) return [];
    return [
      this.object('GetObjectRetention', 's3:GetObjectRetention', key, {}),
      this.object('PutObjectRetention', 's3:PutObjectRetention', key, {}),
    ];
  }

  delete(key: string): AwsCall[] {
    if (this.scope.endpointKeyParameter !== undefined) return [];
    return [this.object('DeleteObject', 's3:DeleteObject', key, {})];
  }

  getParameter(name: string): AwsCall[] {
    return [{ api: 'GetParameter', action: 'ssm:GetParameter', resource: this.parameterArn(name), context: {} }];
  }

  /** GetParameter WithDecryption: SSM asks KMS to decrypt with the parameter's ARN as encryption context. */
  getSecret(name: string): AwsCall[] {
    return [
      { ...this.getParameter(name)[0]!, decrypts: true },
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
    const secrets =
      this.side === 'control'
        ? (this.scope.controlSecretParameterNames ?? this.scope.secretParameterNames)
        : this.scope.secretParameterNames;
    return [...this.getParameter(this.scope.planParameterName), ...secrets.flatMap((n) => this.getSecret(n))];
  }

  /** The endpoint's access key, read before any storage call by a caller that opens no repository (plan-backup, archive-lag). */
  endpointKey(): AwsCall[] {
    const name = this.side === 'control' ? this.scope.controlEndpointKeyParameter : this.scope.endpointKeyParameter;
    return name === undefined ? [] : this.getSecret(name);
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

  /** Opening the repository: config, key check, key files, the stat that tells an empty prefix, the index. */
  openRepository(): AwsCall[] {
    return [
      ...this.stat(CONFIG_KEY),
      ...this.headBucket(),
      ...this.read(CONFIG_KEY),
      ...this.stat(KEY_CHECK_KEY),
      ...this.read(KEY_CHECK_KEY),
      ...this.list(KEYS_PREFIX),
      ...this.read(T.keyFile),
      ...this.unwrapMasterKey(),
      ...this.list(INDEX_PREFIX),
      ...this.read(T.index),
    ];
  }

  /** Reading the locks (locks.ts): a lock's own clock object is stat'ed, every lock read. */
  readLocks(): AwsCall[] {
    return [...this.list(LOCKS_PREFIX), ...this.stat(T.lock), ...this.read(T.lock)];
  }

  /** Taking and releasing a lock: both are new objects (create-if-absent), and the holder checks its own. */
  takeLock(): AwsCall[] {
    return [...this.readLocks(), ...this.create(T.lock)];
  }

  /** The damage markers and GC generations every reader of snapshots consults (damage.ts, gc-generation.ts). */
  readState(): AwsCall[] {
    return [...this.list(DAMAGE_PREFIX), ...this.read(T.damage), ...this.list(GC_PREFIX), ...this.read(T.generation)];
  }

  /** Every manifest, one by one. */
  readSnapshots(): AwsCall[] {
    return [...this.list(SNAPSHOTS_PREFIX), ...this.stat(T.snapshot), ...this.read(T.snapshot)];
  }

  /** The restore throughputs (pitr-planning.ts measuredThroughputs): the history. */
  readHistory(): AwsCall[] {
    return [...this.list(HISTORY_PREFIX), ...this.read(T.history)];
  }

  /** A log archive (log-archive.ts): its streams, their meta batches and files. */
  readLogs(): AwsCall[] {
    return [
      ...this.list(LOGS_PREFIX),
      ...this.list(T.stream),
      ...this.list(T.logMetaDir),
      ...this.read(T.logMeta),
      ...this.stat(T.logFile),
      ...this.read(T.logFile),
    ];
  }

  /**
   * The control plane's record seal (functions/runtime.ts controlSeal): GetParameter WithDecryption
   * of Parameter Store's reference to a Secrets Manager secret, which SSM resolves with the
   * caller's secretsmanager:GetSecretValue.
   */
  readSeal(): AwsCall[] {
    const seal = this.scope.seal;
    if (seal === undefined) return [];
    return [
      { ...this.getParameter(seal.parameterName)[0]!, api: 'GetParameter', decrypts: true },
      { api: '(SSM reference) GetSecretValue', action: 'secretsmanager:GetSecretValue', resource: seal.secretArn, context: {} },
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
  const common = [...b.planAndSecrets(), ...b.openRepository(), ...b.takeLock(), ...b.readState()];
  const readData = [...b.readSnapshots(), ...b.read(T.pack)];
  // verify and drill mark a snapshot they find damaged (damage.ts writeDamageMarkers).
  const markDamage = b.create(T.damage);
  return {
    backup: [
      ...common,
      ...readData,
      ...b.create(T.pack),
      ...b.createMultipart(T.pack),
      ...b.create(T.index),
      ...b.create(T.snapshot),
      ...b.create(T.history),
      ...b.reportTask(),
    ],
    restore: [...common, ...readData, ...b.readLogs(), ...b.create(T.history), ...b.reportTask()],
    verify: [...common, ...readData, ...b.list(PINS_PREFIX), ...markDamage, ...b.create(T.history), ...b.reportTask()],
    drill: [...common, ...readData, ...b.readLogs(), ...markDamage, ...b.create(T.history), ...b.reportTask()],
    // binlog-push and the WAL daemon (docs/pitr.md): files and meta batches, new objects only.
    archive: [
      ...b.planAndSecrets(),
      ...b.openRepository(),
      ...b.readLogs(),
      ...b.create(T.logFile),
      ...b.createMultipart(T.logFile),
      ...b.create(T.logMeta),
    ],
  };
}

/** Each control-plane function (its own role), for one plan. */
export function functionCalls(scope: CallScope): Record<FunctionName, AwsCall[]> {
  const b = new CallBuilder(scope, 'control');
  const open = [...b.planAndSecrets(), ...b.openRepository()];
  const describeInstances: AwsCall = {
    api: 'DescribeInstanceInformation',
    action: 'ssm:DescribeInstanceInformation',
    resource: '*',
    context: {},
  };
  // run-lease.ts: create-if-absent; a forged lease is deleted and created again, a forged run record replaced.
  const lease = [...b.read(LEASE_KEY), ...b.create(LEASE_KEY), ...b.delete(LEASE_KEY)];
  const runRecords = [...b.create(T.run), ...b.read(T.run), ...b.overwrite(T.run)];
  // An `each` plan: the same per host (functions/host-records.ts); record-result lists them to give back its execution's.
  const hostLease = [...b.read(T.hostLease), ...b.create(T.hostLease), ...b.delete(T.hostLease)];
  const hostRuns = [...b.create(T.hostRun), ...b.read(T.hostRun), ...b.overwrite(T.hostRun)];
  return {
    planBackup: [
      ...b.getParameter(scope.planParameterName),
      describeInstances,
      ...b.readSeal(),
      ...b.endpointKey(),
      ...runRecords,
      ...lease,
      ...hostRuns,
      ...hostLease,
    ],
    // An `each` plan: the record that the run on an instance made the snapshot (functions/snapshot-attestations.ts).
    finalizeBackup: [
      ...open,
      ...b.readState(),
      ...b.readSnapshots(),
      ...b.create(T.history),
      ...b.readSeal(),
      ...lease,
      ...hostLease,
      ...b.create(T.hostSnapshot),
    ],
    recordResult: [...open, ...b.create(T.history), ...b.readSeal(), ...lease, ...b.list(T.hostsDir), ...hostLease],
    applyRetention: [
      ...open,
      ...b.takeLock(),
      // Stale and released locks are removed by the exclusive holder (locks.ts).
      ...b.delete(T.lock),
      ...b.readState(),
      ...b.readSnapshots(),
      ...b.list(PINS_PREFIX),
      ...b.read(T.pin),
      ...b.delete(T.snapshot),
      ...b.list(PACKS_PREFIX),
      ...b.read(T.pack),
      // Two-phase GC (gc-collect.ts): marks and settlements in gc/, a new index, the old index files deleted.
      ...b.create(T.generation),
      ...b.delete(T.generation),
      ...b.create(T.index),
      ...b.delete(T.index),
      ...b.readLogs(),
      ...b.delete(T.logFile),
      ...b.delete(T.logMeta),
      // The GC work list, sealed with the control plane's key (gc-work-list.ts).
      ...b.readSeal(),
      ...b.create(T.collection),
      ...b.create(T.history),
      // An `each` plan groups by the instances the control plane recorded (snapshot-attestations.ts); a forgotten snapshot's record goes too.
      ...b.list(T.hostsDir),
      ...b.read(T.hostSnapshot),
      ...b.delete(T.hostSnapshot),
    ],
    gcSweep: [
      ...open,
      ...b.readSeal(),
      ...b.read(T.collection),
      ...b.list(GC_PREFIX),
      ...b.read(T.generation),
      ...b.list(T.packDir),
      ...b.delete(T.pack),
    ],
    planRestore: [
      ...open,
      describeInstances,
      ...b.readState(),
      ...b.readSnapshots(),
      ...b.readHistory(),
      ...b.readLogs(),
      ...b.list(T.hostsDir),
    ],
    planVerify: [...b.getParameter(scope.planParameterName), describeInstances],
    archiveLag: [...b.getParameter(scope.planParameterName), ...b.endpointKey(), ...b.list(LOGS_PREFIX), ...b.list(T.logMetaDir)],
    // functions/freshness.ts: each plan's repository, its manifests (the newest good one's age).
    freshness: [...open, ...b.readState(), ...b.readSnapshots(), ...b.list(T.hostsDir)],
    // functions/extend-locks.ts (with Object Lock): the snapshot, the index and the pieces it references,
    // the objects under keys/ and packs/, then each object's retention kept until the lock period ends.
    extendLocks: [
      ...open,
      ...b.readSnapshots(),
      ...b.read(T.pack),
      ...b.list(PACKS_PREFIX),
      ...b.keepLocked(CONFIG_KEY),
      ...b.keepLocked(KEY_CHECK_KEY),
      ...b.keepLocked(T.keyFile),
      ...b.keepLocked(T.pack),
    ],
  };
}
