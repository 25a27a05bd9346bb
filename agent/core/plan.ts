import { z } from 'zod';
import { parseDurationMs } from './duration.ts';
import { engineCatalog, type EngineCatalog } from './engine-options/catalog.ts';
import { checkPlanEngineOptions, planEngineOptionsSchema, type PlanEngineOptions } from './engine-options/plan-options.ts';
import { CairnError } from './errors.ts';
import {
  duration,
  keySourceSchema,
  PLAN_ID_PATTERN,
  scheduleSchema,
  targetsSchema,
  timeoutsSchema,
  verificationSchema,
} from './plan-fields.ts';
import { checkPitr, pitrSchema, type PitrConfig } from './plan-pitr.ts';
import { endpointKeyParameter, planRepositorySchema, repositoryEndpoint, type EndpointSide } from './plan-repository.ts';
import { retentionPolicySchema } from './retention.ts';

/**
 * The deployment config of one environment (account, region, backup bucket,
 * alerts) and its plans, validated once here and read by the CDK app, the
 * Lambda functions (the plan JSON in Parameter Store) and the agent. Pure: no
 * I/O. Secrets are never values in this config, only Parameter Store names.
 * Engines are known by their specs (core/engine-options/): the schemas here
 * are built from an engine catalog, the shipped one unless a test gives its own.
 */

export * from './plan-fields.ts';
export {
  ENDPOINT_OPTIONS,
  endpointKeyParameter,
  planRepositorySchema,
  repositoryEndpoint,
  type EndpointSide,
  type PlanRepository,
  type RepositoryEndpoint,
} from './plan-repository.ts';
export { DEFAULT_BINLOG_PUSH_SCHEDULE, pitrOf, pitrSchema, type PitrConfig } from './plan-pitr.ts';
export { engineOptionsOfPlan, planEngineOptionsSchema, type PlanEngineOptions } from './engine-options/plan-options.ts';

/** An engine's name; which names exist is the catalog's to say (core/engine-options/catalog.ts). */
export type EngineName = string;

/**
 * How a plan treats several matching hosts: `any` (the default) backs up the first online one (members
 * of one cluster, which hold the same data); `each` backs up every one, as independent sources: one
 * snapshot, run lease and freshness metric per host, retention grouped by host (docs/orchestration.md).
 */
export const targetsModeSchema = z.enum(['any', 'each']);
export type TargetsMode = z.infer<typeof targetsModeSchema>;
const targetsWithMode = z.union([
  targetsSchema.options[0].extend({ mode: targetsModeSchema.optional() }),
  targetsSchema.options[1].extend({ mode: targetsModeSchema.optional() }),
]);

/** The plan's targets mode; absent means `any`. */
export function targetsModeOf(plan: { targets: { mode?: TargetsMode | undefined } }): TargetsMode {
  return plan.targets.mode ?? 'any';
}

function planFields(catalog: EngineCatalog) {
  return {
    id: z.string().regex(PLAN_ID_PATTERN, 'a lowercase slug of 2 to 40 letters, digits and hyphens, starting with a letter'),
    description: z.string().max(256).optional(),
    targets: targetsWithMode,
    engine: z.string().refine((name) => catalog.get(name) !== undefined, {
      error: (issue) => `unknown engine ${JSON.stringify(issue.input)}: one of ${catalog.names.join(', ')}`,
    }),
    engineOptions: planEngineOptionsSchema.default({}),
    schedule: scheduleSchema,
    retention: retentionPolicySchema.refine(
      (p) => Object.values(p).some((v) => v !== undefined),
      'name at least one keep rule (an empty policy keeps only the newest snapshot)',
    ),
    keySource: keySourceSchema,
    /** Recovery point objective: the freshness alarm fires when the newest good snapshot is older. */
    rpo: duration,
    verification: verificationSchema.optional(),
    timeouts: timeoutsSchema.default({ heartbeatSeconds: 300, timeoutSeconds: 6 * 3600 }),
    pitr: pitrSchema.optional(),
  };
}

/** The checks that need the plan's engine: its options, point-in-time recovery and drills against its capabilities. */
function checkAgainstEngine(catalog: EngineCatalog) {
  return (
    plan: {
      engine: string;
      engineOptions: PlanEngineOptions;
      pitr?: PitrConfig | undefined;
      verification?: { drill: boolean } | undefined;
    },
    ctx: z.RefinementCtx,
  ): void => {
    const spec = catalog.get(plan.engine);
    if (!spec) return; // the engine field says so
    checkPlanEngineOptions(plan, spec, catalog, ctx);
    checkPitr(plan, spec, catalog, ctx);
    if (plan.verification?.drill && !spec.capabilities.drill) {
      ctx.addIssue({
        code: 'custom',
        path: ['verification', 'drill'],
        message: `the ${plan.engine} engine has no restore drill (its spec says drill: false), so its plans verify by reading back`,
      });
    }
  };
}

