import { readFile } from 'node:fs/promises';
import { request as httpRequest } from 'node:http';
import { request as httpsRequest, type RequestOptions } from 'node:https';
import { createInterface } from 'node:readline';
import { Readable } from 'node:stream';
import { z } from 'zod';
import { CairnError, errorMessage } from '../core/errors.ts';
import { databasePassword } from './db-password.ts';
import { parseEngineOptions } from './engine-helpers.ts';
import type { Engine, EngineContext, EngineMetadata } from './engine.ts';

const optionsSchema = z.object({
  host: z.string().default('127.0.0.1'),
  port: z.coerce.number().int().min(1).max(65535).default(2379),
  /** Client URLs (comma-separated or a list); tried in order when one is unreachable. Default: http://host:port. */
  endpoints: z.union([z.string(), z.array(z.string())]).optional(),
  user: z.string().optional(),
  passwordFile: z.string().optional(),
  /** TLS: CA bundle, client certificate and key (PEM files), as etcdctl's --cacert/--cert/--key. */
  cacert: z.string().optional(),
  cert: z.string().optional(),
  key: z.string().optional(),
  /** Backup: the key prefixes to back up (none = every key). Restore: restore only keys under these. */
  prefixes: z.array(z.string()).default([]),
  /** Restore: delete every key under the target prefixes first. */
  clearPrefix: z.boolean().default(false),
  /** Restore: `old:new` rewrites the key prefix `old` to `new`; every restored key must start with `old`. */
  renamePrefix: z.string().optional(),
  /** Restore: write over keys that exist under the target prefixes (others stay). */
  force: z.boolean().default(false),
  /** Restore: puts per transaction (etcd's --max-txn-ops is 128 by default) and bytes per transaction (--max-request-bytes is 1.5 MiB). */
  batchOps: z.coerce.number().int().min(1).max(10_000).default(128),
  batchBytes: z.coerce
    .number()
    .int()
    .min(1024)
    .default(1 << 20),
});
type Options = z.infer<typeof optionsSchema>;

/** The one file of an etcd-keys snapshot: JSON lines, a header, one line per key in etcd's key order, a trailer. */
const KEYS_FILE = 'keys.jsonl';
const FORMAT = 'cairn-etcd-keys';

interface KeyValue {
  key: string;
  value?: string;
  create_revision?: string;
  mod_revision?: string;
  version?: string;
  lease?: string;
}
interface Header {
  cluster_id?: string;
  member_id?: string;
  revision?: string;
}
interface RangeResponse {
  header?: Header;
  kvs?: KeyValue[];
  more?: boolean;
  count?: string;
}
interface KeyRecord {
  key: string;
  value: string;
  createRevision?: number;
  modRevision?: number;
  version?: number;
  lease?: string;
}

/**
 * Logical etcd backups through the v3 API (the JSON gateway every etcd ≥ 3.4
 * serves on its client URL): every key under the chosen prefixes, read in pages
 * at one revision, so the snapshot is a point-in-time view; stored as JSON lines
 * in key order, so an unchanged key gives unchanged bytes and re-backups
 * deduplicate. Restore writes the keys into any running etcd in transactions,
 * optionally under a renamed prefix. Leases are not restored: a key that had one
 * comes back without it (its lease id is kept in the file for information).
 */
