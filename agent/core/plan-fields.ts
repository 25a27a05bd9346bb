import { z } from 'zod';
import { parseDurationMs } from './duration.ts';

/**
 * The field schemas of a plan that need nothing else: names, schedules,
 * targets, keys, verification and timeouts. plan.ts puts them together with
 * the engine options (core/engine-options/plan-options.ts) and the
 * point-in-time recovery settings (plan-pitr.ts).
 */

/** A plan id names schedules, alarms, SSM parameters and S3 prefixes: a short lowercase slug. */
export const PLAN_ID_PATTERN = /^[a-z][a-z0-9-]{0,38}[a-z0-9]$/;
/** EC2 instance ids, and on-prem hosts registered as SSM managed instances (mi-…). */
export const INSTANCE_ID_PATTERN = /^(?:i-[0-9a-f]{8}(?:[0-9a-f]{9})?|mi-[0-9a-f]{17})$/;
/** A Parameter Store name: hierarchical, starting with a slash (what the agent fetches by itself). */
export const PARAMETER_NAME_PATTERN = /^\/[A-Za-z0-9_.\-/]{1,1010}$/;

const CRON = /^cron\((\S+\s+){5}\S+\)$/;
const RATE = /^rate\([1-9]\d* (minute|minutes|hour|hours|day|days)\)$/;

export const parameterName = z
  .string()
  .regex(
    PARAMETER_NAME_PATTERN,
    'a Parameter Store parameter name such as /cairn/prod/orders-db/password (the name, never the secret itself)',
  );

export const duration = z.string().superRefine((text, ctx) => {
  try {
    if (parseDurationMs(text) <= 0) ctx.addIssue({ code: 'custom', message: 'must be longer than zero' });
  } catch {
    ctx.addIssue({ code: 'custom', message: `invalid duration ${JSON.stringify(text)}: use a number with a unit (s, m, h, d), e.g. 26h` });
  }
});

export const scheduleExpression = z
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

export const keySourceSchema = z.union([
  z.strictObject({ passphraseParameter: parameterName }),
  z.strictObject({ kmsKeyArn: z.string().regex(/^arn:aws[a-z-]*:kms:[a-z0-9-]+:\d{12}:(?:key|alias)\/[A-Za-z0-9/_-]+$/, 'a KMS key ARN') }),
]);
export type KeySource = z.infer<typeof keySourceSchema>;

/**
 * Orchestrated plans need a repository the control plane can read too (docs/contracts.md, "Who may do what").
 * Options after "?" are checked with the repository (plan-repository.ts): only an S3-compatible endpoint's.
 */
export const repositoryUrl = z
  .string()
  .regex(
    /^(?:s3|gs):\/\/[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](?:\/[A-Za-z0-9_.\-/]*)?(?:\?[A-Za-z0-9_.\-~%&=:/]*)?$/,
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
