import { createReadStream, createWriteStream } from 'node:fs';
import { rm, statfs } from 'node:fs/promises';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import type { z } from 'zod';
import { etcdSpec } from '../core/engine-options/etcd.ts';
import { CairnError, errorMessage } from '../core/errors.ts';
import { etcdctlEnvironment, resolveEtcdConnection, type EtcdConnection } from './etcd-connection.ts';
import { ProcessError, run } from '../process/run.ts';
import { parseEngineOptions, requireEmptyTarget } from './engine-helpers.ts';
import { drillEtcdSnapshot, etcdDrillTools, memberDigest, type MemberDigest } from './etcd-drill.ts';
import type { Engine, EngineContext } from './engine.ts';

export { etcdSpec };
type Options = z.infer<typeof etcdSpec.schema>;

const SNAPSHOT_FILE = 'etcd.snapshot';

/**
 * etcd: `etcdctl snapshot save` of a running member. It can only write a file
 * (a named exception to streaming, docs/contracts.md): the file goes to a private
 * temp directory after a free-space check against the member's database size,
 * is stored, and is removed. The revision is recorded. Restore runs
 * `etcdctl snapshot restore` into a new, empty data directory. The member is
 * reached through the endpoints and TLS files of the options (etcdctl's own
 * variables otherwise); a snapshot comes from one member, the first of the
 * endpoints that answers.
 */
export const etcdEngine: Engine<Options> = {
  name: etcdSpec.name,
  description: etcdSpec.description,
  spec: etcdSpec,
  requires: ['etcdctl (v3 API)', 'free temp space about the size of the member database'],

  parseOptions(raw) {
    return parseEngineOptions('etcd', etcdSpec.schema, raw);
  },

  async check(options, ctx) {
    await firstMember(await resolveEtcdConnection(options, ctx.env), ctx);
  },

  async backup(options, sink, ctx) {
    const member = await firstMember(await resolveEtcdConnection(options, ctx.env), ctx);
    const status = JSON.parse(
      (await etcdctl(ctx, member, ['endpoint', 'status', '-w', 'json'], 'reading the member status')).stdout,
    ) as Array<{ Status: { dbSize: number; header: { revision: number; cluster_id: number; member_id: number } } }>;
    const dbSize = status[0]?.Status.dbSize ?? 0;
    const space = await statfs(ctx.tempDir);
    if (space.bavail * space.bsize < dbSize * 1.2 + (64 << 20)) {
      throw new CairnError('Cairn.Failure', `not enough free space in ${ctx.tempDir} for the etcd snapshot (${dbSize} bytes needed)`, {
        hint: 'point --temp-dir at a filesystem with more free space',
      });
    }
    const file = join(ctx.tempDir, SNAPSHOT_FILE);
    await etcdctl(ctx, member, ['snapshot', 'save', file], 'saving the snapshot');
    const info = JSON.parse((await etcdctl(ctx, undefined, ['snapshot', 'status', file, '-w', 'json'], 'reading the snapshot')).stdout) as {
      hash: number;
      revision: number;
      totalKey: number;
      totalSize: number;
    };
    // What a drill compares its private member with: the keys and their HashKV at the snapshot's revision, read from the same member.
    let digest: MemberDigest | undefined;
    try {
      digest = await memberDigest(async (args, doing) => (await etcdctl(ctx, member, [...args], doing)).stdout, info.revision);
    } catch (error) {
      if (ctx.signal?.aborted) throw error;
      ctx.progress.warn(
        `could not read the key count and HashKV at revision ${info.revision} (${errorMessage(error)}); a drill of this snapshot cannot compare its keys`,
      );
    }
    await sink.addStream(SNAPSHOT_FILE, createReadStream(file));
    await rm(file, { force: true });
    return {
      revision: info.revision,
      totalKeys: info.totalKey,
      hash: info.hash,
      dbSize: info.totalSize,
      clusterId: String(status[0]?.Status.header.cluster_id ?? ''),
      ...(digest ?? {}),
    };
  },

  async restore(options, source, ctx) {
    const target = await requireEmptyTarget(ctx.target.directory, "the new etcd member's data directory");
    await rm(target, { recursive: true, force: true }); // etcdctl creates it and refuses an existing one
    const file = join(ctx.tempDir, SNAPSHOT_FILE);
    await pipeline(source.open(SNAPSHOT_FILE), createWriteStream(file, { mode: 0o600 }));
    const peer = options.initialAdvertisePeerUrls ?? 'http://127.0.0.1:2380';
    await etcdctl(
      ctx,
      undefined,
      [
        'snapshot',
        'restore',
        file,
        '--data-dir',
        target,
        '--name',
        options.name,
        '--initial-cluster',
        options.initialCluster ?? `${options.name}=${peer}`,
        '--initial-advertise-peer-urls',
        peer,
        '--initial-cluster-token',
        options.initialClusterToken,
      ],
      'restoring the snapshot',
    );
    await rm(file, { force: true });
  },

  drillTools: etcdDrillTools,

  /** The snapshot restored into a private member (loopback, fresh cluster identity); revision, key count and HashKV compared. */
  async drill(source, ctx) {
    return drillEtcdSnapshot(source, ctx);
  },
};

/**
 * The first endpoint whose member is healthy, as a connection to it alone
 * (`etcdctl snapshot save` takes exactly one endpoint).
 */
async function firstMember(connection: EtcdConnection, ctx: EngineContext): Promise<EtcdConnection> {
  const failures: string[] = [];
  for (const endpoint of connection.endpoints) {
    const member = { ...connection, endpoints: [endpoint] };
    try {
      await etcdctl(ctx, member, ['endpoint', 'health'], `checking the member at ${endpoint.origin}`);
      return member;
    } catch (error) {
      if (ctx.signal?.aborted) throw error;
      failures.push(errorMessage(error));
    }
  }
  throw new CairnError('Cairn.Failure', `etcd is not reachable: no member answered (${failures.join('; ')})`, {
    hint: 'check that etcd runs and --etcd-endpoints (or --db-host/--db-port); for TLS give --etcd-cacert (and --etcd-cert/--etcd-key)',
  });
}

/** etcdctl with the member's connection in its environment (none for the offline snapshot commands). */
async function etcdctl(ctx: EngineContext, member: EtcdConnection | undefined, args: string[], doing: string): Promise<{ stdout: string }> {
  try {
    const env = member ? etcdctlEnvironment(member, ctx.env) : { ...ctx.env, ETCDCTL_API: '3' };
    return await run(['etcdctl', ...args], {
      env,
      // etcdctl has no option file: its login (ETCDCTL_USER=name:password) is granted to it alone, past the scrubbing.
      grant: member ? { ETCDCTL_USER: env.ETCDCTL_USER } : undefined,
      signal: ctx.signal,
      hint: 'install etcdctl (Debian: apt-get install etcd-client)',
    });
  } catch (error) {
    if (error instanceof ProcessError) {
      const unreachable = /connection refused|context deadline exceeded|unavailable|unhealthy/i.test(error.stderr);
      throw new CairnError('Cairn.Failure', `${doing} failed: ${error.message}`, {
        hint: unreachable
          ? 'the etcd member is not reachable: check --etcd-endpoints (or --db-host/--db-port) and the TLS files'
          : error.hint,
        cause: error,
      });
    }
    throw error;
  }
}