export const etcdKeysEngine: Engine<Options> = {
  name: 'etcd-keys',
  description: 'etcd v3 keys at one revision, by prefix, through the API; restores into any running etcd (rename, clear)',
  requires: [
    'network access to the etcd client URL (v3 JSON gateway, etcd ≥ 3.4)',
    'backup: read on the prefixes; restore: readwrite on the target prefixes (when auth is on)',
  ],

  parseOptions(raw) {
    const options = parseEngineOptions('etcd-keys', optionsSchema, raw);
    if (options.renamePrefix !== undefined) parseRename(options.renamePrefix);
    return options;
  },

  async check(options, ctx) {
    const client = await connect(options, ctx);
    await client.call('/v3/maintenance/status', {}, 'checking the member');
  },

  async backup(options, sink, ctx) {
    const client = await connect(options, ctx);
    const status = await client.call<{ header?: Header; version?: string }>('/v3/maintenance/status', {}, 'reading the member status');
    const prefixes = normalizePrefixes(options.prefixes.length ? options.prefixes : ['']);
    // The first range pins the revision; every later page reads at it.
    const ranges = prefixes.map(prefixRange);
    const first = await client.call<RangeResponse>(
      '/v3/kv/range',
      { key: b64(ranges[0]!.key), range_end: b64(ranges[0]!.end), count_only: true },
      'reading the revision',
    );
    const revision = first.header?.revision ?? '0';
    let total = 0;
    for (const range of ranges) {
      const counted = await client.call<RangeResponse>(
        '/v3/kv/range',
        { key: b64(range.key), range_end: b64(range.end), count_only: true, revision },
        'counting the keys',
      );
      total += Number(counted.count ?? 0);
    }
    const counts = { keys: 0, bytes: 0 };
    await sink.addStream(KEYS_FILE, Readable.from(keyLines(client, prefixes, revision, total, counts, ctx)));
    if (counts.keys !== total) {
      throw new CairnError(
        'Cairn.Failure',
        `etcd returned ${counts.keys} keys at revision ${revision} where it counted ${total}; nothing was committed`,
        { hint: 'run the backup again' },
      );
    }
    return {
      format: `${FORMAT}/1`,
      revision: Number(revision),
      clusterId: first.header?.cluster_id ?? status.header?.cluster_id ?? '',
      memberId: first.header?.member_id ?? status.header?.member_id ?? '',
      serverVersion: status.version ?? '',
      prefixes,
      keyCount: counts.keys,
      keyBytes: counts.bytes,
      leasesRestored: false,
    } satisfies EngineMetadata;
  },

  async restore(options, source, ctx) {
    const input = source.open(KEYS_FILE);
    const reader = createInterface({ input, crlfDelay: Infinity });
    try {
      await restoreKeys(options, source.metadata, reader[Symbol.asyncIterator](), ctx);
    } finally {
      reader.close();
      input.destroy();
    }
  },
};