/**
 * PostgreSQL archives its WAL through archive_command (`cairn wal-push`, run by the server outside any
 * orchestrated run), which has no way to the endpoint's access key: such a plan would lose its log.
 */
function checkEndpointPitr(catalog: EngineCatalog) {
  return (
    plan: {
      engine: string;
      pitr?: PitrConfig | undefined;
      repository?: { url: string; credentialsParameter?: string | undefined; controlCredentialsParameter?: string | undefined } | undefined;
    },
    ctx: z.RefinementCtx,
  ): void => {
    if (plan.repository === undefined || repositoryEndpoint(plan.repository) === undefined || plan.pitr?.enabled !== true) return;
    if (catalog.get(plan.engine)?.capabilities.pitr?.log !== 'wal') return;
    ctx.addIssue({
      code: 'custom',
      path: ['pitr', 'enabled'],
      message:
        "a PostgreSQL plan whose repository is an S3-compatible endpoint cannot archive WAL: archive_command runs `cairn wal-push` outside the agent, without the endpoint's access key; use an AWS S3 repository for PITR",
    });
  };
}

/** The plan schemas for a catalog of engines: a plan naming an engine outside it is refused. */
export function createPlanSchemas(catalog: EngineCatalog) {
  const fields = planFields(catalog);
  const engineCheck = checkAgainstEngine(catalog);
  const pitrCheck = checkEndpointPitr(catalog);
  const check = (plan: Parameters<typeof engineCheck>[0] & Parameters<typeof pitrCheck>[0], ctx: z.RefinementCtx): void => {
    engineCheck(plan, ctx);
    pitrCheck(plan, ctx);
  };
  /** A plan as written in an environment config: the repository defaults to the environment's bucket. */
  const planInputSchema = z.strictObject({ ...fields, repository: planRepositorySchema.optional() }).superRefine(check);
  /** A resolved plan: what Parameter Store holds at /cairn/<env>/plans/<id>, read by functions and the agent. */
  const planSchema = z.strictObject({ ...fields, repository: planRepositorySchema }).superRefine(check);
  return { planInputSchema, planSchema, environmentConfigSchema: environmentConfigSchemaOf(planInputSchema) };
}

const objectLockSchema = z.strictObject({
  mode: z.enum(['GOVERNANCE', 'COMPLIANCE']),
  days: z.number().int().min(1).max(36_500),
});

const bucketName = z.string().regex(/^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$/, 'an S3 bucket name (lowercase letters, digits, hyphens)');
const region = z.string().regex(/^[a-z]{2}(?:-[a-z]+)+-\d$/, 'an AWS region such as eu-central-1');

function environmentConfigSchemaOf<P extends z.ZodType<{ id: string }>>(planInputSchema: P) {
  return z
    .strictObject({
      account: z.string().regex(/^\d{12}$/, 'a 12-digit AWS account id'),
      region,
      repository: z
        .strictObject({
          /** Default: cairn-<env>-<account>-<region>. */
          bucketName: bucketName.optional(),
          objectLock: objectLockSchema.optional(),
          noncurrentVersionDays: z.number().int().min(1).max(36_500).default(30),
          abortIncompleteMultipartDays: z.number().int().min(1).max(365).default(7),
          replica: z
            .strictObject({
              region,
              /** Default: <primary bucket name>-replica. */
              bucketName: bucketName.optional(),
            })
            .optional(),
        })
        .default({ noncurrentVersionDays: 30, abortIncompleteMultipartDays: 7 }),
      alerts: z.strictObject({ emails: z.array(z.email()).default([]) }).default({ emails: [] }),
      plans: z.array(planInputSchema),
    })
    .superRefine((env, ctx) => {
      const seen = new Set<string>();
      env.plans.forEach((plan, i) => {
        if (seen.has(plan.id)) ctx.addIssue({ code: 'custom', path: ['plans', i, 'id'], message: `plan id ${plan.id} is used twice` });
        seen.add(plan.id);
      });
      if (env.repository.replica?.region === env.region) {
        ctx.addIssue({
          code: 'custom',
          path: ['repository', 'replica', 'region'],
          message: 'the replica must be in another region than the primary bucket',
        });
      }
    });
}

