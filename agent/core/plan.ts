import { z } from 'zod';
import { parseDurationMs } from './duration.ts';
import { CairnError } from './errors.ts';
import { validateStream } from './log-archive.ts';
import { retentionPolicySchema } from './retention.ts';

/**
 * The deployment config of one environment (account, region, backup bucket,
 * alerts) and its plans, validated once here and read by the CDK app, the
 * Lambda functions (the plan JSON in Parameter Store) and the agent. Pure: no
 * I/O. Secrets are never values in this config, only Parameter Store names.
 */

/** A plan id names schedules, alarms, SSM parameters and S3 prefixes: a short lowercase slug. */
export const PLAN_ID_PATTERN = /^[a-z][a-z0-9-]{0,38}[a-z0-9]$/;
/** EC2 instance ids, and on-prem hosts registered as SSM managed instances (mi-…). */
export const INSTANCE_ID_PATTERN = /^(?:i-[0-9a-f]{8}(?:[0-9a-f]{9})?|mi-[0-9a-f]{17})$/;
/** A Parameter Store name: hierarchical, starting with a slash (what the agent fetches by itself). */
export const PARAMETER_NAME_PATTERN = /^\/[A-Za-z0-9_.\-/]{1,1010}$/;

export const ENGINES = ['files', 'mysqldump', 'mariadb', 'pgdump', 'postgres', 'etcd', 'etcd-keys'] as const;
export type EngineName = (typeof ENGINES)[number];

const CRON = /^cron\((\S+\s+){5}\S+\)$/;
const RATE = /^rate\([1-9]\d* (minute|minutes|hour|hours|day|days)\)$/;

const parameterName = z
  .string()
  .regex(
    PARAMETER_NAME_PATTERN,
    'a Parameter Store parameter name such as /cairn/prod/orders-db/password (the name, never the secret itself)',
  );

const duration = z.string().superRefine((text, ctx) => {
  try {
    if (parseDurationMs(text) <= 0) ctx.addIssue({ code: 'custom', message: 'must be longer than zero' });
  } catch {
    ctx.addIssue({ code: 'custom', message: `invalid duration ${JSON.stringify(text)}: use a number with a unit (s, m, h, d), e.g. 26h` });
  }
});

const scheduleExpression = z
  .string()
  .refine((e) => CRON.test(e) || RATE.test(e), 'an EventBridge Scheduler expression: cron(0 2 * * ? *) or rate(6 hours)');

export const scheduleSchema = z.strictObject({
  /** An EventBridge Scheduler expression: cron(min hour day-of-month month day-of-week year) or rate(N unit). */
  expression: scheduleExpression,
  /** IANA time zone for cron expressions, e.g. Europe/Berlin. */
  timeZone: z
    .string()
    .regex(/^(?:UTC|[A-Za-z_]+(?:\/[A-Za-z0-9_+-]+)+)$/, 'an IANA time zone such as UTC or Europe/Berlin')
    .default('UTC'),
});
export type Schedule = z.infer<typeof scheduleSchema>;

export const targetsSchema = z.union([
  z.strictObject({ instanceIds: z.array(z.string().regex(INSTANCE_ID_PATTERN, 'an instance id i-… or managed instance id mi-…')).min(1) }),
  z.strictObject({
    tag: z.strictObject({
      key: z.string().regex(/^[A-Za-z0-9 _.:/=+@-]{1,128}$/, 'a tag key'),
      value: z.string().regex(/^[A-Za-z0-9 _.:/=+@-]{1,256}$/, 'a tag value'),
    }),
  }),
]);
export type Targets = z.infer<typeof targetsSchema>;

export const connectionSchema = z.strictObject({
  host: z
    .string()
    .regex(/^[A-Za-z0-9.:_-]{1,253}$/, 'a host name or address')
    .optional(),
  port: z.number().int().min(1).max(65535).optional(),
  socket: z
    .string()
    .regex(/^\/[A-Za-z0-9_.\-/]+$/, 'an absolute socket path')
    .optional(),
  user: z
    .string()
    .regex(/^[A-Za-z0-9_.@-]{1,64}$/, 'a database user name')
    .optional(),
});

