import { Duration, Stack, type CfnElement } from 'aws-cdk-lib';
import * as iam from 'aws-cdk-lib/aws-iam';
import type * as lambda from 'aws-cdk-lib/aws-lambda';
import type * as logs from 'aws-cdk-lib/aws-logs';
import * as scheduler from 'aws-cdk-lib/aws-scheduler';
import * as targets from 'aws-cdk-lib/aws-scheduler-targets';
import type * as sqs from 'aws-cdk-lib/aws-sqs';
import { Construct } from 'constructs';
import { DEFAULT_BINLOG_PUSH_SCHEDULE, pitrOf, type Plan } from '../../agent/core/plan.ts';
import { acknowledgeFindings, arnFinding, attrFinding } from './nag.ts';

export interface PitrSchedulesProps {
  envName: string;
  plans: readonly Plan[];
  /** functions/archive-lag (exists when some plan has PITR on). */
  archiveLag: lambda.IFunction;
  documentName: string;
  commandLogGroup: logs.ILogGroup;
  deadLetterQueue: sqs.IQueue;
}

/** How often the archive's freshness is measured: the archive-lag alarms' resolution. */
export const ARCHIVE_LAG_SCHEDULE = 'rate(5 minutes)';

/**
 * The schedules point-in-time recovery needs: one that measures every PITR
 * plan's archive lag (functions/archive-lag), and for each MariaDB PITR plan
 * one that runs the agent document with operation `archive` on the plan's
 * hosts (a one-shot `cairn binlog-push`). PostgreSQL needs no schedule: the
 * server itself runs archive_command for every WAL segment.
 */
export class PitrSchedules extends Construct {
  readonly archiveLagSchedule: scheduler.Schedule;
  readonly binlogPushSchedules = new Map<string, scheduler.Schedule>();
  /** Assumed by these schedules. */
  readonly role: iam.Role;

  constructor(scope: Construct, id: string, props: PitrSchedulesProps) {
    super(scope, id);
    const stack = Stack.of(this);
    const plans = props.plans.filter((p) => pitrOf(p) !== undefined);
    // A measurement that is late is worth nothing: no long retries, the next one comes in five minutes.
    const retry = { deadLetterQueue: props.deadLetterQueue, retryAttempts: 2, maxEventAge: Duration.minutes(4) };

    // One role for these schedules, so their grants and the acknowledgements that excuse them sit in one place.
    this.role = new iam.Role(this, 'Role', {
      description: `Cairn ${props.envName}: lets the PITR schedules invoke archive-lag and run the agent document`,
      assumedBy: new iam.ServicePrincipal('scheduler.amazonaws.com', {
        conditions: {
          StringEquals: {
            'aws:SourceAccount': stack.account,
            'aws:SourceArn': stack.formatArn({ service: 'scheduler', resource: 'schedule-group', resourceName: 'default' }),
          },
        },
      }),
    });
    acknowledgeFindings(
      this.role,
      'AwsSolutions-IAM5',
      [`Resource::${attrFinding(props.archiveLag.node.defaultChild as CfnElement)}:*`],
      "Invoking archive-lag covers the function's versions (Arn:*), as the CDK grant writes it.",
    );

    this.archiveLagSchedule = new scheduler.Schedule(this, 'ArchiveLag', {
      scheduleName: `cairn-${props.envName}-archive-lag`,
      description: `Cairn ${props.envName}: publish ArchiveLagSeconds for the PITR plans`,
      schedule: scheduler.ScheduleExpression.expression(ARCHIVE_LAG_SCHEDULE),
      target: new targets.LambdaInvoke(props.archiveLag, {
        ...retry,
        role: this.role,
        input: scheduler.ScheduleTargetInput.fromObject({ planIds: plans.map((p) => p.id) }),
      }),
    });

    const pushPlans = plans.filter(
      (p) => p.engine === 'mariadb' && (pitrOf(p)?.binlogPushSchedule ?? DEFAULT_BINLOG_PUSH_SCHEDULE) !== 'follow',
    );
    if (pushPlans.length === 0) return;
    const documentArn = `arn:${stack.partition}:ssm:${stack.region}:${stack.account}:document/${props.documentName}`;
    const anyInstanceRest = [`ec2:${stack.region}:${stack.account}:instance/*`, `ssm:${stack.region}:${stack.account}:managed-instance/*`];
    const anyInstance = anyInstanceRest.map((rest) => `arn:${stack.partition}:${rest}`);
    for (const plan of pushPlans) {
      const hosts =
        'instanceIds' in plan.targets
          ? { InstanceIds: plan.targets.instanceIds }
          : { Targets: [{ Key: `tag:${plan.targets.tag.key}`, Values: [plan.targets.tag.value] }] };
      const instanceArns =
        'instanceIds' in plan.targets
          ? plan.targets.instanceIds.map(
              (i) =>
                `arn:${stack.partition}:${i.startsWith('mi-') ? `ssm:${stack.region}:${stack.account}:managed-instance` : `ec2:${stack.region}:${stack.account}:instance`}/${i}`,
            )
          : anyInstance;
      this.binlogPushSchedules.set(
        plan.id,
        new scheduler.Schedule(this, `BinlogPush-${plan.id}`, {
          scheduleName: `cairn-${props.envName}-binlog-push-${plan.id}`,
          description: `Cairn ${props.envName}: push plan ${plan.id}'s closed binlogs into its repository (cairn agent archive)`,
          schedule: scheduler.ScheduleExpression.expression(pitrOf(plan)?.binlogPushSchedule ?? DEFAULT_BINLOG_PUSH_SCHEDULE),
          target: new targets.Universal({
            ...retry,
            role: this.role,
            service: 'ssm',
            action: 'sendCommand',
            // No task token and no request: nobody waits on the command; a push that fails shows as archive lag.
            input: scheduler.ScheduleTargetInput.fromObject({
              DocumentName: props.documentName,
              ...hosts,
              Parameters: { operation: ['archive'], planId: [plan.id] },
              CloudWatchOutputConfig: { CloudWatchOutputEnabled: true, CloudWatchLogGroupName: props.commandLogGroup.logGroupName },
              TimeoutSeconds: 600,
              Comment: `Cairn ${props.envName} binlog push`,
            }),
            policyStatements: [new iam.PolicyStatement({ actions: ['ssm:SendCommand'], resources: [documentArn, ...instanceArns] })],
          }),
        }),
      );
    }
    if (!pushPlans.some((p) => 'tag' in p.targets)) return;
    acknowledgeFindings(
      this.role,
      'AwsSolutions-IAM5',
      anyInstanceRest.map((rest) => `Resource::${arnFinding(stack, rest)}`),
      "A tag-selected plan's hosts are whichever instances carry the tag when the schedule fires; SendCommand is allowed only with this environment's agent document.",
    );
  }
}
