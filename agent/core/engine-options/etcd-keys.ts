import { z } from 'zod';
import { collectValues, connectionFlags, etcdConnectionFlags } from './flags.ts';
import { etcdConnectionShape } from './connection.ts';
import { defineEngineSpec, type EngineFlag } from './spec.ts';

const prefixFlag: EngineFlag = {
  flags: '--etcd-prefix <prefix>',
  description: 'etcd-keys: keys under this prefix only (repeatable)',
  help: {
    backup: 'etcd-keys: back up only keys under this prefix (repeatable; default: every key)',
    restore: "etcd-keys: restore only the snapshot's keys under this prefix (repeatable)",
  },
  key: 'prefixes',
  commands: ['backup', 'restore'],
  parse: collectValues,
  repeatable: true,
};

/** etcd keys through the v3 JSON gateway, at one revision, restorable into any running etcd. */
export const etcdKeysSpec = defineEngineSpec({
  name: 'etcd-keys',
  description: 'etcd v3 keys at one revision, by prefix, through the API; restores into any running etcd (rename, clear)',
  schema: z.object({
    ...etcdConnectionShape,
    user: z.string().optional(),
    passwordFile: z.string().optional(),
    /** Backup: the key prefixes to back up (none = every key). Restore: restore only keys under these. */
    prefixes: z.array(z.string()).default([]),
    /** Restore: delete every key under the target prefixes first. */
    clearPrefix: z.boolean().default(false),
    /** Restore: `old:new` rewrites the key prefix `old` to `new`; every restored key must start with `old`. */
    renamePrefix: z
      .string()
      .regex(/^[^:]*:/, 'OLD:NEW (OLD cannot contain a colon)')
      .optional(),
    /** Restore: write over keys that exist under the target prefixes (others stay). */
    force: z.boolean().default(false),
    /** Restore: puts per transaction (etcd's --max-txn-ops is 128 by default) and bytes per transaction (--max-request-bytes is 1.5 MiB). */
    batchOps: z.coerce.number().int().min(1).max(10_000).default(128),
    batchBytes: z.coerce
      .number()
      .int()
      .min(1024)
      .default(1 << 20),
  }),
  flags: [
    connectionFlags.host,
    connectionFlags.port,
    connectionFlags.user,
    connectionFlags.passwordFile,
    ...Object.values(etcdConnectionFlags),
    prefixFlag,
    {
      flags: '--clear-prefix',
      description: 'etcd-keys: delete every key under the target prefix(es) before restoring',
      key: 'clearPrefix',
      commands: ['restore'],
    },
    {
      flags: '--rename-prefix <old:new>',
      description: 'etcd-keys: restore keys under OLD as NEW (every restored key must start with OLD)',
      key: 'renamePrefix',
      commands: ['restore'],
    },
    {
      flags: '--force',
      description: 'etcd-keys: write over keys that exist under the target prefixes',
      key: 'force',
      commands: ['restore'],
      commandFlag: true,
    },
  ],
  capabilities: { kind: 'logical', drill: true },
});
