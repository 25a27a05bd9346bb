import { createHash } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { CairnError } from '../core/errors.ts';
import { drillEnvironment, skippedCheck, timedCheck } from './drill-tools.ts';
import type { DrillCheck, DrillContext, DrillTool, EngineContext, EngineMetadata, SnapshotSource } from './engine.ts';
import { connectGateway } from './etcd-gateway.ts';
import { b64, prefixRange } from './etcd-key-ranges.ts';
import {
  DRILL_MEMBER_NAME,
  drillCertificates,
  drillClusterToken,
  drillPeerUrl,
  loopbackPort,
  offlineEtcdctl,
  startPrivateEtcd,
  type PrivateEtcd,
} from './private-etcd.ts';

/**
 * The drills of both etcd engines. Each starts a private member (private-etcd.ts:
 * loopback ports that take only clients with the drill's own TLS certificate,
 * a fresh cluster identity, its own data directory under the drill's scratch
 * directory) and compares what that member holds with what the
 * backup recorded: the revision, the number of keys and a hash of them. Neither
 * drill reads the plan's endpoints, TLS files or login, nor the ETCD_* and
 * ETCDCTL_* variables, so it cannot reach the production cluster.
 */

export const etcdDrillTools: readonly DrillTool[] = [
  { names: ['etcd'], package: 'etcd-server' },
  { names: ['etcdctl'], package: 'etcd-client' },
  // The private member's certificates (private-etcd.ts, drillCertificates).
  { names: ['openssl'], package: 'openssl' },
];

const SNAPSHOT_FILE = 'etcd.snapshot';

/** `etcdctl snapshot status`, parsed. */
interface SnapshotStatus {
  hash: number;
  revision: number;
  totalKey: number;
  totalSize: number;
}

/** What the etcd engine records besides the snapshot status: the member's key count and HashKV at the snapshot's revision. */
export interface MemberDigest {
  keyCount: number;
  hashKv: number;
  /** The compaction point HashKV was taken at (-1: never compacted); the hash covers the revisions after it. */
  hashKvCompactRevision: number;
}

/** Reads the key count and HashKV of a member at a revision (the etcd engine's backup, and its drill). */
export async function memberDigest(
  ctl: (args: readonly string[], doing: string) => Promise<string>,
  revision: number,
): Promise<MemberDigest> {
  const counted = JSON.parse(
    await ctl(['get', '', '--from-key', '--keys-only', '--limit', '1', '--rev', String(revision), '-w', 'json'], 'counting the keys'),
  ) as { count?: number };
  const hashed = JSON.parse(await ctl(['endpoint', 'hashkv', '--rev', String(revision), '-w', 'json'], 'hashing the keys')) as Array<{
    HashKV?: { hash?: number; compact_revision?: number };
  }>;
  const hashKv = hashed[0]?.HashKV;
  if (hashKv?.hash === undefined) throw new CairnError('Cairn.Failure', 'etcdctl endpoint hashkv returned no hash');
  return { keyCount: counted.count ?? 0, hashKv: hashKv.hash, hashKvCompactRevision: hashKv.compact_revision ?? -1 };
}

/**
 * etcd (physical): the snapshot file's status against the recorded one, `etcdctl
 * snapshot restore` (which verifies the SHA-256 `snapshot save` appended) into a
 * private member with a fresh identity, then that member's revision, key count
 * and HashKV at the snapshot's revision against the backup's.
 */
