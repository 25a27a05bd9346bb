import { Stack, type CfnElement } from 'aws-cdk-lib';
import * as iam from 'aws-cdk-lib/aws-iam';
import type * as kms from 'aws-cdk-lib/aws-kms';
import type * as logs from 'aws-cdk-lib/aws-logs';
import type * as s3 from 'aws-cdk-lib/aws-s3';
import type * as s3assets from 'aws-cdk-lib/aws-s3-assets';
import type * as sfn from 'aws-cdk-lib/aws-stepfunctions';
import { Construct } from 'constructs';
import { acknowledgeFindings, arnFinding, attrFinding } from './nag.ts';
import { planParameterName, referencedParameters, repositoryLocation, type Plan } from '../../agent/core/plan.ts';

export interface AgentHostPolicyProps {
  envName: string;
  plan: Plan;
  bucket: s3.IBucket;
  bucketKey: kms.IKey;
  agentAsset: s3assets.Asset;
  commandLogGroup: logs.ILogGroup;
  stateMachines: readonly sfn.IStateMachine[];
}

/** Every S3 action a host is granted: none of them deletes or overwrites (DESIGN §4). */
export const HOST_S3_READ_ACTIONS = ['s3:GetObject'];

/**
 * The managed policy a plan's hosts attach to their instance role: read and
 * create-only on the plan's repository prefix, no delete; the plan's parameter
 * and the secrets it names; the repository keys; task-token reporting to this
 * stack's state machines; the agent bundle; the command log group.
 */
export class AgentHostPolicy extends Construct {
  readonly policy: iam.ManagedPolicy;

  constructor(scope: Construct, id: string, props: AgentHostPolicyProps) {
    super(scope, id);
    const { plan, envName } = props;
    const stack = Stack.of(this);
    const statements: iam.PolicyStatement[] = [];
    const location = repositoryLocation(plan.repository.url);

    if (location.scheme === 's3') {
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
      if (location.bucket === props.bucket.bucketName || plan.repository.url.startsWith(`s3://${props.bucket.bucketName}/`)) {
        statements.push(
          new iam.PolicyStatement({
            sid: 'RepositoryBucketKey',
            actions: ['kms:Decrypt', 'kms:GenerateDataKey'],
            resources: [props.bucketKey.keyArn],
          }),
        );
      }
    }
    if ('kmsKeyArn' in plan.keySource) {
      statements.push(
        new iam.PolicyStatement({
          sid: 'RepositoryMasterKey',
          actions: ['kms:Decrypt', 'kms:Encrypt', 'kms:GenerateDataKey'],
          resources: [plan.keySource.kmsKeyArn],
        }),
      );
    }
    const parameterArn = (name: string): string => `arn:${stack.partition}:ssm:${stack.region}:${stack.account}:parameter${name}`;
    statements.push(
      new iam.PolicyStatement({
        sid: 'ReadPlanAndSecrets',
        actions: ['ssm:GetParameter'],
        resources: [planParameterName(envName, plan.id), ...referencedParameters(plan)].map(parameterArn),
      }),
      new iam.PolicyStatement({
        sid: 'ReportToStateMachines',
        actions: ['states:SendTaskSuccess', 'states:SendTaskFailure', 'states:SendTaskHeartbeat'],
        resources: props.stateMachines.map((m) => m.stateMachineArn),
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
    const findings = [`Resource::${attrFinding(props.commandLogGroup.node.defaultChild as CfnElement)}:log-stream:*`];
    if (location.scheme === 's3') findings.push(`Resource::${arnFinding(stack, `s3:::${location.bucket}/${location.prefix}*`)}`);
    acknowledgeFindings(
      this.policy,
      'AwsSolutions-IAM5',
      findings,
      "Object grants are scoped to the plan's own repository prefix (its objects are content-addressed, so not known in advance) and to the command log group's streams; the host cannot delete, and can create only with If-None-Match: *.",
    );
  }
}
