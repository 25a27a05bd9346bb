import { createReadStream, createWriteStream } from 'node:fs';
import { rm, statfs } from 'node:fs/promises';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { z } from 'zod';
import { CairnError } from '../core/errors.ts';
import { ProcessError, run } from '../process/run.ts';
import { parseEngineOptions, requireEmptyTarget } from './engine-helpers.ts';
import type { Engine, EngineContext } from './engine.ts';

const optionsSchema = z.object({
  host: z.string().default('127.0.0.1'),
  port: z.coerce.number().int().min(1).max(65535).default(2379),
  /** Restore: the new member's name and cluster, as `etcdctl snapshot restore` takes them. */
  name: z.string().default('default'),
  initialCluster: z.string().optional(),
  initialAdvertisePeerUrls: z.string().optional(),
  initialClusterToken: z.string().default('etcd-cluster'),
});
type Options = z.infer<typeof optionsSchema>;

const SNAPSHOT_FILE = 'etcd.snapshot';

/**
 * etcd: `etcdctl snapshot save` of a running member. It can only write a file
 * (a named exception to streaming, CONTRACTS §7): the file goes to a private
 * temp directory after a free-space check against the member's database size,
 * is stored, and is removed. The revision is recorded. Restore runs
 * `etcdctl snapshot restore` into a new, empty data directory.
 */
export const etcdEngine: Engine<Options> = {
  name: 'etcd',
  description: 'etcd v3 snapshot of a running member (etcdctl snapshot save), revision recorded',
  requires: ['etcdctl (v3 API)', 'free temp space about the size of the member database'],

  parseOptions(raw) {
    return parseEngineOptions('etcd', optionsSchema, raw);
  },

  async check(options, ctx) {
    await etcdctl(ctx, ['--endpoints', endpoint(options), 'endpoint', 'health'], 'checking the member');
  },

  async backup(options, sink, ctx) {
    const status = JSON.parse(
      (await etcdctl(ctx, ['--endpoints', endpoint(options), 'endpoint', 'status', '-w', 'json'], 'reading the member status')).stdout,
    ) as Array<{ Status: { dbSize: number; header: { revision: number; cluster_id: number; member_id: number } } }>;
    const dbSize = status[0]?.Status.dbSize ?? 0;
    const space = await statfs(ctx.tempDir);
    if (space.bavail * space.bsize < dbSize * 1.2 + (64 << 20)) {
      throw new CairnError('Cairn.Failure', `not enough free space in ${ctx.tempDir} for the etcd snapshot (${dbSize} bytes needed)`, {
        hint: 'point --temp-dir at a filesystem with more free space',
      });
    }
    const file = join(ctx.tempDir, SNAPSHOT_FILE);
    await etcdctl(ctx, ['--endpoints', endpoint(options), 'snapshot', 'save', file], 'saving the snapshot');
    const info = JSON.parse((await etcdctl(ctx, ['snapshot', 'status', file, '-w', 'json'], 'reading the snapshot')).stdout) as {
      hash: number;
      revision: number;
      totalKey: number;
      totalSize: number;
    };
    await sink.addStream(SNAPSHOT_FILE, createReadStream(file));
    await rm(file, { force: true });
    return {
      revision: info.revision,
      totalKeys: info.totalKey,
      hash: info.hash,
      dbSize: info.totalSize,
      clusterId: String(status[0]?.Status.header.cluster_id ?? ''),
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
};

function endpoint(options: Options): string {
  return `http://${options.host}:${options.port}`;
}

async function etcdctl(ctx: EngineContext, args: string[], doing: string): Promise<{ stdout: string }> {
  try {
    return await run(['etcdctl', ...args], {
      env: { ...ctx.env, ETCDCTL_API: '3' },
      signal: ctx.signal,
      hint: 'install etcdctl (Debian: apt-get install etcd-client)',
    });
  } catch (error) {
    if (error instanceof ProcessError) {
      const unreachable = /connection refused|context deadline exceeded|unavailable/i.test(error.stderr);
      throw new CairnError('Cairn.Failure', `${doing} failed: ${error.message}`, {
        hint: unreachable ? 'the etcd member is not reachable: check --db-host/--db-port' : error.hint,
        cause: error,
      });
    }
    throw error;
  }
}