async function restoreKeys(options: Options, metadata: EngineMetadata, lines: AsyncIterator<string>, ctx: EngineContext): Promise<void> {
  const head = await lines.next();
  const header = head.done ? undefined : (JSON.parse(head.value) as { format?: string; version?: number; prefixes?: string[] });
  if (header?.format !== FORMAT || header.version !== 1 || !Array.isArray(header.prefixes)) {
    throw new CairnError('Cairn.Damaged', `${KEYS_FILE} is not an etcd-keys file this version can read`, {
      hint: 'restore it with the Cairn version that wrote it',
    });
  }
  const scope = restoreScope(header.prefixes, options.prefixes);
  const rename = options.renamePrefix === undefined ? undefined : parseRename(options.renamePrefix);
  if (rename) {
    const outside = scope.filter((p) => !p.startsWith(rename.from));
    if (outside.length > 0) {
      throw new CairnError(
        'Cairn.Usage',
        `--rename-prefix ${options.renamePrefix}: the snapshot holds keys outside ${JSON.stringify(rename.from)} (under ${outside.map((p) => JSON.stringify(p)).join(', ')}); nothing was written`,
        {
          hint: 'rename a prefix every restored key starts with (restore a part with --etcd-prefix), or restore without renaming',
        },
      );
    }
  }
  const mapKey = (key: Buffer): Buffer => (rename ? Buffer.concat([rename.toBytes, key.subarray(rename.fromBytes.length)]) : key);
  const targets = normalizePrefixes(scope.map((p) => mapKey(Buffer.from(p)).toString()));
  const scopeBytes = scope.map((p) => Buffer.from(p));

  const client = await connect(options, ctx);
  const occupied: string[] = [];
  for (const target of targets) {
    const range = prefixRange(target);
    const found = await client.call<RangeResponse>(
      '/v3/kv/range',
      { key: b64(range.key), range_end: b64(range.end), count_only: true },
      'checking the target prefix',
    );
    if (Number(found.count ?? 0) > 0) occupied.push(`${JSON.stringify(target)} (${found.count} keys)`);
  }
  if (occupied.length > 0 && !options.clearPrefix && !options.force) {
    throw new CairnError('Cairn.TargetNotEmpty', `the target etcd already holds keys under ${occupied.join(', ')}; nothing was written`, {
      hint: 'add --clear-prefix to delete them first, or --force to write over them (keys not in the snapshot then stay)',
    });
  }
  if (options.clearPrefix) {
    for (const target of targets) {
      const range = prefixRange(target);
      const deleted = await client.call<{ deleted?: string }>(
        '/v3/kv/deleterange',
        { key: b64(range.key), range_end: b64(range.end) },
        'clearing the target prefix',
      );
      ctx.progress.warn(`deleted ${deleted.deleted ?? 0} key(s) under ${JSON.stringify(target)} (--clear-prefix)`);
    }
  }

  const total = typeof metadata.keyCount === 'number' ? metadata.keyCount : undefined;
  const written = { keys: 0, bytes: 0 };
  let batch: Array<{ request_put: { key: string; value: string } }> = [];
  let batchBytes = 0;
  let lastKey = '';
  const flush = async (): Promise<void> => {
    if (batch.length === 0) return;
    await client.call('/v3/kv/txn', { success: batch }, `writing keys up to ${lastKey}`);
    written.keys += batch.length;
    written.bytes += batchBytes;
    batch = [];
    batchBytes = 0;
    ctx.progress.progress({
      phase: 'restore',
      files: written.keys,
      bytes: written.bytes,
      ...(total !== undefined ? { totalFiles: total } : {}),
      current: lastKey,
    });
  };
  let trailer: { end?: boolean; keys?: number } | undefined;
  let seen = 0;
  for (;;) {
    const next = await lines.next();
    if (next.done) break;
    if (next.value === '') continue;
    const line = JSON.parse(next.value) as Partial<KeyRecord> & { end?: boolean; keys?: number };
    if (line.end) {
      trailer = line;
      break;
    }
    if (typeof line.key !== 'string' || typeof line.value !== 'string')
      throw new CairnError('Cairn.Damaged', `${KEYS_FILE} has a malformed line after ${seen} keys`);
    seen++;
    const key = Buffer.from(line.key, 'base64');
    if (!scopeBytes.some((p) => startsWith(key, p))) continue;
    const value = Buffer.from(line.value, 'base64');
    const target = mapKey(key);
    const size = target.length + value.length;
    if (batch.length > 0 && (batch.length >= options.batchOps || batchBytes + size > options.batchBytes)) await flush();
    batch.push({ request_put: { key: target.toString('base64'), value: line.value } });
    batchBytes += size;
    lastKey = printable(target);
  }
  await flush();
  if (!trailer || trailer.keys !== seen) {
    throw new CairnError(
      'Cairn.Damaged',
      `${KEYS_FILE} ends early (${seen} keys read${trailer ? `, ${trailer.keys} recorded` : ', no trailer'}); ${written.keys} key(s) were written`,
      { hint: 'restore another snapshot (with --clear-prefix)' },
    );
  }
  ctx.progress.warn(
    `restored ${written.keys} key(s) into ${targets.map((t) => JSON.stringify(t)).join(', ')}${rename ? ` (renamed from ${JSON.stringify(rename.from)})` : ''}; leases are not restored`,
  );
}

