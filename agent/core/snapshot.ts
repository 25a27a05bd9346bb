import { z } from 'zod';
import { DamagedError } from './errors.ts';

export const snapshotSummarySchema = z.object({
  filesNew: z.number().int(),
  filesChanged: z.number().int(),
  filesUnchanged: z.number().int(),
  dirs: z.number().int(),
  bytesNew: z.number(),
  bytesChanged: z.number(),
  bytesUnchanged: z.number(),
  totalFiles: z.number().int(),
  totalBytes: z.number(),
  /** Bytes read from the source (unchanged files are not read). */
  bytesRead: z.number(),
  piecesAdded: z.number().int(),
  /** Plaintext bytes of the pieces this backup added to the repository. */
  rawBytesAdded: z.number(),
  /** Stored (compressed, encrypted) bytes this backup added to the repository. */
  bytesAdded: z.number(),
  durationMs: z.number(),
  errors: z.number().int(),
});
export type SnapshotSummary = z.infer<typeof snapshotSummarySchema>;

/**
 * The metadata of the one directory a snapshot was taken of (its root tree
 * holds only the directory's children): a restore applies it to the target.
 * Absent for several paths, one file, engine snapshots and older snapshots.
 */
export const rootMetaSchema = z.object({
  mode: z.number().int().min(0).max(0o7777),
  uid: z.number().int().min(0),
  gid: z.number().int().min(0),
  mtimeNs: z.string().regex(/^-?\d{1,30}$/),
});
export type RootMeta = z.infer<typeof rootMetaSchema>;

/**
 * A time as Date.toISOString writes it (UTC, "Z"): every time Cairn records has this form, which
 * retention parses and the log chain compares as strings. Anything else (no zone, an offset,
 * not a date) is a damaged manifest, refused on reading rather than crashing retention later.
 */
const manifestTime = z.iso.datetime({ message: 'a UTC ISO-8601 time, e.g. 2026-11-23T03:00:00.000Z' });

/**
 * snapshots/<id>: the small root of a snapshot, written last. Everything else
 * (trees, content lists, data) sits in packs and is reached from `tree`.
 */
export const snapshotSchema = z.object({
  version: z.literal(1),
  id: z.string().regex(/^[0-9a-f]{64}$/),
  time: manifestTime,
  endTime: manifestTime,
  host: z.string(),
  user: z.string(),
  paths: z.array(z.string()),
  tags: z.array(z.string()),
  engine: z.string(),
  engineMetadata: z.record(z.string(), z.unknown()),
  plan: z.string().optional(),
  tree: z.string().regex(/^[0-9a-f]{64}$/),
  root: rootMetaSchema.optional(),
  parent: z.string().optional(),
  /** Set when `cairn tag` rewrote the manifest under a new id: the id the snapshot was first committed as. */
  original: z
    .string()
    .regex(/^[0-9a-f]{64}$/)
    .optional(),
  summary: snapshotSummarySchema,
  /**
   * Set (true) by a backup that could not read every file: the snapshot holds what was read, but
   * it is not a good snapshot (retention never counts it). Absent on complete snapshots, so
   * manifests written before the field existed read as complete.
   */
  partial: z.literal(true).optional(),
  tool: z.string(),
});
export type Snapshot = z.infer<typeof snapshotSchema>;

export function decodeSnapshot(data: Buffer, name: string): Snapshot {
  let json: unknown;
  try {
    json = JSON.parse(data.toString('utf8'));
  } catch (cause) {
    throw new DamagedError(`${name} is not valid JSON`, { cause });
  }
  const parsed = snapshotSchema.safeParse(json);
  if (!parsed.success) throw new DamagedError(`${name} is invalid: ${z.prettifyError(parsed.error)}`);
  return parsed.data;
}

/**
 * The tag that marks a snapshot damaged (docs/contracts.md, "Words": not a good snapshot),
 * set by an operator (`cairn tag ID --add damaged`). A damage marker that names the snapshot
 * (core/damage.ts, written by verify) means the same: retention, `latest`, restore planning
 * and point-in-time windows pass over it.
 */
export const DAMAGED_TAG = 'damaged';

export function markedDamaged(snapshot: Pick<Snapshot, 'tags'>): boolean {
  return snapshot.tags.includes(DAMAGED_TAG);
}

/**
 * The tag an orchestrated backup carries naming the instance that made it (`instance:i-0abc…`,
 * from the SSM agent's AWS_SSM_INSTANCE_ID): host names repeat (ip-10-0-1-17 in two VPCs, cloned
 * images), instance ids do not, so an `each` plan's retention tells its hosts apart by it.
 */
export const INSTANCE_TAG_PREFIX = 'instance:';

/** The source a snapshot's `each` retention group is: its instance tag, else its host name. */
export function sourceOf(snapshot: Pick<Snapshot, 'tags' | 'host'>): string {
  return snapshot.tags.find((t) => t.startsWith(INSTANCE_TAG_PREFIX)) ?? `host:${snapshot.host}`;
}

/** A backup that could not read every file (its manifest says `partial`). */
export function isPartial(snapshot: Pick<Snapshot, 'partial'>): boolean {
  return snapshot.partial === true;
}

export function shortId(id: string): string {
  return id.slice(0, 8);
}
