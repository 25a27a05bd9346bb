import { createInterface } from 'node:readline';
import { Readable } from 'node:stream';
import type { z } from 'zod';
import { etcdKeysSpec } from '../core/engine-options/etcd-keys.ts';
import { CairnError } from '../core/errors.ts';
import { connectGateway, type EtcdClient, type GatewayHeader as Header } from './etcd-gateway.ts';
import { parseEngineOptions } from './engine-helpers.ts';
import { drillEtcdKeys, etcdDrillTools, KeysDigest } from './etcd-drill.ts';
import type { Engine, EngineContext, EngineMetadata, SnapshotSource } from './engine.ts';
import { b64, normalizePrefixes, parseRename, prefixRange, printable, restoreScope, startsWith } from './etcd-key-ranges.ts';

export { etcdKeysSpec };
type Options = z.infer<typeof etcdKeysSpec.schema>;

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
  name: etcdKeysSpec.name,
  description: etcdKeysSpec.description,
  spec: etcdKeysSpec,
  requires: [
    'network access to the etcd client URL (v3 JSON gateway, etcd ≥ 3.4)',
    'backup: read on the prefixes; restore: readwrite on the target prefixes (when auth is on)',
  ],

  parseOptions(raw) {
    const options = parseEngineOptions('etcd-keys', etcdKeysSpec.schema, raw);
    if (options.renamePrefix !== undefined) parseRename(options.renamePrefix);
    return options;
  },

  async check(options, ctx) {
    const client = await connectGateway(options, ctx);
    await client.call('/v3/maintenance/status', {}, 'checking the member');
  },

  async backup(options, sink, ctx) {
    const client = await connectGateway(options, ctx);
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
    const counts = { keys: 0, bytes: 0, digest: new KeysDigest() };
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
      // A drill loads the keys into a private member and compares what it reads back with this.
      keysSha256: counts.digest.hex(),
      leasesRestored: false,
    } satisfies EngineMetadata;
  },

  async restore(options, source, ctx) {
    await restoreFrom(options, source, ctx);
  },

  drillTools: etcdDrillTools,

  /** Loads the keys into a private member with the engine's own restore (no options of the plan's), then reads them back. */
  async drill(source, ctx) {
    return drillEtcdKeys(source, ctx, (member, memberCtx) =>
      restoreFrom(parseEngineOptions('etcd-keys', etcdKeysSpec.schema, member), source, memberCtx),
    );
  },
};

async function restoreFrom(options: Options, source: SnapshotSource, ctx: EngineContext): Promise<void> {
  const input = source.open(KEYS_FILE);
  const reader = createInterface({ input, crlfDelay: Infinity });
  try {
    await restoreKeys(options, source.metadata, reader[Symbol.asyncIterator](), ctx);
  } finally {
    reader.close();
    input.destroy();
  }
}

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

  const client = await connectGateway(options, ctx);
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
  counts: { keys: number; bytes: number; digest: KeysDigest },
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
        counts.digest.add(Buffer.from(kv.key, 'base64'), Buffer.from(kv.value ?? '', 'base64'));
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
