import { z } from 'zod';
import { runSummarySchema } from '../core/orchestration.ts';
import { snapshotSummarySchema } from '../core/snapshot.ts';

/**
 * The JSON lines `cairn --json` (or CAIRN_JSON=1) prints: one object a line, each with `time`
 * (ISO 8601, when it was printed) and `type`. docs/json-output.md describes them; the tests parse
 * every line any CLI test prints with `jsonMessageSchema`, so a message that drifts from it fails
 * there. The fields listed are the ones a script may rely on; messages carry more (loose objects),
 * and a new field is not a breaking change, a removed or retyped one is.
 */

const id = z.string().regex(/^[0-9a-f]{64}$/, 'a 64-hex-digit id');
const count = z.number().int().nonnegative();
const bytes = z.number().nonnegative();
const envelope = { time: z.iso.datetime() };

const message = <T extends string, S extends z.ZodRawShape>(type: T, shape: S) =>
  z.looseObject({ ...envelope, type: z.literal(type), ...shape });

/** A backup's summary: the snapshot's own summary (core/snapshot.ts) beside its id and engine. */
const backupSummary = z.looseObject({
  ...envelope,
  type: z.literal('summary'),
  operation: z.literal('backup'),
  snapshotId: id,
  engine: z.string(),
  partial: z.literal(true).optional(),
  ...snapshotSummarySchema.shape,
});

/** `backup --dry-run`: the summary the backup would record, without a snapshot (nothing was written). */
const backupDryRunSummary = z.looseObject({
  ...envelope,
  type: z.literal('summary'),
  operation: z.literal('backup'),
  dryRun: z.literal(true),
  engine: z.literal('files'),
  paths: z.array(z.string()),
  parent: id.optional(),
  ...snapshotSummarySchema.shape,
});

const restoreSummary = z.union([
  z.looseObject({
    ...envelope,
    type: z.literal('summary'),
    operation: z.literal('restore'),
    snapshotId: id,
    engine: z.string(),
    target: z.string(),
    files: count,
    dirs: count,
    symlinks: count,
    bytes,
    errors: z.array(z.looseObject({ path: z.string(), error: z.string() })),
    durationMs: z.number().nonnegative(),
  }),
  z.looseObject({ ...envelope, type: z.literal('summary'), operation: z.literal('restore'), skipped: z.literal(true), target: z.string() }),
]);

const copySummary = z.looseObject({
  ...envelope,
  type: z.literal('summary'),
  operation: z.literal('copy'),
  target: z.string(),
  snapshotsCopied: count,
  snapshotsSkipped: count,
});

const binlogPushSummary = z.looseObject({
  ...envelope,
  type: z.literal('summary'),
  operation: z.literal('binlog-push'),
  stream: z.string(),
  archived: count,
  alreadyArchived: count,
  active: z.string().nullable(),
});

/** `cairn agent …`: the run summary the orchestration reads (core/orchestration.ts). */
const agentSummary = z.looseObject({ ...envelope, type: z.literal('summary'), ...runSummarySchema.shape });

/** A listed snapshot: its manifest, with `status` (and `statusReason`) only when it is not a good backup. */
const snapshotListing = z.looseObject({
  id,
  time: z.iso.datetime(),
  host: z.string(),
  paths: z.array(z.string()),
  tags: z.array(z.string()),
  status: z.enum(['damaged', 'partial']).optional(),
});