/** The snapshot's lines: a header, the keys of each range in pages at the pinned revision, a trailer. */
async function* keyLines(
  client: EtcdClient,
  prefixes: string[],
  revision: string,
  total: number,
  counts: { keys: number; bytes: number },
  ctx: EngineContext,
): AsyncGenerator<Buffer> {
  yield Buffer.from(`${JSON.stringify({ format: FORMAT, version: 1, prefixes })}\n`);
  // Pages aim at a few MiB whatever the value sizes: memory stays bounded on large keyspaces.
  let limit = 256;
  for (const prefix of prefixes) {
    const range = prefixRange(prefix);
    let start = range.key;
    for (;;) {
      ctx.signal?.throwIfAborted();
      const page = await client.call<RangeResponse>(
        '/v3/kv/range',
        { key: b64(start), range_end: b64(range.end), revision, limit },
        'reading keys',
        { resize: () => (limit = Math.max(1, limit >> 1)) },
      );
      const kvs = page.kvs ?? [];
      const out: string[] = [];
      let pageBytes = 0;
      for (const kv of kvs) {
        const record: KeyRecord = {
          key: kv.key,
          value: kv.value ?? '',
          createRevision: Number(kv.create_revision ?? 0),
          modRevision: Number(kv.mod_revision ?? 0),
          version: Number(kv.version ?? 0),
        };
        if (kv.lease && kv.lease !== '0') record.lease = kv.lease;
        out.push(JSON.stringify(record));
        pageBytes += kv.key.length + (kv.value?.length ?? 0);
        counts.keys++;
        counts.bytes += Buffer.byteLength(kv.key, 'base64') + Buffer.byteLength(kv.value ?? '', 'base64');
      }
      const last = kvs.at(-1);
      if (out.length > 0) yield Buffer.from(`${out.join('\n')}\n`);
      ctx.progress.progress({
        phase: 'backup',
        files: counts.keys,
        bytes: counts.bytes,
        totalFiles: total,
        ...(last ? { current: printable(Buffer.from(last.key, 'base64')) } : {}),
      });
      if (!page.more || !last) break;
      start = Buffer.concat([Buffer.from(last.key, 'base64'), Buffer.from([0])]);
      if (pageBytes > 8 << 20) limit = Math.max(1, limit >> 1);
      else if (pageBytes < 1 << 20) limit = Math.min(4096, limit * 2);
    }
  }
  yield Buffer.from(`${JSON.stringify({ end: true, keys: counts.keys })}\n`);
}

/** Sorted in etcd's (byte) order, duplicates and prefixes covered by a shorter one dropped. */
function normalizePrefixes(prefixes: string[]): string[] {
  const sorted = [...new Set(prefixes)].sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)));
  const kept: string[] = [];
  for (const p of sorted) if (!kept.some((k) => p.startsWith(k))) kept.push(p);
  return kept;
}

/** The part of a snapshot (taken with `backedUp`) that a restore limited to `chosen` covers. */
function restoreScope(backedUp: string[], chosen: string[]): string[] {
  if (chosen.length === 0) return normalizePrefixes(backedUp);
  const scope: string[] = [];
  for (const c of chosen) {
    for (const b of backedUp) {
      if (c.startsWith(b)) scope.push(c);
      else if (b.startsWith(c)) scope.push(b);
    }
  }
  if (scope.length === 0) {
    throw new CairnError(
      'Cairn.Usage',
      `the snapshot holds no keys under ${chosen.map((c) => JSON.stringify(c)).join(', ')} (it was taken with --etcd-prefix ${backedUp.map((b) => JSON.stringify(b)).join(', ')})`,
    );
  }
  return normalizePrefixes(scope);
}

function parseRename(spec: string): { from: string; to: string; fromBytes: Buffer; toBytes: Buffer } {
  const colon = spec.indexOf(':');
  if (colon < 0)
    throw new CairnError('Cairn.Usage', `--rename-prefix ${JSON.stringify(spec)}: expected OLD:NEW`, {
      hint: 'e.g. --rename-prefix /app/:/app-restored/ (OLD cannot contain a colon)',
    });
  const from = spec.slice(0, colon);
  const to = spec.slice(colon + 1);
  return { from, to, fromBytes: Buffer.from(from), toBytes: Buffer.from(to) };
}

