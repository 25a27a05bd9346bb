import { CfnOutput, Stack, type StackProps } from 'aws-cdk-lib';
import type { Construct } from 'constructs';
import { pitrOf, type EnvironmentConfig } from '../../agent/core/plan.ts';
import { CairnStateMachines } from './state-machines.ts';
import { AgentBundle } from './agent-bundle.ts';
import { AgentCommandDocument, postgresArchiveSettings } from './agent-command-document.ts';
import { AgentHostPolicy } from './agent-host-policy.ts';
import { BackupBucket, ReplicaBucket } from './backup-bucket.ts';
import { CairnFunctions } from './cairn-functions.ts';
import { CairnMonitoring } from './cairn-monitoring.ts';
import { PlanParameters, parameterKeyAliasName } from './plan-parameters.ts';
import { PitrSchedules } from './pitr-schedules.ts';
import { PlanSchedules } from './plan-schedules.ts';

export interface CairnStackProps extends StackProps {
  config: EnvironmentConfig;
}

/** One environment: composes the constructs, nothing else. */
export class CairnStack extends Stack {
  readonly storage: BackupBucket;
  readonly planParameters: PlanParameters;
  readonly agentBundle: AgentBundle;
  readonly agentDocument: AgentCommandDocument;
  readonly functions: CairnFunctions;
  readonly stateMachines: CairnStateMachines;
  readonly hostPolicies = new Map<string, AgentHostPolicy>();
  readonly schedules: PlanSchedules;
  /** Only when some plan has PITR on. */
  readonly pitrSchedules: PitrSchedules | undefined;
  readonly monitoring: CairnMonitoring;

  constructor(scope: Construct, id: string, props: CairnStackProps) {
    super(scope, id, props);
    const { config } = props;
    const envName = config.envName;

    this.storage = new BackupBucket(this, 'Storage', { envName, repository: config.repository });
    this.planParameters = new PlanParameters(this, 'Plans', { envName, plans: config.plans });
    this.agentBundle = new AgentBundle(this, 'AgentBundle');
    this.agentDocument = new AgentCommandDocument(this, 'AgentDocument', { envName, bundle: this.agentBundle });
    this.functions = new CairnFunctions(this, 'Functions', {
      envName,
      plans: config.plans,
      bucket: this.storage.bucket,
      bucketName: config.repository.bucketName,
      bucketKey: this.storage.key,
      parameterKey: this.planParameters.key,
      documentName: this.agentDocument.documentName,
      objectLock: config.repository.objectLock,
    });
    this.stateMachines = new CairnStateMachines(this, 'StateMachines', {
      envName,
      functions: this.functions,
      documentName: this.agentDocument.documentName,
      commandLogGroup: this.agentDocument.logGroup,
    });
    for (const plan of config.plans) {
      this.hostPolicies.set(
        plan.id,
        new AgentHostPolicy(this, `HostPolicy-${plan.id}`, {
          envName,
          plan,
          bucket: this.storage.bucket,
          bucketName: config.repository.bucketName,
          bucketKey: this.storage.key,
          parameterKey: this.planParameters.key,
          agentAsset: this.agentBundle.asset,
          commandLogGroup: this.agentDocument.logGroup,
          controlSeal: this.functions.controlSeal,
        }),
      );
    }
    this.schedules = new PlanSchedules(this, 'Schedules', {
      envName,
      plans: config.plans,
      backup: this.stateMachines.backup,
      retention: this.stateMachines.retention,
      verify: this.stateMachines.verify,
      freshness: this.functions.freshness,
    });
    this.pitrSchedules = this.functions.archiveLag
      ? new PitrSchedules(this, 'PitrSchedules', {
          envName,
          plans: config.plans,
          archiveLag: this.functions.archiveLag,
          documentName: this.agentDocument.documentName,
          commandLogGroup: this.agentDocument.logGroup,
          deadLetterQueue: this.schedules.deadLetterQueue,
        })
      : undefined;
    this.monitoring = new CairnMonitoring(this, 'Monitoring', {
      envName,
      plans: config.plans,
      emails: config.alerts.emails,
      stateMachines: this.stateMachines.all,
    });

    new CfnOutput(this, 'BucketName', { value: this.storage.bucket.bucketName });
    new CfnOutput(this, 'ParameterKeyAlias', {
      value: parameterKeyAliasName(envName),
      description: 'the --key-id of the secret parameters the plans name (aws ssm put-parameter, docs/cdk.md)',
    });
    new CfnOutput(this, 'RestoreStateMachineArn', { value: this.stateMachines.restore.stateMachineArn });
    for (const [planId, host] of this.hostPolicies) {
      new CfnOutput(this, `HostPolicyArn-${planId}`, {
        value: host.policy.managedPolicyArn,
        description: `attach to the instance role of plan ${planId}'s hosts`,
      });
    }
    // PostgreSQL archives its WAL itself: these are the lines for the plan's postgresql.conf (docs/cdk.md).
    for (const plan of config.plans.filter((p) => p.engine === 'postgres' && pitrOf(p) !== undefined)) {
      const lines = postgresArchiveSettings(plan, config.region);
      new CfnOutput(this, `PostgresArchiveCommand-${plan.id}`, {
        value: lines.archiveCommand,
        description: `postgresql.conf of plan ${plan.id}'s server (with archive_mode = on)`,
      });
      new CfnOutput(this, `PostgresRestoreCommand-${plan.id}`, {
        value: lines.restoreCommand,
        description: `what a restored server of plan ${plan.id} replays WAL with (written by cairn restore --to-*)`,
      });
    }
  }
}

export interface CairnReplicaStackProps extends StackProps {
  config: EnvironmentConfig;
}

/** The replica bucket lives in another region, so in its own stack, deployed before the primary. */
export class CairnReplicaStack extends Stack {
  readonly replica: ReplicaBucket;

  constructor(scope: Construct, id: string, props: CairnReplicaStackProps) {
    super(scope, id, props);
    const replica = props.config.repository.replica;
    if (replica === undefined) throw new Error('CairnReplicaStack needs repository.replica in the config');
    this.replica = new ReplicaBucket(this, 'Replica', {
      envName: props.config.envName,
      bucketName: replica.bucketName,
      objectLock: props.config.repository.objectLock,
      noncurrentVersionDays: props.config.repository.noncurrentVersionDays,
    });
  }
}
