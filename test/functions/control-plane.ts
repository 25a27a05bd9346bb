import { randomBytes } from 'node:crypto';
import { parsePlan, type Plan } from '../../agent/core/plan.ts';
import { controlSealParameterName } from '../../agent/core/run-lease.ts';
import { startS3rver, s3rverEnv, type S3rver } from '../helpers/s3rver.ts';
import { startSsmStandin, type SsmStandin } from '../e2e/standins.ts';

/**
 * What the functions run against here: s3rver (a real S3 API) for the plans'
 * repositories and the SSM stand-in (../e2e/standins.ts) for Parameter Store,
 * wired through the environment the functions read, as in Lambda.
 */
export interface ControlPlane {
  s3: S3rver;
  ssm: SsmStandin;
  /** Parses a plan on s3rver's bucket and puts it where loadPlan finds it. */
  addPlan(fields: Record<string, unknown>): Plan;
  stop(): Promise<void>;
}

export async function startControlPlane(envName: string): Promise<ControlPlane> {
  const s3 = await startS3rver();
  const ssm = await startSsmStandin();
  Object.assign(process.env, {
    ...s3rverEnv(),
    AWS_REGION: 'us-east-1',
    CAIRN_S3_ENDPOINT: s3.endpoint,
    CAIRN_S3_PATH_STYLE: 'true',
    AWS_ENDPOINT_URL_SSM: ssm.endpoint,
    ENV_NAME: envName,
    PLAN_PARAMETER_PREFIX: `/cairn/${envName}/plans/`,
    POWERTOOLS_TRACE_ENABLED: 'false',
  });
  // The control plane's seal key, as the deployment's secret holds it (run leases, run records, GC work lists).
  ssm.parameters.set(controlSealParameterName(envName), randomBytes(32).toString('hex'));
  return {
    s3,
    ssm,
    addPlan(fields) {
      const id = String(fields.id);
      const plan = parsePlan(
        {
          targets: { instanceIds: ['i-0123456789abcdef0'] },
          engineOptions: {},
          schedule: { expression: 'rate(1 day)', timeZone: 'UTC' },
          retention: { keepLast: 3 },
          keySource: { passphraseParameter: `/cairn/${envName}/${id}/passphrase` },
          rpo: '26h',
          repository: { url: `s3://${s3.bucket}/plans/${id}/` },
          ...fields,
        },
        'test',
      );
      ssm.parameters.set(`/cairn/${envName}/plans/${id}`, JSON.stringify(plan));
      return plan;
    },
    async stop() {
      await ssm.close();
      await s3.stop();
    },
  };
}
