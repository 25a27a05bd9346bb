import { Stack, type CfnElement } from 'aws-cdk-lib';
import * as iam from 'aws-cdk-lib/aws-iam';
import type * as kms from 'aws-cdk-lib/aws-kms';
import type * as logs from 'aws-cdk-lib/aws-logs';
import type * as s3 from 'aws-cdk-lib/aws-s3';
import type * as s3assets from 'aws-cdk-lib/aws-s3-assets';
import type * as secretsmanager from 'aws-cdk-lib/aws-secretsmanager';
import { Construct } from 'constructs';
import { acknowledgeFindings, arnFinding, attrFinding } from './nag.ts';
import { GC_PREFIX, ORCHESTRATION_PREFIX } from '../../agent/core/layout.ts';
import { REPOSITORY_CONTEXT_KEY } from '../../agent/core/aws-calls.ts';
import { PLAN_CONTEXT_KEY } from '../../agent/core/orchestration.ts';
import { awsS3Location, planParameterName, referencedParameters, type Plan } from '../../agent/core/plan.ts';

export interface AgentHostPolicyProps {
  envName: string;
  plan: Plan;
  bucket: s3.IBucket;
  /** The environment bucket's name as a plain string (the config's): `bucket.bucketName` is a token at synth time. */
  bucketName: string;
  bucketKey: kms.IKey;
  /** The key Cairn's SecureString parameters are encrypted with (plan-parameters.ts). */
  parameterKey: kms.IKey;
  agentAsset: s3assets.Asset;
  commandLogGroup: logs.ILogGroup;
  /** The control plane's seal key (cairn-functions.ts): explicitly denied, so no broader grant lets a host forge a sealed record. */
  controlSeal: secretsmanager.ISecret;
}

/** Every S3 action a host is granted: none of them deletes or overwrites (docs/contracts.md, "Who may do what"). */
export const HOST_S3_READ_ACTIONS = ['s3:GetObject'];

/**
 * The managed policy a plan's hosts attach to their instance role: read and
 * create-only on the plan's repository prefix, no delete; the plan's parameter
 * and the secrets it names (decrypted per parameter); the repository keys (decrypt only);
 * task-token reporting; the agent bundle; the command log group.
 */
export class AgentHostPolicy extends Construct {
  readonly policy: iam.ManagedPolicy;

