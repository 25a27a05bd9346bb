import { z } from 'zod';
import { connectionSchema, parameterName } from '../plan-fields.ts';
import type { EngineCatalog } from './catalog.ts';
import type { EngineSpec } from './spec.ts';

/**
 * A plan's engineOptions: the engine's own options (its spec's schema), with
 * two plan-only fields: `connection` (host, port, socket, user, checked
 * strictly here and handed to the engine flattened) and `passwordParameter`
 * (a Parameter Store name the agent resolves into CAIRN_DB_PASSWORD). Every
 * other key is checked by the plan's engine, and an error names the field.
 */

/** The connection fields a plan nests under `connection`. */
const CONNECTION_KEYS = ['host', 'port', 'socket', 'user'] as const;
/** Fields only a plan has: the agent resolves them, the engine never sees them. */
const PLAN_ONLY_KEYS = ['connection', 'passwordParameter'] as const;

/**
 * The shape every plan's engineOptions has whatever its engine (so the agent
 * and the CDK app read these fields typed); the engine's own keys pass
 * through here and are checked by checkPlanEngineOptions.
 */
export const planEngineOptionsSchema = z.looseObject({
  connection: connectionSchema.optional(),
  /** The Parameter Store name of the database password (SecureString); the agent fetches it. */
  passwordParameter: parameterName.optional(),
  /** files: the paths to back up (checked by the files engine's spec). */
  paths: z.array(z.string()).optional(),
  databases: z.array(z.string().regex(/^[A-Za-z0-9_$-]{1,64}$/, 'a database name')).optional(),
  /** Physical restores: the user the restored data directory is given to. */
  owner: z
    .string()
    .regex(/^[a-z_][a-z0-9_-]{0,31}$/, 'a system user name')
    .optional(),
});
export type PlanEngineOptions = z.infer<typeof planEngineOptionsSchema>;

/**
 * The options a plan's engine receives: `connection` flattened into
 * host/port/socket/user, plan-only fields left out. The agent passes this to
 * `engine.parseOptions`.
 */
export function engineOptionsOfPlan(plan: { engineOptions: PlanEngineOptions }): Record<string, unknown> {
  const { connection, ...own } = plan.engineOptions;
  return Object.fromEntries(
    Object.entries({ ...own, ...connection }).filter(([key, v]) => v !== undefined && !(PLAN_ONLY_KEYS as readonly string[]).includes(key)),
  );
}

/** Checks a plan's engineOptions against its engine's schema (strictly: an unknown key is refused by name). */
export function checkPlanEngineOptions(
  plan: { engine: string; engineOptions: PlanEngineOptions },
  spec: EngineSpec,
  catalog: EngineCatalog,
  ctx: z.RefinementCtx,
): void {
  const given = plan.engineOptions;
  for (const key of CONNECTION_KEYS) {
    if (given[key] !== undefined) {
      ctx.addIssue({ code: 'custom', path: ['engineOptions', key], message: `a plan gives the ${key} in engineOptions.connection.${key}` });
    }
  }
  const nested = new Set<string>(Object.keys(given.connection ?? {}));
  const parsed = spec.schema.strict().safeParse(engineOptionsOfPlan(plan));
  if (parsed.success) return;
  const where = (key: PropertyKey): PropertyKey[] =>
    typeof key === 'string' && nested.has(key) ? ['engineOptions', 'connection', key] : ['engineOptions', key];
  for (const issue of parsed.error.issues) {
    if (issue.code === 'unrecognized_keys') {
      for (const key of issue.keys) {
        if ((PLAN_ONLY_KEYS as readonly string[]).includes(key)) continue;
        ctx.addIssue({ code: 'custom', path: where(key), message: notAnOption(key, plan.engine, spec, catalog) });
      }
      continue;
    }
    const [first, ...rest] = issue.path;
    ctx.addIssue({ code: 'custom', path: first === undefined ? ['engineOptions'] : [...where(first), ...rest], message: issue.message });
  }
}

function notAnOption(key: string, engine: string, spec: EngineSpec, catalog: EngineCatalog): string {
  const owners = catalog.specs.filter((s) => key in s.schema.shape).map((s) => s.name);
  const own = Object.keys(spec.schema.shape).filter((k) => !(CONNECTION_KEYS as readonly string[]).includes(k));
  return owners.length > 0
    ? `${key} is for the ${owners.join(', ')} engine${owners.length > 1 ? 's' : ''}, not ${engine}`
    : `${key} is not an option of the ${engine} engine (its options: ${own.join(', ') || 'none'}, and connection)`;
}
