import { z } from 'zod';
import type { EngineCatalog } from './engine-options/catalog.ts';
import type { EngineSpec } from './engine-options/spec.ts';
import { validateStream } from './log-archive.ts';
import { scheduleExpression } from './plan-fields.ts';

/** How often a binlog plan's hosts push closed binlogs, unless the plan says otherwise. */
export const DEFAULT_BINLOG_PUSH_SCHEDULE = 'rate(5 minutes)';

/**
 * Point-in-time recovery: the database's log archived beside the snapshots
 * (PostgreSQL WAL through archive_command, MariaDB binlogs through binlog-push),
 * so a restore can replay to any time the archive covers. Off unless enabled.
 * Which engines may enable it, and how their streams are named, comes from
 * their capabilities (core/engine-options/).
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
   * Binlog engines (MariaDB): when the plan's hosts push closed binlogs (`cairn agent archive`, default rate(5 minutes)),
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

/** The plan's point-in-time recovery settings when it is on, else undefined. */
export function pitrOf(plan: { pitr?: PitrConfig | undefined }): PitrConfig | undefined {
  return plan.pitr?.enabled ? plan.pitr : undefined;
}

/** Checks a plan's pitr settings against its engine's capabilities, naming the field. */
export function checkPitr(
  plan: { engine: string; pitr?: PitrConfig | undefined },
  spec: EngineSpec,
  catalog: EngineCatalog,
  ctx: z.RefinementCtx,
): void {
  const pitr = plan.pitr;
  if (pitr === undefined) return;
  const issue = (field: string, message: string): void => ctx.addIssue({ code: 'custom', path: ['pitr', field], message });
  const log = spec.capabilities.pitr;
  if (pitr.enabled && log === undefined) {
    const able = catalog.pitrEngines().map((s) => s.name);
    issue('enabled', `point-in-time recovery replays a physical backup's log: engine ${able.join(' or ')}, not ${plan.engine}`);
  }
  if (pitr.archiveStream !== undefined && log !== undefined && !pitr.archiveStream.startsWith(log.streamPrefix)) {
    issue('archiveStream', `a ${plan.engine} plan's stream starts with ${log.streamPrefix}`);
  }
  if (pitr.binlogPushSchedule !== undefined && log?.log !== 'binlog') {
    const binlog = catalog.enginesOfLog('binlog').map((s) => s.name);
    issue(
      'binlogPushSchedule',
      `binlogPushSchedule is for ${binlog.join(' and ')} plans (a WAL is archived by the server itself, through archive_command), not ${plan.engine}`,
    );
  }
  const interval = rateMinutes(pitr.binlogPushSchedule ?? DEFAULT_BINLOG_PUSH_SCHEDULE);
  if (pitr.enabled && log?.log === 'binlog' && interval !== undefined && interval >= pitr.maxArchiveLagMinutes) {
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
