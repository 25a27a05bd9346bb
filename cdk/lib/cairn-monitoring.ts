import { Duration } from 'aws-cdk-lib';
import * as cloudwatch from 'aws-cdk-lib/aws-cloudwatch';
import * as actions from 'aws-cdk-lib/aws-cloudwatch-actions';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as kms from 'aws-cdk-lib/aws-kms';
import * as sns from 'aws-cdk-lib/aws-sns';
import * as subscriptions from 'aws-cdk-lib/aws-sns-subscriptions';
import type * as sfn from 'aws-cdk-lib/aws-stepfunctions';
import { Construct } from 'constructs';
import { pitrOf, rpoSeconds, type Plan } from '../../agent/core/plan.ts';

export interface CairnMonitoringProps {
  envName: string;
  plans: readonly Plan[];
  emails: readonly string[];
  stateMachines: readonly sfn.IStateMachine[];
}

export const METRICS_NAMESPACE = 'Cairn';

/**
 * Alerts (an encrypted SNS topic with the environment's email subscriptions)
 * and, per plan, alarms on failed backups and restores, agent heartbeat
 * timeouts and freshness (age of the newest good snapshot above the RPO, with
 * missing data counted as breaching: silence is not health); for PITR plans,
 * the archive's lag, likewise. Plus a dashboard.
 */
export class CairnMonitoring extends Construct {
  readonly topic: sns.Topic;
  readonly dashboard: cloudwatch.Dashboard;
  readonly alarms: cloudwatch.Alarm[] = [];