const shipped = createPlanSchemas(engineCatalog);
/** The shipped engines' plan schemas (createPlanSchemas gives them for another catalog). */
export const planInputSchema = shipped.planInputSchema;
export const planSchema = shipped.planSchema;
export const environmentConfigSchema = shipped.environmentConfigSchema;
export type Plan = z.infer<typeof planSchema>;
export type PlanInput = z.input<typeof planInputSchema>;
export type EnvironmentConfigInput = z.input<typeof environmentConfigSchema>;

export interface EnvironmentConfig {
  envName: string;
  account: string;
  region: string;
  repository: {
    bucketName: string;
    objectLock: z.infer<typeof objectLockSchema> | undefined;
    noncurrentVersionDays: number;
    abortIncompleteMultipartDays: number;
    replica: { region: string; bucketName: string } | undefined;
  };
  alerts: { emails: string[] };
  plans: Plan[];
}

export const ENV_NAME_PATTERN = /^[a-z][a-z0-9-]{0,19}$/;

/**
 * Validates an environment's config and resolves its defaults (bucket names,
 * repository URLs). A failure is a CairnError whose message names the
 * environment, the plan and the field, e.g. `env prod, plan orders-db: schedule.expression: …`.
 */
export function parseEnvironmentConfig(raw: unknown, envName: string, catalog?: EngineCatalog): EnvironmentConfig {
  if (!ENV_NAME_PATTERN.test(envName)) {
    throw configError(`invalid environment name ${JSON.stringify(envName)}: use a lowercase slug such as dev or prod`);
  }
  const unsupported = unsupportedRepositories(raw, envName);
  if (unsupported.length > 0) throw configError(unsupported.join('\n'));
  const parsed = (catalog ? createPlanSchemas(catalog).environmentConfigSchema : environmentConfigSchema).safeParse(raw);
  if (!parsed.success) throw configError(describeIssues(parsed.error, raw, envName));
  const env = parsed.data;
  const primary = env.repository.bucketName ?? `cairn-${envName}-${env.account}-${env.region}`;
  if (primary.length > 63)
    throw configError(
      `env ${envName}: repository.bucketName: the default name ${primary} is longer than 63 characters; set repository.bucketName`,
    );
  const replica = env.repository.replica;
  return {
    envName,
    account: env.account,
    region: env.region,
    repository: {
      bucketName: primary,
      objectLock: env.repository.objectLock,
      noncurrentVersionDays: env.repository.noncurrentVersionDays,
      abortIncompleteMultipartDays: env.repository.abortIncompleteMultipartDays,
      replica:
        replica === undefined ? undefined : { region: replica.region, bucketName: replica.bucketName ?? `${primary.slice(0, 55)}-replica` },
    },
    alerts: { emails: env.alerts.emails },
    plans: env.plans.map((plan) => ({ ...plan, repository: plan.repository ?? { url: `s3://${primary}/plans/${plan.id}/` } })),
  };
}

/**
 * Repositories the CLI opens but a deployed plan could not (docs/cdk.md, "Repositories a plan can
 * use"), refused at synth rather than at the first scheduled run: the hosts and the functions
 * have no Google credentials. (An S3-compatible endpoint's options are checked by the schema:
 * plan-repository.ts.)
 */
function unsupportedRepositories(raw: unknown, envName: string): string[] {
  const plans = isRecord(raw) && Array.isArray(raw.plans) ? (raw.plans as unknown[]) : [];
  return plans.flatMap((plan, i) => {
    const repository = isRecord(plan) && isRecord(plan.repository) ? plan.repository : undefined;
    const url = typeof repository?.url === 'string' ? repository.url : undefined;
    if (url === undefined) return [];
    const where = `env ${envName}, plan ${isRecord(plan) && typeof plan.id === 'string' ? plan.id : `#${i + 1}`}: repository.url`;
    if (url.startsWith('gs://'))
      return [
        `${where}: a gs:// repository cannot be orchestrated yet: neither the plan's hosts nor the control plane's functions get Google credentials (no service-account key is read for them from Parameter Store, and the stack makes no per-plan service account), so every scheduled run would fail; give the plan an s3:// repository and copy it to GCS with \`cairn copy\``,
      ];
    return [];
  });
}

/** Parses a plan read back from Parameter Store (functions, agent). */
export function parsePlan(raw: unknown, source: string, catalog?: EngineCatalog): Plan {
  const parsed = (catalog ? createPlanSchemas(catalog).planSchema : planSchema).safeParse(raw);
  if (!parsed.success) {
    const id = isRecord(raw) && typeof raw.id === 'string' ? raw.id : '?';
    throw configError(`${source}, plan ${id}: ${parsed.error.issues.map((i) => `${formatPath(i.path)}: ${i.message}`).join('; ')}`);
  }
  return parsed.data;
}