/** etcd's range for a prefix: [prefix, prefix with its last byte below 0xff incremented); the empty prefix is every key. */
function prefixRange(prefix: string): { key: Buffer; end: Buffer } {
  const key = Buffer.from(prefix);
  for (let i = key.length - 1; i >= 0; i--) {
    if (key[i]! < 0xff) {
      const end = Buffer.from(key.subarray(0, i + 1));
      end[i] = key[i]! + 1;
      return { key, end };
    }
  }
  return { key: key.length ? key : Buffer.from([0]), end: Buffer.from([0]) };
}

function startsWith(key: Buffer, prefix: Buffer): boolean {
  return key.length >= prefix.length && key.subarray(0, prefix.length).equals(prefix);
}

function b64(data: Buffer): string {
  return data.toString('base64');
}

/** A key for messages: UTF-8 when it is, else hex. */
function printable(key: Buffer): string {
  const text = key.toString('utf8');
  return Buffer.from(text).equals(key) && !/[\p{Cc}]/u.test(text) ? text : `0x${key.toString('hex')}`;
}

interface EtcdClient {
  call<T = unknown>(path: string, body: unknown, doing: string, options?: { resize?: () => void }): Promise<T>;
}

interface GatewayError {
  error?: string;
  message?: string;
  code?: number;
}

/**
 * A small client of etcd's v3 JSON gateway over node:http(s): TLS with a CA and
 * client certificate, password auth (a token from /v3/auth/authenticate, taken
 * again when it expires), and the next endpoint when one cannot be reached.
 */
async function connect(options: Options, ctx: EngineContext): Promise<EtcdClient> {
  const env = ctx.env;
  const readPem = async (file: string | undefined, what: string): Promise<Buffer | undefined> => {
    if (!file) return undefined;
    try {
      return await readFile(file);
    } catch (error) {
      throw new CairnError('Cairn.Usage', `cannot read the etcd ${what} ${file}: ${errorMessage(error)}`, { cause: error });
    }
  };
  const tls: RequestOptions = {};
  const ca = await readPem(options.cacert ?? env.ETCDCTL_CACERT, 'CA file');
  const cert = await readPem(options.cert ?? env.ETCDCTL_CERT, 'client certificate');
  const key = await readPem(options.key ?? env.ETCDCTL_KEY, 'client key');
  if (ca) tls.ca = ca;
  if (cert) tls.cert = cert;
  if (key) tls.key = key;
  const list = options.endpoints ?? env.ETCDCTL_ENDPOINTS ?? `${ca || cert ? 'https' : 'http'}://${options.host}:${options.port}`;
  const endpoints = (Array.isArray(list) ? list : list.split(','))
    .map((e) => e.trim())
    .filter(Boolean)
    .map((e) => {
      try {
        return new URL(e.includes('://') ? e : `${ca || cert ? 'https' : 'http'}://${e}`);
      } catch {
        throw new CairnError('Cairn.Usage', `etcd endpoint ${JSON.stringify(e)} is not a URL`, {
          hint: 'give --etcd-endpoints https://host:2379,...',
        });
      }
    });
  if (endpoints.length === 0)
    throw new CairnError('Cairn.Usage', 'no etcd endpoint given', { hint: 'give --etcd-endpoints URL,... or --db-host/--db-port' });
  let user = options.user ?? env.ETCDCTL_USER;
  let password = await databasePassword(options.passwordFile, env, 'ETCDCTL_PASSWORD');
  if (user?.includes(':') && password === undefined)
    [user, password] = [user.slice(0, user.indexOf(':')), user.slice(user.indexOf(':') + 1)];
  let current = 0;
  let token: string | undefined;

  const send = async (path: string, body: unknown, doing: string): Promise<{ status: number; json: unknown }> => {
    const failures: string[] = [];
    for (let tried = 0; tried < endpoints.length; tried++) {
      const url = new URL(path, endpoints[current]);
      try {
        return await post(url, JSON.stringify(body), tls, token, ctx.signal);
      } catch (error) {
        if (ctx.signal?.aborted) throw error;
        failures.push(`${endpoints[current]!.origin}: ${errorMessage(error)}`);
        current = (current + 1) % endpoints.length;
      }
    }
    throw new CairnError('Cairn.Failure', `${doing} failed: etcd is not reachable (${failures.join('; ')})`, {
      hint: 'check that etcd runs and --etcd-endpoints (or --db-host/--db-port); for TLS give --etcd-cacert (and --etcd-cert/--etcd-key)',
    });
  };
  const authenticate = async (): Promise<void> => {
    if (user === undefined) return;
    token = undefined;
    const answer = await send('/v3/auth/authenticate', { name: user, password: password ?? '' }, 'logging in to etcd');
    const json = answer.json as GatewayError & { token?: string };
    if (answer.status !== 200 || !json.token) throw gatewayError(json, 'logging in to etcd', answer.status);
    token = json.token;
  };
  await authenticate();

  return {
    async call<T>(path: string, body: unknown, doing: string, opts: { resize?: () => void } = {}): Promise<T> {
      for (let attempt = 0; ; attempt++) {
        const answer = await send(path, body, doing);
        if (answer.status === 200) return answer.json as T;
        const json = answer.json as GatewayError;
        const message = json.message ?? json.error ?? '';
        if (attempt < 3 && user !== undefined && /invalid auth token|token.*expired/i.test(message)) {
          await authenticate();
          continue;
        }
        // A page larger than the gateway's message limit: ask again for fewer keys.
        if (attempt < 20 && opts.resize && (json.code === 8 || /larger than max/i.test(message))) {
          opts.resize();
          const limited = body as { limit?: number };
          if (typeof limited.limit === 'number' && limited.limit > 1) limited.limit = Math.max(1, limited.limit >> 1);
          continue;
        }
        throw gatewayError(json, doing, answer.status);
      }
    },
  };
}

