import { Duration, RemovalPolicy, Stack, type CfnElement } from 'aws-cdk-lib';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as kms from 'aws-cdk-lib/aws-kms';
import * as s3 from 'aws-cdk-lib/aws-s3';
import { Validations } from 'aws-cdk-lib';
import { Construct } from 'constructs';
import { acknowledgeFindings, arnFinding, attrFinding } from './nag.ts';
import type { EnvironmentConfig } from '../../agent/core/plan.ts';

export interface BackupBucketProps {
  envName: string;
  repository: EnvironmentConfig['repository'];
}

/**
 * The environment's repository bucket: SSE-KMS under a customer-managed key
 * with rotation, versioning, Block Public Access, TLS only, server access logs,
 * lifecycle (abort incomplete uploads, expire noncurrent versions), optional
 * Object Lock, and optional Cross-Region Replication to the replica stack's
 * bucket. The bucket, its key and its log bucket are RETAINed: `cdk destroy`
 * never deletes backups (README, "Decommissioning").
 */
export class BackupBucket extends Construct {
  readonly bucket: s3.Bucket;
  readonly key: kms.Key;
  readonly accessLogs: s3.Bucket;

  constructor(scope: Construct, id: string, props: BackupBucketProps) {
    super(scope, id);
    const { repository, envName } = props;
    const stack = Stack.of(this);

    this.key = new kms.Key(this, 'Key', {
      alias: `alias/cairn-${envName}-repository`,
      description: `Cairn ${envName}: encrypts the backup repository bucket`,
      enableKeyRotation: true,
      removalPolicy: RemovalPolicy.RETAIN,
    });

    this.accessLogs = new s3.Bucket(this, 'AccessLogs', {
      bucketName: `${repository.bucketName.slice(0, 58)}-logs`,
      // S3 server access logging delivers only to SSE-S3 buckets.
      encryption: s3.BucketEncryption.S3_MANAGED,
      blockPublicAccess: s3.BlockPublicAccess.BLOCK_ALL,
      enforceSSL: true,
      versioned: true,
      objectOwnership: s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
      lifecycleRules: [{ id: 'expire-access-logs', expiration: Duration.days(365), noncurrentVersionExpiration: Duration.days(30) }],
      removalPolicy: RemovalPolicy.RETAIN,
    });
    Validations.of(this.accessLogs).acknowledge({
      id: 'AwsSolutions-S1',
      reason: 'This is the access-log bucket itself; logging it into itself would loop.',
    });

    this.bucket = new s3.Bucket(this, 'Bucket', {
      ...repositoryBucketProps(repository.bucketName, this.key, repository.objectLock),
      serverAccessLogsBucket: this.accessLogs,
      serverAccessLogsPrefix: 'repository/',
      lifecycleRules: [
        {
          id: 'abort-incomplete-multipart-uploads',
          abortIncompleteMultipartUploadAfter: Duration.days(repository.abortIncompleteMultipartDays),
        },
        {
          id: 'expire-noncurrent-versions',
          noncurrentVersionExpiration: Duration.days(repository.noncurrentVersionDays),
          expiredObjectDeleteMarker: true,
        },
      ],
    });

    const replica = repository.replica;
    if (replica !== undefined) this.replicateTo(replica, envName, stack);
  }