export const engineOptionsSchema = z.strictObject({
  connection: connectionSchema.optional(),
  databases: z.array(z.string().regex(/^[A-Za-z0-9_$-]{1,64}$/, 'a database name')).optional(),
  /** files: the paths to back up. */
  paths: z.array(z.string().regex(/^\//, 'an absolute path')).min(1).optional(),
  /** The Parameter Store name of the database password (SecureString); the agent fetches it. */
  passwordParameter: parameterName.optional(),
  /** Physical restores: the user the restored data directory is given to. */
  owner: z
    .string()
    .regex(/^[a-z_][a-z0-9_-]{0,31}$/, 'a system user name')
    .optional(),
});
export type EngineOptions = z.infer<typeof engineOptionsSchema>;

export const keySourceSchema = z.union([
  z.strictObject({ passphraseParameter: parameterName }),
  z.strictObject({ kmsKeyArn: z.string().regex(/^arn:aws[a-z-]*:kms:[a-z0-9-]+:\d{12}:(?:key|alias)\/[A-Za-z0-9/_-]+$/, 'a KMS key ARN') }),
]);
export type KeySource = z.infer<typeof keySourceSchema>;

/** Orchestrated plans need a repository the control plane can read too (CONTRACTS §3). */
const repositoryUrl = z
  .string()
  .regex(
    /^(?:s3|gs):\/\/[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](?:\/[A-Za-z0-9_.\-/]*)?$/,
    'an s3://bucket/prefix/ or gs://bucket/prefix/ URL (orchestrated plans cannot use a local path)',
  );

export const verificationSchema = z.strictObject({
  schedule: scheduleSchema,
  /** Percent of the data read back and authenticated on each verify (0 = structure only). */
  readDataSubset: z.number().min(0).max(100).default(0),
  /** Restore into a scratch target instead of only reading (operation drill). */
  drill: z.boolean().default(false),
});

export const timeoutsSchema = z
  .strictObject({
    heartbeatSeconds: z.number().int().min(30).max(3600).default(300),
    timeoutSeconds: z
      .number()
      .int()
      .min(60)
      .max(7 * 86_400)
      .default(6 * 3600),
  })
  .refine((t) => t.heartbeatSeconds < t.timeoutSeconds, {
    message: 'heartbeatSeconds must be less than timeoutSeconds',
    path: ['heartbeatSeconds'],
  });

/** Engines whose own log can be archived and replayed (docs/pitr.md). */
export const PITR_ENGINES: readonly EngineName[] = ['postgres', 'mariadb'];

/** How often a MariaDB plan's hosts push closed binlogs, unless the plan says otherwise. */
export const DEFAULT_BINLOG_PUSH_SCHEDULE = 'rate(5 minutes)';

/**
 * Point-in-time recovery: the database's log archived beside the snapshots
 * (PostgreSQL WAL through archive_command, MariaDB binlogs through binlog-push),
 * so a restore can replay to any time the archive covers. Off unless enabled.
 */
export const pitrSchema = z.strictObject({
  enabled: z.boolean().default(false),
  /** The log stream restores replay (pg-<system identifier>, mariadb-<name>); needed only when the repository holds several of the engine. */
  archiveStream: z
    .string()
    .refine((s) => isStreamName(s), 'a log stream name: pg-<system identifier> or mariadb-<name> (lowercase letters, digits, . _ -)')
    .optional(),
  /** The archive-lag alarm fires when the newest archived event is older than this. */
  maxArchiveLagMinutes: z
    .number()
    .int()
    .min(1)
    .max(7 * 24 * 60)
    .default(15),
  /**
   * MariaDB: when the plan's hosts push closed binlogs (`cairn agent archive`, default rate(5 minutes)),
   * or "follow" when each host runs `cairn binlog-push --follow` as a service instead (docs/cdk.md).
   */
  binlogPushSchedule: z.union([z.literal('follow'), scheduleExpression]).optional(),
});
export type PitrConfig = z.infer<typeof pitrSchema>;

function isStreamName(name: string): boolean {
  try {
    validateStream(name);
    return true;
  } catch {
    return false;
  }
}

const planFields = {
  id: z.string().regex(PLAN_ID_PATTERN, 'a lowercase slug of 2 to 40 letters, digits and hyphens, starting with a letter'),
  description: z.string().max(256).optional(),
  targets: targetsSchema,
  engine: z.enum(ENGINES),
  engineOptions: engineOptionsSchema.default({}),
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

function checkEngineOptions(
  plan: { engine: EngineName; engineOptions: EngineOptions; pitr?: PitrConfig | undefined },
  ctx: z.RefinementCtx,
): void {
  const o = plan.engineOptions;
  if (plan.engine === 'files' && o.paths === undefined) {
    ctx.addIssue({ code: 'custom', path: ['engineOptions', 'paths'], message: 'the files engine needs the paths to back up' });
  }
  if (plan.engine !== 'files' && o.paths !== undefined) {
    ctx.addIssue({ code: 'custom', path: ['engineOptions', 'paths'], message: `paths is for the files engine, not ${plan.engine}` });
  }
  checkPitr(plan, ctx);
}

function checkPitr(plan: { engine: EngineName; pitr?: PitrConfig | undefined }, ctx: z.RefinementCtx): void {
  const pitr = plan.pitr;
  if (pitr === undefined) return;
  const issue = (field: string, message: string): void => ctx.addIssue({ code: 'custom', path: ['pitr', field], message });
  if (pitr.enabled && !PITR_ENGINES.includes(plan.engine)) {
    issue('enabled', `point-in-time recovery replays a physical backup's log: engine postgres or mariadb, not ${plan.engine}`);
  }
  if (pitr.archiveStream !== undefined && PITR_ENGINES.includes(plan.engine)) {
    const prefix = plan.engine === 'postgres' ? 'pg-' : 'mariadb-';
    if (!pitr.archiveStream.startsWith(prefix)) issue('archiveStream', `a ${plan.engine} plan's stream starts with ${prefix}`);
  }
  if (pitr.binlogPushSchedule !== undefined && plan.engine !== 'mariadb') {
    issue(
      'binlogPushSchedule',
      `binlogPushSchedule is for mariadb plans (PostgreSQL archives through archive_command), not ${plan.engine}`,
    );
  }
  const interval = rateMinutes(pitr.binlogPushSchedule ?? DEFAULT_BINLOG_PUSH_SCHEDULE);
  if (pitr.enabled && plan.engine === 'mariadb' && interval !== undefined && interval >= pitr.maxArchiveLagMinutes) {
    issue(
      'maxArchiveLagMinutes',
      `${pitr.maxArchiveLagMinutes} minutes is not longer than the binlog push interval (${interval} minutes): the archive-lag alarm would fire between two pushes`,
    );
  }
}

/** rate(N unit) in minutes; undefined for cron expressions and "follow". */
function rateMinutes(expression: string): number | undefined {
  const m = /^rate\((\d+) (minute|hour|day)s?\)$/.exec(expression);
  if (!m) return undefined;
  return Number(m[1]) * ({ minute: 1, hour: 60, day: 1440 } as const)[m[2] as 'minute' | 'hour' | 'day'];
}

/** A plan as written in an environment config: the repository defaults to the environment's bucket. */
export const planInputSchema = z
  .strictObject({ ...planFields, repository: z.strictObject({ url: repositoryUrl }).optional() })
  .superRefine(checkEngineOptions);

/** A resolved plan: what Parameter Store holds at /cairn/<env>/plans/<id>, read by functions and the agent. */
export const planSchema = z
  .strictObject({ ...planFields, repository: z.strictObject({ url: repositoryUrl }) })
  .superRefine(checkEngineOptions);
export type Plan = z.infer<typeof planSchema>;
export type PlanInput = z.input<typeof planInputSchema>;

const objectLockSchema = z.strictObject({
  mode: z.enum(['GOVERNANCE', 'COMPLIANCE']),
  days: z.number().int().min(1).max(36_500),
});

const bucketName = z.string().regex(/^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$/, 'an S3 bucket name (lowercase letters, digits, hyphens)');
const region = z.string().regex(/^[a-z]{2}(?:-[a-z]+)+-\d$/, 'an AWS region such as eu-central-1');

export const environmentConfigSchema = z
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
export function parseEnvironmentConfig(raw: unknown, envName: string): EnvironmentConfig {
  if (!ENV_NAME_PATTERN.test(envName)) {
    throw configError(`invalid environment name ${JSON.stringify(envName)}: use a lowercase slug such as dev or prod`);
  }
  const parsed = environmentConfigSchema.safeParse(raw);
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

/** Parses a plan read back from Parameter Store (functions, agent). */
export function parsePlan(raw: unknown, source: string): Plan {
  const parsed = planSchema.safeParse(raw);
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

/** Splits a repository URL into its scheme, bucket and key prefix (no leading slash, trailing slash kept). */
export function repositoryLocation(url: string): { scheme: 's3' | 'gs'; bucket: string; prefix: string } {
  const m = /^(s3|gs):\/\/([^/]+)\/?(.*)$/.exec(url);
  if (!m) throw configError(`invalid repository URL ${JSON.stringify(url)}`);
  const prefix = m[3] ?? '';
  return { scheme: m[1] as 's3' | 'gs', bucket: m[2] as string, prefix: prefix === '' || prefix.endsWith('/') ? prefix : `${prefix}/` };
}

/** The plan's point-in-time recovery settings when it is on, else undefined. */
export function pitrOf(plan: Pick<Plan, 'pitr'>): PitrConfig | undefined {
  return plan.pitr?.enabled ? plan.pitr : undefined;
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

/** Every Parameter Store name a plan references (passwords, passphrases), for least-privilege grants. */
export function referencedParameters(plan: Plan): string[] {
  const names: string[] = [];
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