function gatewayError(json: GatewayError, doing: string, status: number): CairnError {
  const message = json.message ?? json.error ?? `HTTP ${status}`;
  let hint: string | undefined;
  if (/permission denied/i.test(message)) hint = 'the etcd user lacks a role with read (backup) or readwrite (restore) on these prefixes';
  else if (/user name is empty|authentication failed|invalid auth token/i.test(message))
    hint = 'etcd has auth enabled: give --db-user and the password (CAIRN_DB_PASSWORD or --db-password-file)';
  else if (/compacted/i.test(message)) hint = 'etcd compacted the pinned revision while the backup read it: run the backup again';
  else if (/too large|too many operations/i.test(message))
    hint = "lower the batch (engine options batchOps/batchBytes) or raise etcd's --max-request-bytes / --max-txn-ops";
  return new CairnError('Cairn.Failure', `${doing} failed: etcd answered: ${message}`, hint ? { hint } : {});
}

function post(
  url: URL,
  body: string,
  tls: RequestOptions,
  token: string | undefined,
  signal: AbortSignal | undefined,
): Promise<{ status: number; json: unknown }> {
  return new Promise((resolve, reject) => {
    const request = (url.protocol === 'https:' ? httpsRequest : httpRequest)(
      url,
      {
        ...tls,
        method: 'POST',
        headers: {
          'content-type': 'application/json',
          'content-length': Buffer.byteLength(body),
          ...(token ? { authorization: token } : {}),
        },
        timeout: 60_000,
        ...(signal ? { signal } : {}),
      },
      (response) => {
        const chunks: Buffer[] = [];
        response.on('data', (chunk: Buffer) => chunks.push(chunk));
        response.on('error', reject);
        response.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          try {
            resolve({ status: response.statusCode ?? 0, json: text ? JSON.parse(text) : {} });
          } catch {
            reject(new Error(`HTTP ${response.statusCode}: ${text.slice(0, 200)}`));
          }
        });
      },
    );
    request.on('timeout', () => request.destroy(new Error('no answer within 60 s')));
    request.on('error', reject);
    request.end(body);
  });
}
