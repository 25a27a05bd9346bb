import { App, Tags, Validations, type AppProps } from 'aws-cdk-lib';
import { AwsSolutionsChecks } from 'cdk-nag';
import { CairnError } from '../../agent/core/errors.ts';
import { parseEnvironmentConfig, type EnvironmentConfig } from '../../agent/core/plan.ts';
import { environments } from '../config/index.ts';
import { CairnReplicaStack, CairnStack } from './cairn-stack.ts';

/** Feature flags the app depends on (kept here, beside the code that needs them, not in cdk.json). */
const FEATURE_FLAGS = {
  // Server access logs delivered through a bucket policy, not the legacy LogDeliveryWrite ACL.
  '@aws-cdk/aws-s3:serverAccessLogsUseBucketPolicy': true,
};

export interface CairnApp {
  app: App;
  config: EnvironmentConfig;
  stack: CairnStack;
  replicaStack: CairnReplicaStack | undefined;
}

/** Loads an environment's raw config by name; an unknown name lists the known ones. */
export function loadEnvironmentConfig(
  envName: string | undefined,
  known: Readonly<Record<string, unknown>> = environments,
): EnvironmentConfig {
  const names = Object.keys(known).sort();
  if (envName === undefined || envName === '') {
    throw new CairnError('Cairn.Config', `no environment given: run with -c env=<name> (available: ${names.join(', ')})`);
  }
  if (!Object.hasOwn(known, envName)) {
    throw new CairnError('Cairn.Config', `unknown environment ${JSON.stringify(envName)} (available: ${names.join(', ')})`, {
      hint: `add cdk/config/${envName}.ts and list it in cdk/config/index.ts`,
    });
  }
  return parseEnvironmentConfig(known[envName], envName);
}

/**
 * Builds the app for one environment: `Cairn-<env>` (and `Cairn-<env>-replica`
 * in the replica region when configured), checked by cdk-nag's AwsSolutions
 * rules at synth.
 */
export function buildApp(
  envName: string | undefined,
  options: { appProps?: AppProps; known?: Readonly<Record<string, unknown>>; nag?: boolean } = {},
): CairnApp {
  const app = new App({ ...options.appProps, context: { ...FEATURE_FLAGS, ...options.appProps?.context } });
  const name = envName ?? (app.node.tryGetContext('env') as string | undefined);
  const config = loadEnvironmentConfig(name, options.known);
  if (options.nag ?? true) Validations.of(app).addPlugins(new AwsSolutionsChecks(app));
  Tags.of(app).add('cairn:environment', config.envName);

  let replicaStack: CairnReplicaStack | undefined;
  if (config.repository.replica !== undefined) {
    replicaStack = new CairnReplicaStack(app, `Cairn-${config.envName}-replica`, {
      config,
      env: { account: config.account, region: config.repository.replica.region },
      description: `Cairn ${config.envName}: replica of the backup repository`,
    });
  }
  const stack = new CairnStack(app, `Cairn-${config.envName}`, {
    config,
    env: { account: config.account, region: config.region },
    description: `Cairn ${config.envName}: backups of self-managed databases`,
  });
  if (replicaStack) stack.addStackDependency(replicaStack, 'replication needs the replica bucket and key');
  return { app, config, stack, replicaStack };
}
