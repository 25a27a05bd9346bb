import { randomBytes } from 'node:crypto';
import { promisify } from 'node:util';
import { zstdCompress as zstdCompressCb } from 'node:zlib';
import { z } from 'zod';
import { engineCatalog } from './engine-options/catalog.ts';
import type { PitrLogKind } from './engine-options/spec.ts';
import { sealCompressed } from './envelope.ts';
import { AlreadyExistsError, CairnError, DamagedError, NotFoundError } from './errors.ts';
import { mapLimit } from './concurrency.ts';
import type { Repository } from './repository.ts';

const zstdCompress = promisify(zstdCompressCb);

/**
 * The log archive (docs/pitr.md): a database's own change log (PostgreSQL WAL,
 * MariaDB/MySQL binlogs) kept beside the snapshots, for point-in-time recovery.
 *
 *   logs/<stream>/files/<file key>     one archived log file, sealed (kind "log")
 *   logs/<stream>/meta/<time>-<rand>   a batch of records describing archived files
 *
 * A stream is one database's log: `pg-<system identifier>` or `mariadb-<name>`.
 * File objects are created only if absent, so an archived file is never
 * overwritten: pushing the same content again is a no-op, different content
 * under the same key fails loudly. A record is written after its file, so a
 * record never names a file that was not stored; a file whose record was lost
 * (a crash between the two) is found by listing and described again by the
 * next push. The meta key starts with the newest event time of its batch, so
 * the control plane learns the archive's freshness from a listing alone.
 */
export const LOGS_PREFIX = 'logs/';

/**
 * A stream is named by the engine whose log it holds (its capabilities' stream
 * prefix) and by what identifies the database in that kind of log: a WAL
 * stream by the cluster's system identifier, a binlog stream by a chosen name.
 */
const STREAM_NAME_BY_LOG: Record<PitrLogKind, string> = { wal: '\\d{1,20}', binlog: '[a-z0-9][a-z0-9_.-]{0,62}' };
const STREAM_PATTERN = new RegExp(
  `^(?:${engineCatalog
    .pitrEngines()
    .map((s) => `${escapeRegExp(s.capabilities.pitr!.streamPrefix)}${STREAM_NAME_BY_LOG[s.capabilities.pitr!.log]}`)
    .join('|')})$`,
);
const STREAM_FORMS = engineCatalog
  .pitrEngines()
  .map((s) => `${s.capabilities.pitr!.streamPrefix}<${s.capabilities.pitr!.log === 'wal' ? 'system identifier' : 'name'}>`)
  .join(' or ');

function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}
const FILE_KEY_PATTERN = /^[A-Za-z0-9][A-Za-z0-9_.+-]{0,200}$/;

export const walPositionSchema = z.object({
  /** Timeline, from the file name. */
  timeline: z.number().int().min(1),
  /** Segment number (LSN / segment size), from the file name; absent for history files. */
  segment: z.number().int().min(0).optional(),
  segmentSize: z.number().int().positive().optional(),
  /** Lowest and highest transaction id committed or aborted in the segment (pg_waldump), for --to-xid. */
  xids: z.tuple([z.number().int(), z.number().int()]).optional(),
});

export const binlogPositionSchema = z.object({
  serverId: z.number().int().min(0),
  /** GTID state when the file starts (its Gtid_list event) and after its last transaction: "domain-server-seq,…", "" for none. */
  startGtid: z.string(),
  endGtid: z.string(),
  /** Byte offset just after the header events (where the first transaction may start), and the file's end. */
  startPosition: z.number().int().min(0),
  endPosition: z.number().int().min(0),
  /** The file the server rotated to (from the ROTATE event), when the file was closed by a rotation. */
  nextFile: z.string().optional(),
  /** Closed: ends with a ROTATE or STOP event, so nothing more will be written to it. */
  closed: z.boolean(),
  /** When that ROTATE or STOP was written: the server creates the next file at that moment, which is what ties the two. */
  closedAt: z.string().optional(),
  /** Transactions (GTID events) in the file. */
  transactions: z.number().int().min(0),
});

