import { z } from 'zod';
import { connectionFlags, etcdConnectionFlags } from './flags.ts';
import { etcdConnectionShape } from './connection.ts';
import { defineEngineSpec } from './spec.ts';

/** `etcdctl snapshot save` of a running member, restored with `etcdctl snapshot restore` into a new member's data directory. */
export const etcdSpec = defineEngineSpec({
  name: 'etcd',
  description: 'etcd v3 snapshot of a running member (etcdctl snapshot save), revision recorded',
  schema: z.object({
    ...etcdConnectionShape,
    /** With auth on: the user, and its password from passwordFile (else CAIRN_DB_PASSWORD or ETCDCTL_PASSWORD), handed to etcdctl through its environment. */
    user: z.string().optional(),
    passwordFile: z.string().optional(),
    /** Restore: the new member's name and cluster, as `etcdctl snapshot restore` takes them. */
    name: z.string().default('default'),
    initialCluster: z.string().optional(),
    initialAdvertisePeerUrls: z.string().optional(),
    initialClusterToken: z.string().default('etcd-cluster'),
  }),
  flags: [
    connectionFlags.host,
    connectionFlags.port,
    connectionFlags.user,
    connectionFlags.passwordFile,
    ...Object.values(etcdConnectionFlags),
    { flags: '--etcd-name <name>', description: "etcd: the restored member's name (default: default)", key: 'name', commands: ['restore'] },
    {
      flags: '--etcd-initial-cluster <list>',
      description: 'etcd: name=peerURL,... of the new cluster',
      key: 'initialCluster',
      commands: ['restore'],
    },
    {
      flags: '--etcd-initial-advertise-peer-urls <urls>',
      description: "etcd: the restored member's peer URLs (default: http://127.0.0.1:2380)",
      key: 'initialAdvertisePeerUrls',
      commands: ['restore'],
    },
  ],
  capabilities: { kind: 'physical', drill: true },
});