  constructor(scope: Construct, id: string, props: CairnMonitoringProps) {
    super(scope, id);
    const key = new kms.Key(this, 'AlertsKey', {
      enableKeyRotation: true,
      description: `Cairn ${props.envName}: encrypts alert notifications`,
    });
    key.addToResourcePolicy(
      new iam.PolicyStatement({
        actions: ['kms:Decrypt', 'kms:GenerateDataKey*'],
        principals: [new iam.ServicePrincipal('cloudwatch.amazonaws.com')],
        resources: ['*'],
      }),
    );
    this.topic = new sns.Topic(this, 'Alerts', { displayName: `Cairn ${props.envName} alerts`, masterKey: key, enforceSSL: true });
    for (const email of props.emails) this.topic.addSubscription(new subscriptions.EmailSubscription(email));
    const notify = new actions.SnsAction(this.topic);

    const metric = (name: string, planId: string, statistic: string, period = Duration.minutes(5)): cloudwatch.Metric =>
      new cloudwatch.Metric({ namespace: METRICS_NAMESPACE, metricName: name, dimensionsMap: { PlanId: planId }, statistic, period });

    const alarm = (alarmId: string, alarmProps: cloudwatch.AlarmProps): void => {
      const a = new cloudwatch.Alarm(this, alarmId, alarmProps);
      a.addAlarmAction(notify);
      a.addOkAction(notify);
      this.alarms.push(a);
    };

    for (const plan of props.plans) {
      const failure = (name: string, what: string): cloudwatch.AlarmProps => ({
        alarmName: `cairn-${props.envName}-${plan.id}-${what.replace(/ /g, '-')}`,
        alarmDescription: `Cairn ${props.envName}: ${what} for plan ${plan.id}. Open the execution in the Step Functions console for the error.`,
        metric: metric(name, plan.id, 'Sum'),
        threshold: 1,
        evaluationPeriods: 1,
        comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
        treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
      });
      alarm(`BackupFailed-${plan.id}`, failure('BackupFailed', 'backup failed'));
      alarm(`RestoreFailed-${plan.id}`, failure('RestoreFailed', 'restore failed'));
      alarm(`AgentHeartbeatTimeout-${plan.id}`, failure('AgentHeartbeatTimeout', 'agent heartbeat timed out'));
      alarm(`RetentionFailed-${plan.id}`, failure('RetentionFailed', 'retention failed'));
      alarm(`RetentionSkipped-${plan.id}`, {
        ...failure('RetentionSkipped', 'retention skipped'),
        alarmDescription: `Cairn ${props.envName}: retention of plan ${plan.id} was skipped (its repository was locked, by a backup or an operator); nothing was forgotten or collected. One skip is harmless: it alarms so that a repository locked at every retention run is seen.`,
      });
      alarm(`PartialBackup-${plan.id}`, {
        ...failure('PartialBackup', 'partial backup'),
        alarmDescription: `Cairn ${props.envName}: a backup of plan ${plan.id} could not read every file and was saved as partial (not a good snapshot). The agent's run summary in the execution names the files.`,
      });
      if (plan.verification !== undefined) {
        alarm(`VerifyFailed-${plan.id}`, failure('VerifyFailed', 'verify failed'));
        alarm(`DrillFailed-${plan.id}`, {
          ...failure('DrillFailed', 'restore drill failed'),
          alarmDescription: `Cairn ${props.envName}: a restore drill of plan ${plan.id} failed (the execution failed, or the agent reported drill.ok false). Open the execution for the drill's checks.`,
        });
      }
      // The newest good snapshot's age, measured from the repository every 15 minutes (functions/freshness.ts):
      // two measurements per period, and the alarm needs both above the RPO (Minimum), so a backup that just
      // succeeded clears it at the next measurement. Silence (the function stopped, the repository unreadable,
      // no good snapshot yet) is breaching.
      alarm(`Freshness-${plan.id}`, {
        alarmName: `cairn-${props.envName}-${plan.id}-freshness`,
        alarmDescription: `Cairn ${props.envName}: the newest good backup of plan ${plan.id} is older than its RPO (${plan.rpo}), or its age could not be measured.`,
        metric: metric('NewestGoodBackupAgeSeconds', plan.id, 'Minimum', Duration.minutes(30)),
        threshold: rpoSeconds(plan),
        evaluationPeriods: 1,
        comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
        treatMissingData: cloudwatch.TreatMissingData.BREACHING,
      });
      const pitr = pitrOf(plan);
      if (pitr !== undefined) {
        // With PITR the recovery point is the newest archived event, not the newest snapshot. Two
        // measurements fall in each period (functions/archive-lag runs every 5 minutes), so one late
        // run is not mistaken for silence.
        alarm(`ArchiveLag-${plan.id}`, {
          alarmName: `cairn-${props.envName}-${plan.id}-archive-lag`,
          alarmDescription: `Cairn ${props.envName}: the newest archived log event of plan ${plan.id} is older than ${pitr.maxArchiveLagMinutes} minutes, or no lag was reported (archiving stopped, or nothing is archived yet).`,
          metric: metric('ArchiveLagSeconds', plan.id, 'Maximum', Duration.minutes(10)),
          threshold: pitr.maxArchiveLagMinutes * 60,
          evaluationPeriods: 1,
          comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
          treatMissingData: cloudwatch.TreatMissingData.BREACHING,
        });
      }
    }

    this.dashboard = new cloudwatch.Dashboard(this, 'Dashboard', { dashboardName: `cairn-${props.envName}` });
    const perPlan = (name: string, statistic: string, period = Duration.hours(1)): cloudwatch.IMetric[] =>
      props.plans.map((p) => metric(name, p.id, statistic, period).with({ label: p.id }));
    this.dashboard.addWidgets(
      new cloudwatch.GraphWidget({
        title: 'Age of the newest good backup (s)',
        left: perPlan('NewestGoodBackupAgeSeconds', 'Minimum', Duration.minutes(30)),
        width: 12,
      }),
      new cloudwatch.GraphWidget({
        title: 'Failures',
        left: [...perPlan('BackupFailed', 'Sum'), ...perPlan('RestoreFailed', 'Sum'), ...perPlan('AgentHeartbeatTimeout', 'Sum')],
        width: 12,
      }),
    );
    const pitrPlans = props.plans.filter((p) => pitrOf(p) !== undefined);
    if (pitrPlans.length > 0) {
      this.dashboard.addWidgets(
        new cloudwatch.GraphWidget({
          title: 'Archive lag: age of the newest archived log event (s)',
          left: pitrPlans.map((p) => metric('ArchiveLagSeconds', p.id, 'Maximum', Duration.minutes(10)).with({ label: p.id })),
          width: 24,
        }),
      );
    }
    this.dashboard.addWidgets(
      new cloudwatch.GraphWidget({ title: 'Bytes added', left: perPlan('BytesAdded', 'Sum'), width: 8 }),
      new cloudwatch.GraphWidget({ title: 'Backup duration (s)', left: perPlan('DurationSeconds', 'Maximum'), width: 8 }),
      new cloudwatch.GraphWidget({ title: 'Dedupe ratio', left: perPlan('DedupeRatio', 'Average'), width: 8 }),
    );
    this.dashboard.addWidgets(
      new cloudwatch.GraphWidget({
        title: 'State machine executions failed',
        left: props.stateMachines.map((m) => m.metricFailed({ period: Duration.hours(1) })),
        width: 24,
      }),
    );
  }
}