export const logFileRecordSchema = z.object({
  /** The database's name for the file: 000000010000000000000003, 00000002.history, mariadb-bin.000007. */
  name: z.string().min(1),
  /** Object key under logs/<stream>/files/. */
  key: z.string().regex(FILE_KEY_PATTERN),
  kind: z.enum(['wal', 'history', 'binlog']),
  size: z.number().int().min(0),
  /** HMAC-SHA256 of the plaintext under the repository's piece-id key (hex). */
  hash: z.string().regex(/^[0-9a-f]{64}$/),
  archivedAt: z.string(),
  host: z.string(),
  /** Times of the first and last event (commit, transaction) in the file; null when it holds none. */
  firstEventTime: z.string().nullable(),
  lastEventTime: z.string().nullable(),
  wal: walPositionSchema.optional(),
  binlog: binlogPositionSchema.optional(),
});
export type LogFileRecord = z.infer<typeof logFileRecordSchema>;

const logBatchSchema = z.object({
  version: z.literal(1),
  stream: z.string(),
  files: z.array(logFileRecordSchema),
});
type LogBatch = z.infer<typeof logBatchSchema>;

export interface ArchivedLog {
  /** The newest record for each key whose file object exists. */
  records: LogFileRecord[];
  /** File objects no record describes (a push crashed between file and record). */
  undescribed: Array<{ key: string; size: number }>;
  /** Records whose file object is gone (removed by hand, or lost): each one is a gap. */
  missing: LogFileRecord[];
  /** Batch objects, for retention's bookkeeping. */
  batches: Array<{ key: string; files: string[] }>;
}

export type PushOutcome = 'stored' | 'already-archived';

export function validateStream(stream: string): string {
  if (!STREAM_PATTERN.test(stream)) {
    throw new CairnError('Cairn.Usage', `invalid log stream name ${JSON.stringify(stream)}`, {
      hint: `a stream is ${STREAM_FORMS} (letters, digits, . _ -)`,
    });
  }
  return stream;
}

export function streamPrefix(stream: string): string {
  return `${LOGS_PREFIX}${validateStream(stream)}/`;
}

export function fileObjectKey(stream: string, key: string): string {
  if (!FILE_KEY_PATTERN.test(key)) throw new CairnError('Cairn.Usage', `invalid log file key ${JSON.stringify(key)}`);
  return `${streamPrefix(stream)}files/${key}`;
}

/** 20261123T101112Z: sorts as time, and reads as one. */
export function compactTime(iso: string): string {
  return new Date(iso)
    .toISOString()
    .replace(/[-:]/g, '')
    .replace(/\.\d+Z$/, 'Z');
}

export function parseCompactTime(text: string): string | undefined {
  const m = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/.exec(text);
  return m ? `${m[1]}-${m[2]}-${m[3]}T${m[4]}:${m[5]}:${m[6]}Z` : undefined;
}

/** One stream of a repository's log archive, opened with the repository's key. */
export class LogArchive {
  readonly repo: Repository;
  readonly stream: string;

  constructor(repo: Repository, stream: string) {
    this.repo = repo;
    this.stream = validateStream(stream);
  }

  /** Every stream that has archived something. */
  static async streams(repo: Repository): Promise<string[]> {
    const found = new Set<string>();
    for await (const object of repo.storage.list(LOGS_PREFIX)) {
      const stream = object.key.slice(LOGS_PREFIX.length).split('/')[0];
      if (stream && STREAM_PATTERN.test(stream)) found.add(stream);
    }
    return [...found].sort();
  }

  hash(data: Buffer): string {
    return this.repo.pieceId(data).toString('hex');
  }

  /**
   * Stores one file, durably, if absent. The same content already archived
   * under the key is a no-op ('already-archived'); different content fails
   * with Cairn.AlreadyExists and nothing is changed.
   */
  async putFile(key: string, data: Buffer): Promise<PushOutcome> {
    const name = fileObjectKey(this.stream, key);
    const compressed = data.length > 256 ? await zstdCompress(data) : undefined;
    const sealed = sealCompressed(this.repo.masterKey(), 'log', name, data, compressed);
    try {
      await this.repo.storage.put(name, sealed, { ifAbsent: true });
      return 'stored';
    } catch (error) {
      if (!(error instanceof AlreadyExistsError)) throw error;
    }
    const existing = await this.getFile(key);
    if (existing.equals(data)) return 'already-archived';
    throw new CairnError(
      'Cairn.AlreadyExists',
      `${key} is already archived in ${this.repo.storage.location} (stream ${this.stream}) with different content; nothing was overwritten`,
      {
        hint: 'two servers may be archiving into one stream (check the system identifier / --archive-name), or the file changed after it was archived: investigate before archiving again',
      },
    );
  }

