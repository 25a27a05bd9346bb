import { Duration, Stack, TimeZone, type CfnElement } from 'aws-cdk-lib';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as kms from 'aws-cdk-lib/aws-kms';
import * as scheduler from 'aws-cdk-lib/aws-scheduler';
import * as targets from 'aws-cdk-lib/aws-scheduler-targets';
import * as sqs from 'aws-cdk-lib/aws-sqs';
import type * as lambda from 'aws-cdk-lib/aws-lambda';
import type * as sfn from 'aws-cdk-lib/aws-stepfunctions';
import { Validations } from 'aws-cdk-lib';
import { Construct } from 'constructs';
import { acknowledgeFindings, attrFinding } from './nag.ts';
import type { Plan, Schedule } from '../../agent/core/plan.ts';

export interface PlanSchedulesProps {
  envName: string;
  plans: readonly Plan[];
  backup: sfn.IStateMachine;
  retention: sfn.IStateMachine;
  verify: sfn.IStateMachine;
  /** functions/freshness.ts, invoked every FRESHNESS_SCHEDULE with every plan id. */
  freshness: lambda.IFunction;
}

/** Two measurements fall in each freshness alarm period (cairn-monitoring.ts), so one late run is not silence. */
export const FRESHNESS_SCHEDULE = 'rate(15 minutes)';

/**
 * EventBridge Scheduler schedules per plan: backup (input planId + the
 * scheduled time, the idempotency key), retention, and verification when the
 * plan has one. Each retries and sends what it could not deliver to an
 * encrypted dead-letter queue.
 */
export class PlanSchedules extends Construct {
  readonly deadLetterQueue: sqs.Queue;
  readonly backupSchedules = new Map<string, scheduler.Schedule>();
  readonly retentionSchedules = new Map<string, scheduler.Schedule>();
  readonly verifySchedules = new Map<string, scheduler.Schedule>();
  readonly freshnessSchedule: scheduler.Schedule;

  constructor(scope: Construct, id: string, props: PlanSchedulesProps) {
    super(scope, id);
    const key = new kms.Key(this, 'DeadLetterKey', {
      enableKeyRotation: true,
      description: `Cairn ${props.envName}: encrypts undelivered schedule events`,
    });
    this.deadLetterQueue = new sqs.Queue(this, 'DeadLetters', {
      encryption: sqs.QueueEncryption.KMS,
      encryptionMasterKey: key,
      enforceSSL: true,
      retentionPeriod: Duration.days(14),
    });
    Validations.of(this.deadLetterQueue).acknowledge({
      id: 'AwsSolutions-SQS3',
      reason: 'This queue is itself the dead-letter queue of the schedules.',
    });

    const target = (machine: sfn.IStateMachine, input: Record<string, string>): targets.StepFunctionsStartExecution =>
      new targets.StepFunctionsStartExecution(machine, {
        input: scheduler.ScheduleTargetInput.fromObject(input),
        deadLetterQueue: this.deadLetterQueue,
        retryAttempts: 5,
        maxEventAge: Duration.hours(6),
      });
    const expression = (s: Schedule): scheduler.ScheduleExpression =>
      scheduler.ScheduleExpression.expression(s.expression, TimeZone.of(s.timeZone));

    // A measurement that is late is worth nothing: no long retries, the next one comes in 15 minutes.
    const stack = Stack.of(this);
    const freshnessRole = new iam.Role(this, 'FreshnessRole', {
      description: `Cairn ${props.envName}: lets the freshness schedule invoke the freshness function`,
      assumedBy: new iam.ServicePrincipal('scheduler.amazonaws.com', {
        conditions: { StringEquals: { 'aws:SourceAccount': stack.account } },
      }),
    });
    props.freshness.grantInvoke(freshnessRole);
    acknowledgeFindings(
      freshnessRole,
      'AwsSolutions-IAM5',
      [`Resource::${attrFinding(props.freshness.node.defaultChild as CfnElement)}:*`],
      "Invoking freshness covers the function's versions (Arn:*), as the CDK grant writes it.",
    );
    this.freshnessSchedule = new scheduler.Schedule(this, 'Freshness', {
      scheduleName: `cairn-${props.envName}-freshness`,
      description: `Cairn ${props.envName}: publish NewestGoodBackupAgeSeconds for every plan`,
      schedule: scheduler.ScheduleExpression.expression(FRESHNESS_SCHEDULE),
      target: new targets.LambdaInvoke(props.freshness, {
        role: freshnessRole,
        input: scheduler.ScheduleTargetInput.fromObject({ planIds: props.plans.map((p) => p.id) }),
        deadLetterQueue: this.deadLetterQueue,
        retryAttempts: 2,
        maxEventAge: Duration.minutes(10),
      }),
    });

    for (const plan of props.plans) {
      this.backupSchedules.set(
        plan.id,
        new scheduler.Schedule(this, `Backup-${plan.id}`, {
          scheduleName: `cairn-${props.envName}-backup-${plan.id}`,
          description: `Cairn ${props.envName}: back up plan ${plan.id}`,
          schedule: expression(plan.schedule),
          target: target(props.backup, { planId: plan.id, scheduledTime: scheduler.ContextAttribute.scheduledTime }),
        }),
      );
      // Retention runs daily on its own too, so that a plan whose backups fail still ages out.
      this.retentionSchedules.set(
        plan.id,
        new scheduler.Schedule(this, `Retention-${plan.id}`, {
          scheduleName: `cairn-${props.envName}-retention-${plan.id}`,
          description: `Cairn ${props.envName}: apply retention and collect garbage for plan ${plan.id}`,
          schedule: scheduler.ScheduleExpression.expression('rate(1 day)'),
          target: target(props.retention, { planId: plan.id }),
        }),
      );
      if (plan.verification !== undefined) {
        this.verifySchedules.set(
          plan.id,
          new scheduler.Schedule(this, `Verify-${plan.id}`, {
            scheduleName: `cairn-${props.envName}-verify-${plan.id}`,
            description: `Cairn ${props.envName}: ${plan.verification.drill ? 'restore drill' : 'verify'} for plan ${plan.id}`,
            schedule: expression(plan.verification.schedule),
            target: target(props.verify, { planId: plan.id }),
          }),
        );
      }
    }
  }
}