export async function drillEtcdSnapshot(source: SnapshotSource, ctx: DrillContext): Promise<DrillCheck[]> {
  const metadata = source.metadata;
  const env = drillEnvironment(ctx.env);
  const checks: DrillCheck[] = [];
  const file = join(ctx.tempDir, SNAPSHOT_FILE);
  const peerPort = await loopbackPort();
  const token = drillClusterToken();
  const dataDir = join(ctx.tempDir, 'member');
  const peer = drillPeerUrl(peerPort);

  const restore = await timedCheck('restore', 'restore', ctx.signal, async () => {
    await pipeline(source.open(SNAPSHOT_FILE), createWriteStream(file, { mode: 0o600 }));
    await offlineEtcdctl(
      [
        'snapshot',
        'restore',
        file,
        '--data-dir',
        dataDir,
        '--name',
        DRILL_MEMBER_NAME,
        '--initial-cluster',
        `${DRILL_MEMBER_NAME}=${peer}`,
        '--initial-advertise-peer-urls',
        peer,
        '--initial-cluster-token',
        token,
      ],
      'etcdctl snapshot restore',
      env,
      ctx.signal,
    );
    return { ok: true, found: 'etcdctl snapshot restore verified the snapshot file and wrote a new member with a fresh cluster identity' };
  });
  checks.push(restore);

  checks.push(
    await timedCheck('snapshot status', 'check', ctx.signal, async () => {
      const status = JSON.parse(
        await offlineEtcdctl(['snapshot', 'status', file, '-w', 'json'], 'reading the snapshot', env, ctx.signal),
      ) as SnapshotStatus;
      const differences = [
        differs('hash', status.hash, metadata.hash),
        differs('revision', status.revision, metadata.revision),
        differs('total keys', status.totalKey, metadata.totalKeys),
      ].filter((d): d is string => d !== undefined);
      return differences.length === 0
        ? { ok: true, found: `revision ${status.revision}, hash ${status.hash}, ${status.totalKey} database keys, as recorded` }
        : { ok: false, found: `the snapshot file differs from what the backup recorded: ${differences.join('; ')}` };
    }),
  );
  if (!restore.ok) {
    for (const name of ['revision', 'key count', 'hash']) checks.push(skippedCheck(name, 'check', 'the snapshot could not be restored'));
    return checks;
  }

  const tls = await drillCertificates(join(ctx.tempDir, 'tls'), env, ctx.signal);
  const member = await startPrivateEtcd({ dataDir, peerPort, clusterToken: token, tls, env, signal: ctx.signal });
  try {
    checks.push(...(await compareMember(member, metadata, ctx.signal)));
  } finally {
    await member.stop();
  }
  return checks;
}

async function compareMember(member: PrivateEtcd, metadata: EngineMetadata, signal: AbortSignal | undefined): Promise<DrillCheck[]> {
  const checks: DrillCheck[] = [];
  let revision = 0;
  checks.push(
    await timedCheck('revision', 'check', signal, async () => {
      const status = JSON.parse(await member.ctl(['endpoint', 'status', '-w', 'json'], 'reading the status')) as Array<{
        Status?: { header?: { revision?: number } };
      }>;
      revision = status[0]?.Status?.header?.revision ?? 0;
      return revision === metadata.revision
        ? { ok: true, found: `the member starts at revision ${revision}, the snapshot's` }
        : { ok: false, found: `the member starts at revision ${revision}; the backup recorded ${String(metadata.revision)}` };
    }),
  );
  if (typeof metadata.keyCount !== 'number' || typeof metadata.hashKv !== 'number') {
    const why = 'the snapshot records no key count or HashKV (taken by an older Cairn): its keys cannot be compared; take a new backup';
    checks.push(skippedCheck('key count', 'check', why), skippedCheck('hash', 'check', why));
    return checks;
  }
  let digest: MemberDigest | undefined;
  const read = async (): Promise<MemberDigest> => {
    if (digest) return digest;
    const ctl = (args: readonly string[], doing: string): Promise<string> => member.ctl(args, doing);
    digest = await memberDigest(ctl, revision);
    // HashKV covers the revisions after the compaction point: when the source had compacted further than the
    // snapshot holds, compact the private member to that point too, so both hashes cover the same revisions.
    const compactedAt = typeof metadata.hashKvCompactRevision === 'number' ? metadata.hashKvCompactRevision : -1;
    if (compactedAt > digest.hashKvCompactRevision) {
      await member.ctl(['compact', String(compactedAt)], 'compacting to the recorded compaction point');
      digest = await memberDigest(ctl, revision);
    }
    return digest;
  };
  checks.push(
    await timedCheck('key count', 'check', signal, async () => {
      const { keyCount } = await read();
      return keyCount === metadata.keyCount
        ? { ok: true, found: `${keyCount} keys, as recorded`, details: { keys: keyCount } }
        : {
            ok: false,
            found: `the member holds ${keyCount} keys; the backup recorded ${String(metadata.keyCount)}`,
            details: { keys: keyCount },
          };
    }),
    await timedCheck('hash', 'check', signal, async () => {
      const { hashKv } = await read();
      return hashKv === metadata.hashKv
        ? { ok: true, found: `HashKV at revision ${revision} is ${hashKv}, as recorded` }
        : { ok: false, found: `HashKV at revision ${revision} is ${hashKv}; the backup recorded ${String(metadata.hashKv)}` };
    }),
  );
  return checks;
}

function differs(what: string, found: number, recorded: unknown): string | undefined {
  return found === recorded ? undefined : `${what} ${found}, recorded ${String(recorded)}`;
}

/** The digest of an etcd-keys snapshot: SHA-256 over each key and value, length-prefixed, in the order they are read. */
export class KeysDigest {
  private readonly hash = createHash('sha256');
  count = 0;

  add(key: Buffer, value: Buffer): void {
    const lengths = Buffer.alloc(8);
    lengths.writeUInt32BE(key.length, 0);
    lengths.writeUInt32BE(value.length, 4);
    this.hash.update(lengths).update(key).update(value);
    this.count++;
  }