  /** The file's plaintext; NotFoundError when it was never archived (or was removed). */
  async getFile(key: string): Promise<Buffer> {
    const name = fileObjectKey(this.stream, key);
    return this.repo.unseal('log', name, await this.repo.storage.get(name));
  }

  async hasFile(key: string): Promise<boolean> {
    return (await this.repo.storage.stat(fileObjectKey(this.stream, key))) !== undefined;
  }

  /** Writes one batch of records, named after its newest event (or archive) time. */
  async writeRecords(records: readonly LogFileRecord[]): Promise<string | undefined> {
    if (records.length === 0) return undefined;
    const newest = records
      .map((r) => r.lastEventTime ?? r.archivedAt)
      .sort()
      .at(-1) as string;
    const key = `${streamPrefix(this.stream)}meta/${compactTime(newest)}-${randomBytes(8).toString('hex')}`;
    const batch: LogBatch = { version: 1, stream: this.stream, files: [...records] };
    await this.repo.storage.put(key, this.repo.seal('logBatch', key, Buffer.from(JSON.stringify(batch))), { ifAbsent: true });
    return key;
  }

  /** Reads every record and lists every file: what pitr status, restore planning and retention work from. */
  async read(concurrency = 16): Promise<ArchivedLog> {
    const prefix = streamPrefix(this.stream);
    const files = new Map<string, number>();
    const batchKeys: string[] = [];
    for await (const object of this.repo.storage.list(prefix)) {
      const rest = object.key.slice(prefix.length);
      if (rest.startsWith('files/')) files.set(rest.slice('files/'.length), object.size);
      else if (rest.startsWith('meta/')) batchKeys.push(object.key);
    }
    const batches: ArchivedLog['batches'] = [];
    const byKey = new Map<string, LogFileRecord>();
    await mapLimit(batchKeys, concurrency, async (key) => {
      let batch: LogBatch;
      try {
        batch = readBatch(this.repo.unseal('logBatch', key, await this.repo.storage.get(key)), key);
      } catch (error) {
        if (error instanceof NotFoundError) return; // removed by retention while we listed
        throw error;
      }
      batches.push({ key, files: batch.files.map((f) => f.key) });
      for (const record of batch.files) {
        const seen = byKey.get(record.key);
        if (!seen || seen.archivedAt < record.archivedAt) byKey.set(record.key, record);
      }
    });
    const records: LogFileRecord[] = [];
    const missing: LogFileRecord[] = [];
    for (const record of byKey.values()) (files.has(record.key) ? records : missing).push(record);
    const undescribed = [...files].filter(([key]) => !byKey.has(key)).map(([key, size]) => ({ key, size }));
    const order = (a: LogFileRecord, b: LogFileRecord): number =>
      (a.firstEventTime ?? a.archivedAt).localeCompare(b.firstEventTime ?? b.archivedAt) || a.key.localeCompare(b.key);
    records.sort(order);
    missing.sort(order);
    batches.sort((a, b) => a.key.localeCompare(b.key));
    return { records, undescribed, missing, batches };
  }
}

function readBatch(data: Buffer, key: string): LogBatch {
  let json: unknown;
  try {
    json = JSON.parse(data.toString('utf8'));
  } catch (cause) {
    throw new DamagedError(`${key} is not valid JSON`, { cause });
  }
  const parsed = logBatchSchema.safeParse(json);
  if (!parsed.success) throw new DamagedError(`${key} is not a log batch: ${z.prettifyError(parsed.error)}`);
  return parsed.data;
}

/**
 * The newest event time the archive holds, from the meta listing alone (no key
 * needed): what the control plane's archive-lag metric reads.
 */
export async function newestArchivedEvent(list: AsyncIterable<{ key: string }>): Promise<Map<string, string>> {
  const newest = new Map<string, string>();
  for await (const { key } of list) {
    const m = /^logs\/([^/]+)\/meta\/(\d{8}T\d{6}Z)-[0-9a-f]+$/.exec(key);
    const time = m ? parseCompactTime(m[2] as string) : undefined;
    if (!m || !time) continue;
    const stream = m[1] as string;
    if ((newest.get(stream) ?? '') < time) newest.set(stream, time);
  }
  return newest;
}