  constructor(scope: Construct, id: string, props: AgentHostPolicyProps) {
    super(scope, id);
    const { plan, envName } = props;
    const stack = Stack.of(this);
    const statements: iam.PolicyStatement[] = [];
    // Only an AWS S3 repository gets S3 grants: a bucket at an S3-compatible endpoint is signed with the access key the plan's
    // SecureString parameter holds (read below, with the plan's other secrets), and nothing in the stack's buckets is its.
    const location = awsS3Location(plan);

    if (location !== undefined) {
      const bucketArn = `arn:${stack.partition}:s3:::${location.bucket}`;
      const objects = `${bucketArn}/${location.prefix}*`;
      statements.push(
        new iam.PolicyStatement({
          sid: 'ListPlanPrefix',
          actions: ['s3:ListBucket'],
          resources: [bucketArn],
          conditions: { StringLike: { 's3:prefix': [`${location.prefix}*`] } },
        }),
        new iam.PolicyStatement({ sid: 'ReadPlanObjects', actions: HOST_S3_READ_ACTIONS, resources: [objects] }),
        // Writes must be create-if-absent: PutObject and CompleteMultipartUpload carry If-None-Match: *.
        new iam.PolicyStatement({
          sid: 'CreateOnlyIfAbsent',
          actions: ['s3:PutObject'],
          resources: [objects],
          conditions: { StringEquals: { 's3:if-none-match': '*' } },
        }),
        // CreateMultipartUpload, UploadPart and UploadPartCopy accept no conditional header; the
        // upload still completes only through CompleteMultipartUpload, which the statement above governs.
        new iam.PolicyStatement({
          sid: 'MultipartParts',
          actions: ['s3:PutObject'],
          resources: [objects],
          conditions: { Bool: { 's3:ObjectCreationOperation': 'false' } },
        }),
        new iam.PolicyStatement({
          sid: 'AbortOwnUploads',
          actions: ['s3:AbortMultipartUpload', 's3:ListMultipartUploadParts'],
          resources: [objects],
        }),
      );
      // Hosts never write the control plane's records (lease, run markers, GC work lists under
      // orchestration/) nor garbage collection's marks (gc/: a backup only reads them): an explicit
      // deny, so no other grant (a broader role policy) can let a forged lease or mark in. A mark
      // is sealed with the repository key, which hosts hold; collections settle only their own
      // marks (agent/core/gc-collect.ts), and this keeps hosts from writing any.
      statements.push(
        new iam.PolicyStatement({
          sid: 'DenyControlPlaneRecords',
          effect: iam.Effect.DENY,
          actions: ['s3:PutObject', 's3:DeleteObject', 's3:DeleteObjectVersion'],
          resources: [`${bucketArn}/${location.prefix}${ORCHESTRATION_PREFIX}*`, `${bucketArn}/${location.prefix}${GC_PREFIX}*`],
        }),
      );
      // The environment's bucket is SSE-KMS: every read and write makes S3 call KMS on the host's behalf.
      // With S3 Bucket Keys on, the encryption context S3 sends is the bucket's ARN (not the object's), so
      // the plan's prefix cannot be named here: the S3 statements above hold the host to it.
      if (location.bucket === props.bucketName) {
        statements.push(
          new iam.PolicyStatement({
            sid: 'RepositoryBucketKey',
            actions: ['kms:Decrypt', 'kms:GenerateDataKey'],
            resources: [props.bucketKey.keyArn],
            conditions: {
              StringEquals: { 'kms:ViaService': `s3.${stack.region}.amazonaws.com`, 'kms:EncryptionContext:aws:s3:arn': bucketArn },
            },
          }),
        );
      }
    }
    if ('kmsKeyArn' in plan.keySource) {
      // Hosts only unwrap the master key (create-repository or an operator wraps it): no kms:Encrypt.
      // Only key files wrapped with this plan in the encryption context (agent/keys/kms.ts): another
      // plan's key files under the same KMS key, or the operators' wrapping without a plan, do not decrypt here.
      statements.push(
        new iam.PolicyStatement({
          sid: 'RepositoryMasterKey',
          actions: ['kms:Decrypt'],
          resources: [plan.keySource.kmsKeyArn],
          conditions: {
            StringEquals: { [`kms:EncryptionContext:${PLAN_CONTEXT_KEY}`]: plan.id },
            StringLike: { [`kms:EncryptionContext:${REPOSITORY_CONTEXT_KEY}`]: '?*' },
          },
        }),
      );
    }
    statements.push(
      new iam.PolicyStatement({
        sid: 'DenyControlSeal',
        effect: iam.Effect.DENY,
        actions: ['secretsmanager:GetSecretValue'],
        resources: [props.controlSeal.secretArn],
      }),
    );
    const parameterArn = (name: string): string => `arn:${stack.partition}:ssm:${stack.region}:${stack.account}:parameter${name}`;
    const secrets = referencedParameters(plan, 'host').map(parameterArn);
    statements.push(
      new iam.PolicyStatement({
        sid: 'ReadPlanAndSecrets',
        actions: ['ssm:GetParameter'],
        resources: [parameterArn(planParameterName(envName, plan.id)), ...secrets],
      }),
    );
    if (secrets.length > 0) {
      // SecureStrings under Cairn's parameter key: decrypt only this plan's, through SSM. Without this
      // condition AmazonSSMManagedInstanceCore's ssm:GetParameter on * would read every plan's secrets.
      statements.push(
        new iam.PolicyStatement({
          sid: 'DecryptPlanSecrets',
          actions: ['kms:Decrypt'],
          resources: [props.parameterKey.keyArn],
          conditions: {
            StringEquals: { 'kms:ViaService': `ssm.${stack.region}.amazonaws.com`, 'kms:EncryptionContext:PARAMETER_ARN': secrets },
          },
        }),
      );
    }
    statements.push(
      // SendTask* authorize no resource (the task token is the capability): IAM matches them only on "*".
      new iam.PolicyStatement({
        sid: 'ReportToStateMachines',
        actions: ['states:SendTaskSuccess', 'states:SendTaskFailure', 'states:SendTaskHeartbeat'],
        resources: ['*'],
      }),
      new iam.PolicyStatement({
        sid: 'DownloadAgentBundle',
        actions: ['s3:GetObject'],
        resources: [`arn:${stack.partition}:s3:::${props.agentAsset.s3BucketName}/${props.agentAsset.s3ObjectKey}`],
      }),
      new iam.PolicyStatement({
        sid: 'WriteCommandOutput',
        actions: ['logs:CreateLogStream', 'logs:PutLogEvents', 'logs:DescribeLogStreams'],
        resources: [props.commandLogGroup.logGroupArn, `${props.commandLogGroup.logGroupArn}:log-stream:*`],
      }),
    );
    this.policy = new iam.ManagedPolicy(this, 'Policy', {
      managedPolicyName: `cairn-${envName}-host-${plan.id}`,
      description: `Cairn ${envName}: attach to the instance role of plan ${plan.id}'s hosts (read and create-only on its repository; never delete)`,
      statements,
    });
    const findings = [`Resource::${attrFinding(props.commandLogGroup.node.defaultChild as CfnElement)}:log-stream:*`, 'Resource::*'];
    if (location !== undefined) findings.push(`Resource::${arnFinding(stack, `s3:::${location.bucket}/${location.prefix}*`)}`);
    acknowledgeFindings(
      this.policy,
      'AwsSolutions-IAM5',
      findings,
      "Object grants are scoped to the plan's own repository prefix (its objects are content-addressed, so not known in advance) and to the command log group's streams; the host cannot delete, and can create only with If-None-Match: *. states:SendTask* support no resource scoping (the task token names the execution).",
    );
  }
}