  /**
   * Cross-Region Replication into the replica stack's bucket. The replica lives
   * in another region, hence another stack; it is named by its deterministic
   * bucket name and key alias (no cross-region references).
   */
  private replicateTo(replica: { region: string; bucketName: string }, envName: string, stack: Stack): void {
    const replicaBucketArn = `arn:${stack.partition}:s3:::${replica.bucketName}`;
    const replicaKeyAlias = replicaKeyAliasName(envName);
    const role = new iam.Role(this, 'ReplicationRole', {
      assumedBy: new iam.ServicePrincipal('s3.amazonaws.com'),
      description: `Cairn ${envName}: replicates the repository bucket to ${replica.region}`,
    });
    role.addToPolicy(
      new iam.PolicyStatement({ actions: ['s3:GetReplicationConfiguration', 's3:ListBucket'], resources: [this.bucket.bucketArn] }),
    );
    role.addToPolicy(
      new iam.PolicyStatement({
        actions: [
          's3:GetObjectVersionForReplication',
          's3:GetObjectVersionAcl',
          's3:GetObjectVersionTagging',
          's3:GetObjectRetention',
          's3:GetObjectLegalHold',
        ],
        resources: [this.bucket.arnForObjects('*')],
      }),
    );
    role.addToPolicy(
      new iam.PolicyStatement({
        actions: ['s3:ReplicateObject', 's3:ReplicateDelete', 's3:ReplicateTags', 's3:ObjectOwnerOverrideToBucketOwner'],
        resources: [`${replicaBucketArn}/*`],
      }),
    );
    this.key.grantDecrypt(role);
    // The replica key is addressed by its alias: IAM matches the key through kms:ResourceAliases.
    role.addToPolicy(
      new iam.PolicyStatement({
        actions: ['kms:Encrypt', 'kms:GenerateDataKey'],
        resources: [`arn:${stack.partition}:kms:${replica.region}:${stack.account}:key/*`],
        conditions: { 'ForAnyValue:StringEquals': { 'kms:ResourceAliases': replicaKeyAlias } },
      }),
    );
    acknowledgeFindings(
      role,
      'AwsSolutions-IAM5',
      [
        `Resource::${attrFinding(this.bucket.node.defaultChild as CfnElement)}/*`,
        `Resource::${arnFinding(stack, `s3:::${replica.bucketName}/*`)}`,
        `Resource::${arnFinding(stack, `kms:${replica.region}:${stack.account}:key/*`)}`,
        'Action::kms:GenerateDataKey*',
        'Action::kms:ReEncrypt*',
      ],
      'S3 replication reads every object version of the repository bucket and writes every key of the replica bucket; the replica key lives in another region and is pinned by its alias through kms:ResourceAliases.',
    );

    const cfn = this.bucket.node.defaultChild as s3.CfnBucket;
    cfn.replicationConfiguration = {
      role: role.roleArn,
      rules: [
        {
          id: 'replicate-repository',
          status: 'Enabled',
          priority: 1,
          filter: { prefix: '' },
          deleteMarkerReplication: { status: 'Disabled' },
          sourceSelectionCriteria: { sseKmsEncryptedObjects: { status: 'Enabled' } },
          destination: {
            bucket: replicaBucketArn,
            encryptionConfiguration: {
              replicaKmsKeyId: `arn:${stack.partition}:kms:${replica.region}:${stack.account}:${replicaKeyAlias}`,
            },
          },
        },
      ],
    };
  }
}

/**
 * What the repository bucket and its replica share: SSE-KMS under their own key,
 * TLS only, no public access, versioning (nothing a host writes can be lost by
 * an overwrite), and Object Lock when the environment asks for it. Both are
 * RETAIN: `cdk destroy` never deletes backups.
 */
function repositoryBucketProps(bucketName: string, key: kms.IKey, lock: EnvironmentConfig['repository']['objectLock']): s3.BucketProps {
  return {
    bucketName,
    encryption: s3.BucketEncryption.KMS,
    encryptionKey: key,
    bucketKeyEnabled: true,
    blockPublicAccess: s3.BlockPublicAccess.BLOCK_ALL,
    enforceSSL: true,
    minimumTLSVersion: 1.2,
    versioned: true,
    objectOwnership: s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
    objectLockEnabled: lock !== undefined,
    objectLockDefaultRetention:
      lock === undefined
        ? undefined
        : lock.mode === 'COMPLIANCE'
          ? s3.ObjectLockRetention.compliance(Duration.days(lock.days))
          : s3.ObjectLockRetention.governance(Duration.days(lock.days)),
    removalPolicy: RemovalPolicy.RETAIN,
  };
}

export function replicaKeyAliasName(envName: string): string {
  return `alias/cairn-${envName}-replica`;
}

export interface ReplicaBucketProps {
  envName: string;
  bucketName: string;
  objectLock: EnvironmentConfig['repository']['objectLock'];
  noncurrentVersionDays: number;
}

/** The replica bucket (in the replica region's stack): its own KMS key, and Object Lock when the primary has it. */
export class ReplicaBucket extends Construct {
  readonly bucket: s3.Bucket;
  readonly key: kms.Key;

  constructor(scope: Construct, id: string, props: ReplicaBucketProps) {
    super(scope, id);
    this.key = new kms.Key(this, 'Key', {
      alias: replicaKeyAliasName(props.envName),
      description: `Cairn ${props.envName}: encrypts the replica of the backup repository`,
      enableKeyRotation: true,
      removalPolicy: RemovalPolicy.RETAIN,
    });
    this.bucket = new s3.Bucket(this, 'Bucket', {
      ...repositoryBucketProps(props.bucketName, this.key, props.objectLock),
      lifecycleRules: [{ id: 'expire-noncurrent-versions', noncurrentVersionExpiration: Duration.days(props.noncurrentVersionDays) }],
    });
    Validations.of(this.bucket).acknowledge({
      id: 'AwsSolutions-S1',
      reason:
        'The replica only receives S3 replication writes; access to the data is logged on the primary bucket, and CloudTrail covers the replica.',
    });
  }
}