  hex(): string {
    return this.hash.digest('hex');
  }
}

/** The etcd-keys engine's connection options for the private member: its URL and the drill's certificates, none of the plan's endpoints, TLS files or login. */
export interface PrivateMemberOptions {
  host: string;
  port: number;
  endpoints: string[];
  cacert: string;
  cert: string;
  key: string;
}

/**
 * etcd-keys: an empty private member, the snapshot's keys loaded into it by the
 * engine's own restore (`load`), then every key read back under the snapshot's
 * prefixes: their number and SHA-256 (KeysDigest) against the backup's.
 */
export async function drillEtcdKeys(
  source: SnapshotSource,
  ctx: DrillContext,
  load: (member: PrivateMemberOptions, ctx: EngineContext) => Promise<void>,
): Promise<DrillCheck[]> {
  const metadata = source.metadata;
  const dataDir = join(ctx.tempDir, 'keys-member');
  await mkdir(dataDir, { recursive: true, mode: 0o700 });
  const env = drillEnvironment(ctx.env);
  const member = await startPrivateEtcd({
    dataDir,
    peerPort: await loopbackPort(),
    clusterToken: drillClusterToken(),
    tls: await drillCertificates(join(ctx.tempDir, 'tls'), env, ctx.signal),
    env,
    signal: ctx.signal,
  });
  const checks: DrillCheck[] = [];
  try {
    const url = new URL(member.clientUrl);
    const options: PrivateMemberOptions = { host: url.hostname, port: Number(url.port), endpoints: [member.clientUrl], ...member.tls };
    // The engine's restore reports what it wrote as warnings: in a drill that is the load check's finding, not a warning.
    const quiet: EngineContext = {
      env,
      signal: ctx.signal,
      tempDir: ctx.tempDir,
      progress: { progress: (event) => ctx.progress.progress(event), warn: () => undefined },
    };
    const loaded = await timedCheck('load keys', 'restore', ctx.signal, async () => {
      await load(options, quiet);
      return { ok: true, found: "the snapshot's keys were written into a private etcd member" };
    });
    checks.push(loaded);
    if (!loaded.ok) {
      checks.push(
        skippedCheck('key count', 'check', 'the keys could not be loaded'),
        skippedCheck('hash', 'check', 'the keys could not be loaded'),
      );
      return checks;
    }
    const digest = new KeysDigest();
    const read = await timedCheck('read back', 'check', ctx.signal, async () => {
      const client = await connectGateway(options, { env, signal: ctx.signal });
      const prefixes = Array.isArray(metadata.prefixes) ? (metadata.prefixes as string[]) : [''];
      for (const prefix of prefixes) {
        const range = prefixRange(prefix);
        let start = range.key;
        for (;;) {
          ctx.signal?.throwIfAborted();
          const page = await client.call<{ kvs?: Array<{ key: string; value?: string }>; more?: boolean }>(
            '/v3/kv/range',
            { key: b64(start), range_end: b64(range.end), limit: 1000 },
            'reading the keys back',
          );
          const kvs = page.kvs ?? [];
          for (const kv of kvs) digest.add(Buffer.from(kv.key, 'base64'), Buffer.from(kv.value ?? '', 'base64'));
          const last = kvs.at(-1);
          if (!page.more || !last) break;
          start = Buffer.concat([Buffer.from(last.key, 'base64'), Buffer.from([0])]);
        }
      }
      return { ok: true, found: `${digest.count} keys read back from the private member` };
    });
    if (!read.ok) {
      checks.push(read);
      return checks;
    }
    checks.push(
      await timedCheck('key count', 'check', ctx.signal, () =>
        Promise.resolve(
          digest.count === metadata.keyCount
            ? { ok: true, found: `${digest.count} keys read back, as recorded`, details: { keys: digest.count } }
            : {
                ok: false,
                found: `${digest.count} keys read back; the backup recorded ${String(metadata.keyCount)}`,
                details: { keys: digest.count },
              },
        ),
      ),
    );
    const sha = digest.hex();
    checks.push(
      typeof metadata.keysSha256 !== 'string'
        ? skippedCheck(
            'hash',
            'check',
            'the snapshot records no hash of its keys (taken by an older Cairn): they cannot be compared; take a new backup',
          )
        : await timedCheck('hash', 'check', ctx.signal, () =>
            Promise.resolve(
              sha === metadata.keysSha256
                ? { ok: true, found: `the keys and values read back hash to ${sha.slice(0, 16)}…, as recorded` }
                : { ok: false, found: `the keys and values read back hash to ${sha}; the backup recorded ${String(metadata.keysSha256)}` },
            ),
          ),
    );
  } finally {
    await member.stop();
  }
  return checks;
}
