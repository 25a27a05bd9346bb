import { z } from 'zod';
import { CairnError } from './errors.ts';
import { INSTANCE_ID_PATTERN, PLAN_ID_PATTERN, pitrSchema } from './plan.ts';

/**
 * The orchestration protocol's messages (docs/contracts.md, "Orchestration protocol";
 * docs/orchestration.md): the console's Restore input, the request the state
 * machine hands the agent through the SSM document (base64url JSON, so no
 * value ever reaches a shell), and the run summary the agent sends back with
 * SendTaskSuccess. One schema each, shared by functions/ and the agent.
 */

const planId = z
  .string()
  .regex(PLAN_ID_PATTERN, 'a plan id: a lowercase slug of 2 to 40 letters, digits and hyphens, starting with a letter');
const snapshotRef = z.union([
  z.literal('latest'),
  z.string().regex(/^[0-9a-f]{8,64}$/, '"latest" or a snapshot id (at least 8 hex digits)'),
]);
const isoTime = z.iso.datetime({ offset: true, message: 'an ISO-8601 time with a zone, e.g. 2026-11-23T03:00:00Z' });
const instanceId = z.string().regex(INSTANCE_ID_PATTERN, 'an EC2 instance id (i-…) or a managed instance id (mi-…)');
const absolutePath = z
  .string()
  .regex(/^\/[^\0\n]*$/, 'an absolute path')
  .refine((p) => !p.split('/').includes('..'), 'a path without ".." components');
const databaseName = z.string().regex(/^[A-Za-z0-9_][A-Za-z0-9_$-]{0,62}$/, 'a database name (letters, digits, _, $ and -)');
const hostName = z
  .string()
  .regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$/, 'a host name as the plan\'s snapshots record it, e.g. "ip-10-0-1-17"');

/**
 * The encryption-context key naming the plan on a repository key (docs/cdk.md, "Repository creation"):
 * a host's kms:Decrypt is conditioned on it, so a host decrypts only its own plan's key files.
 */
export const PLAN_CONTEXT_KEY = 'cairn:plan';

export const restoreInputSchema = z
  .object({
    planId,
    snapshot: snapshotRef.optional(),
    pointInTime: isoTime.optional(),
    targetInstanceId: instanceId.optional(),
    targetPath: absolutePath.optional(),
    targetDatabase: databaseName.optional(),
    /** An `each` plan's hosts are independent sources: whose snapshot to restore (required for such a plan). */
    sourceHost: hostName.optional(),
    dryRun: z.boolean().optional(),
  })
  .strict()
  .refine((v) => v.snapshot === undefined || v.pointInTime === undefined, {
    message: 'give at most one of snapshot and pointInTime',
    path: ['pointInTime'],
  });
export type RestoreInput = z.infer<typeof restoreInputSchema>;

const heartbeatSeconds = z.number().int().min(30).max(86_400);

export const agentRequestSchema = z.discriminatedUnion('operation', [
  z
    .object({
      operation: z.literal('backup'),
      planId,
      runId: z.string().min(1).max(200),
      scheduledTime: isoTime.optional(),
      heartbeatSeconds,
    })
    .strict(),
  z
    .object({
      operation: z.literal('restore'),
      planId,
      snapshotId: z.string().regex(/^[0-9a-f]{64}$/),
      targetPath: absolutePath.optional(),
      targetDatabase: databaseName.optional(),
      /** Point-in-time recovery: snapshotId is the base, then the archived log is replayed to this time. */
      pointInTime: isoTime.optional(),
      /** The log stream the planner chose, so the host replays the stream the plan was made from. */
      stream: pitrSchema.shape.archiveStream,
      heartbeatSeconds,
    })
    .strict()
    .refine((r) => r.stream === undefined || r.pointInTime !== undefined, {
      message: 'a stream is replayed only to a pointInTime',
      path: ['stream'],
    }),
  z.object({ operation: z.literal('verify'), planId, readDataSubset: z.number().min(0).max(1), heartbeatSeconds }).strict(),
  z
    .object({
      operation: z.literal('drill'),
      planId,
      snapshotId: z
        .string()
        .regex(/^[0-9a-f]{64}$/)
        .optional(),
      heartbeatSeconds,
    })
    .strict(),
  // One-shot binlog push, started by the plan's binlog-push schedule with no task token (docs/cdk.md).
  z.object({ operation: z.literal('archive'), planId, heartbeatSeconds }).strict(),
]);
export type AgentRequest = z.infer<typeof agentRequestSchema>;
export type AgentOperation = AgentRequest['operation'];

export function encodeRequest(request: AgentRequest): string {
  return Buffer.from(JSON.stringify(agentRequestSchema.parse(request))).toString('base64url');
}

/** The SSM document lets only [A-Za-z0-9_-] through; anything else never reaches the agent. */
export function decodeRequest(encoded: string): AgentRequest {
  if (!/^[A-Za-z0-9_-]{1,8000}$/.test(encoded)) throw new CairnError('Cairn.Usage', 'the request is not base64url text');
  let json: unknown;
  try {
    json = JSON.parse(Buffer.from(encoded, 'base64url').toString('utf8'));
  } catch (cause) {
    throw new CairnError('Cairn.Usage', 'the request is not base64url-encoded JSON', { cause });
  }
  return parseOrExplain(agentRequestSchema, json, 'request');
}

/** What the agent sends with SendTaskSuccess (at most 256 KiB; engine metadata is small). */
export const runSummarySchema = z.object({
  operation: z.enum(['backup', 'restore', 'verify', 'drill', 'archive']),
  planId,
  host: z.string(),
  startedAt: z.string(),
  finishedAt: z.string(),
  snapshotId: z.string().optional(),
  engine: z.string().optional(),
  bytesRead: z.number().optional(),
  bytesAdded: z.number().optional(),
  totalBytes: z.number().optional(),
  files: z.object({ new: z.number(), changed: z.number(), unchanged: z.number() }).optional(),
  engineMetadata: z.record(z.string(), z.unknown()).optional(),
  verify: z.object({ ok: z.boolean(), problems: z.number(), packsRead: z.number() }).optional(),
  target: z.string().optional(),
  /** A backup that could not read every file: saved, but not a good snapshot (finalize-backup emits PartialBackup). */
  partial: z.boolean().optional(),
  /** A restore drill's outcome (its checks ride along): ok false is recorded as DrillFailed though the run itself succeeded. */
  drill: z.object({ ok: z.boolean() }).optional(),
  /** A point-in-time restore's replay: what the engine did or left for the server to do on start. */
  replay: z.object({ pointInTime: z.string(), stream: z.string(), files: z.number(), bytes: z.number(), summary: z.string() }).optional(),
});
export type RunSummary = z.infer<typeof runSummarySchema>;

/**
 * Parses with a schema and turns the first problems into one readable
 * sentence naming each field, e.g. `restore input: pointInTime: an ISO-8601 time …`.
 */
export function parseOrExplain<T>(schema: z.ZodType<T>, value: unknown, what: string): T {
  const parsed = schema.safeParse(value);
  if (parsed.success) return parsed.data;
  const problems = parsed.error.issues
    .slice(0, 5)
    .map((issue) => `${issue.path.length ? issue.path.join('.') : '(top level)'}: ${issue.message}`);
  throw new CairnError('Cairn.Usage', `invalid ${what}: ${problems.join('; ')}`);
}