export const jsonMessageSchemas = {
  progress: message('progress', { phase: z.string(), files: count, bytes }),
  warning: message('warning', { message: z.string().min(1) }),
  error: message('error', {
    code: z.string().regex(/^Cairn\.[A-Za-z]+$/),
    message: z.string().min(1),
    hint: z.string().optional(),
    exitCode: z.number().int().min(1).max(255),
  }),
  summary: z.union([agentSummary, backupSummary, backupDryRunSummary, restoreSummary, copySummary, binlogPushSummary]),
  init: message('init', { repository: z.string(), id, kmsOnly: z.boolean() }),
  snapshots: z.union([
    message('snapshots', { snapshots: z.array(snapshotListing), unreadable: z.array(z.looseObject({ id: z.string() })) }),
    message('snapshots', {
      groupBy: z.array(z.string()),
      groups: z.array(z.looseObject({ snapshots: z.array(snapshotListing) })),
      unreadable: z.array(z.looseObject({ id: z.string() })),
    }),
  ]),
  entry: message('entry', { snapshotId: id, entry: z.looseObject({ path: z.string(), type: z.string() }) }),
  ls: message('ls', { snapshotId: id, path: z.string(), entries: count }),
  match: message('match', { snapshotId: id, host: z.string(), entry: z.looseObject({ path: z.string() }) }),
  find: message('find', { patterns: z.array(z.string()), matches: count, snapshots: count, searched: count }),
  change: message('change', { entry: z.looseObject({ path: z.string() }) }),
  diff: message('diff', { a: id, b: id }),
  tag: message('tag', { dryRun: z.boolean(), changes: z.array(z.looseObject({})) }),
  verify: message('verify', {
    ok: z.boolean(),
    snapshots: count,
    packs: count,
    problems: z.array(z.looseObject({ object: z.string(), problem: z.string() })),
  }),
  forget: z.union([
    message('forget', { dryRun: z.boolean(), removed: z.array(z.looseObject({})) }),
    message('forget', { dryRun: z.boolean(), groups: z.array(z.looseObject({})) }),
  ]),
  prune: message('prune', { dryRun: z.boolean(), packsDeleted: count, packsRepacked: count, bytesFreed: bytes }),
  pin: message('pin', { snapshotId: id }),
  unpin: message('unpin', { snapshotId: id }),
  unlock: message('unlock', { removed: count, stillActive: count }),
  history: message('history', { events: z.array(z.looseObject({ time: z.string(), event: z.string() })) }),
  stats: message('stats', { snapshots: count, pieces: count, packs: count, logicalBytes: bytes, uniqueBytes: bytes, storedBytes: bytes }),
  engines: message('engines', { engines: z.array(z.looseObject({ name: z.string(), description: z.string() })) }),
  keys: message('keys', { repositoryId: id, keys: z.array(z.looseObject({ id: z.string() })) }),
  'key.added': message('key.added', { keyId: z.string(), kind: z.enum(['passphrase', 'kms']) }),
  'key.imported': message('key.imported', { keyId: z.string(), repositoryId: id }),
  'key.removed': message('key.removed', { keyId: z.string(), kind: z.string() }),
  'key.changed': message('key.changed', { keyId: z.string() }),
  'key.kit-exported': message('key.kit-exported', { repositoryId: id, file: z.string(), checksum: z.string() }),
  'repair-index': message('repair-index', {}),
  'repair-packs': message('repair-packs', {}),
  'repair-snapshots': message('repair-snapshots', {}),
  drill: message('drill', { ok: z.boolean() }),
  'pitr-plan': message('pitr-plan', { dryRun: z.literal(true) }),
  'pitr-status': message('pitr-status', { now: z.iso.datetime(), streams: z.array(z.looseObject({})) }),
  'binlog-push': message('binlog-push', { stream: z.string(), name: z.string(), size: bytes, key: z.string() }),
  generate: message('generate', { man: z.string(), pages: z.array(z.string()) }),
  'wal-daemon': z.union([
    message('wal-daemon', { running: z.array(z.looseObject({})) }),
    message('wal-daemon', { stopped: z.array(z.unknown()) }),
  ]),
} satisfies Record<string, z.ZodType>;

export type JsonMessageType = keyof typeof jsonMessageSchemas;

/** Checks one parsed line: undefined when it is a message as documented, else what is wrong with it. */
export function jsonMessageProblem(line: Record<string, unknown>): string | undefined {
  const type = line.type;
  if (typeof type !== 'string' || !Object.hasOwn(jsonMessageSchemas, type)) return `unknown message type ${JSON.stringify(type)}`;
  const parsed = jsonMessageSchemas[type as JsonMessageType].safeParse(line);
  if (parsed.success) return undefined;
  return parsed.error.issues
    .slice(0, 3)
    .map((issue) => `${issue.path.join('.') || '(top level)'}: ${issue.message}`)
    .join('; ');
}