/** Where the plan's parameter lives: `/cairn/<env>/plans/<planId>`. */
export function planParameterName(envName: string, planId: string): string {
  return `${planParameterPrefix(envName)}${planId}`;
}

export function planParameterPrefix(envName: string): string {
  return `/cairn/${envName}/plans/`;
}

/** Splits a repository URL into its scheme, bucket and key prefix (no leading slash, trailing slash kept); options after "?" are dropped. */
export function repositoryLocation(url: string): { scheme: 's3' | 'gs'; bucket: string; prefix: string } {
  const m = /^(s3|gs):\/\/([^/?]+)\/?([^?]*)(?:\?.*)?$/.exec(url);
  if (!m) throw configError(`invalid repository URL ${JSON.stringify(url)}`);
  const prefix = m[3] ?? '';
  return { scheme: m[1] as 's3' | 'gs', bucket: m[2] as string, prefix: prefix === '' || prefix.endsWith('/') ? prefix : `${prefix}/` };
}

/**
 * Where a PostgreSQL PITR plan's hosts keep the repository passphrase:
 * archive_command and restore_command run as the server's user, outside any
 * orchestrated run, so they open the repository from a file (docs/cdk.md).
 */
export function walPassphraseFile(planId: string): string {
  return `/etc/cairn/${planId}.passphrase`;
}

/**
 * The global options `cairn wal-push` and `wal-fetch` need on a plan's host:
 * the repository (with its region, since the server's environment has none)
 * and the passphrase file; a KMS-keyed plan opens through KMS without one.
 */
export function walCairnArgs(plan: Pick<Plan, 'id' | 'repository' | 'keySource'>, region: string | undefined): string[] {
  const url = plan.repository.url;
  const located = region !== undefined && url.startsWith('s3://') && !url.includes('?') ? `${url}?region=${region}` : url;
  return ['--repo', located, ...('passphraseParameter' in plan.keySource ? ['--password-file', walPassphraseFile(plan.id)] : [])];
}

/** The plan's RPO in seconds (the freshness alarm's threshold). */
export function rpoSeconds(plan: Pick<Plan, 'rpo'>): number {
  return Math.round(parseDurationMs(plan.rpo) / 1000);
}

/**
 * Where the plan's repository is in AWS S3 (the stack's IAM governs it), or undefined: a GCS
 * repository, or a bucket at an S3-compatible endpoint, whose access key the plan names and whose
 * rules (Object Lock included) are the endpoint's.
 */
export function awsS3Location(plan: Pick<Plan, 'repository'>): { bucket: string; prefix: string } | undefined {
  if (repositoryEndpoint(plan.repository) !== undefined) return undefined;
  const location = repositoryLocation(plan.repository.url);
  return location.scheme === 's3' ? { bucket: location.bucket, prefix: location.prefix } : undefined;
}

/**
 * Every Parameter Store name `side` reads for a plan (passwords, passphrases, and an endpoint's access
 * key: the hosts' for 'host', the control plane's for 'control'), for least-privilege grants.
 */
export function referencedParameters(plan: Plan, side: EndpointSide): string[] {
  const names: string[] = [];
  const endpointKey = endpointKeyParameter(plan.repository, side);
  if (endpointKey !== undefined) names.push(endpointKey);
  if (plan.engineOptions.passwordParameter !== undefined) names.push(plan.engineOptions.passwordParameter);
  if ('passphraseParameter' in plan.keySource) names.push(plan.keySource.passphraseParameter);
  return names;
}

function configError(message: string): CairnError {
  return new CairnError('Cairn.Config', message, { hint: 'fix the named field in the environment config (cdk/config/<env>.ts)' });
}

function describeIssues(error: z.ZodError, raw: unknown, envName: string): string {
  return error.issues
    .map((issue) => {
      const path = issue.path;
      if (path[0] === 'plans' && typeof path[1] === 'number') {
        const plans = isRecord(raw) && Array.isArray(raw.plans) ? (raw.plans as unknown[]) : [];
        const plan = plans[path[1]];
        const id = isRecord(plan) && typeof plan.id === 'string' ? plan.id : `#${path[1] + 1}`;
        const rest = path.slice(2);
        return `env ${envName}, plan ${id}: ${rest.length === 0 ? '' : `${formatPath(rest)}: `}${issue.message}`;
      }
      return `env ${envName}: ${path.length === 0 ? '' : `${formatPath(path)}: `}${issue.message}`;
    })
    .join('\n');
}

function formatPath(path: readonly PropertyKey[]): string {
  return path.map((p, i) => (typeof p === 'number' ? `[${p}]` : `${i === 0 ? '' : '.'}${String(p)}`)).join('');
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
