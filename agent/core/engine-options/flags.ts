import { CairnError } from '../errors.ts';
import type { EngineCommand, EngineFlag, EngineSpec } from './spec.ts';

/**
 * The engine flags several engines share, defined once (the same object in
 * each spec, so the CLI adds each flag once), their parsers, and the one
 * translation from parsed flag values to engine options.
 */

/** A whole number from 1 to 64 (parallel jobs, copy threads). */
export function parseJobs(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1 || n > 64)
    throw new CairnError('Cairn.Usage', `expected a whole number from 1 to 64, got ${JSON.stringify(value)}`);
  return n;
}

/** Repeatable flags: each occurrence appends. */
export function collectValues(value: string, previous: unknown): string[] {
  return [...(Array.isArray(previous) ? (previous as string[]) : []), value];
}

const both: readonly EngineCommand[] = ['backup', 'restore'];
/** The server connection flags also serve `cairn binlog-push`, which reads a MariaDB server's binlogs. */
const server: readonly EngineCommand[] = ['backup', 'restore', 'binlog-push'];

/** How to reach a database server: every database engine takes these. */
export const connectionFlags = {
  host: { flags: '--db-host <host>', description: 'database server host', key: 'host', commands: server, env: 'CAIRN_DB_HOST' },
  port: { flags: '--db-port <port>', description: 'database server port', key: 'port', commands: server, env: 'CAIRN_DB_PORT' },
  socket: {
    flags: '--db-socket <path>',
    description: 'database server Unix socket',
    key: 'socket',
    commands: server,
    env: 'CAIRN_DB_SOCKET',
  },
  user: { flags: '--db-user <user>', description: 'database user', key: 'user', commands: server, env: 'CAIRN_DB_USER' },
  passwordFile: {
    flags: '--db-password-file <file>',
    description: 'read the database password from this file (or set CAIRN_DB_PASSWORD)',
    key: 'passwordFile',
    commands: server,
  },
} as const satisfies Record<string, EngineFlag>;

export const defaultsFileFlag: EngineFlag = {
  flags: '--db-defaults-file <file>',
  description: 'MariaDB/MySQL option file with the client settings',
  key: 'defaultsFile',
  commands: server,
};

export const databasesFlag: EngineFlag = {
  flags: '--db-name <name>',
  description: 'database to back up (repeatable; default: all)',
  key: 'databases',
  commands: ['backup'],
  parse: collectValues,
  repeatable: true,
};

export const ownerFlag: EngineFlag = {
  flags: '--owner <user>',
  description: "physical engines: give the restored data directory to this user (the database server's)",
  key: 'owner',
  commands: ['restore'],
};

/** etcd and etcd-keys reach a member the same way (etcdctl's own variables are read too). */
export const etcdConnectionFlags = {
  endpoints: {
    flags: '--etcd-endpoints <urls>',
    description: 'etcd: client URLs, comma-separated, tried in order (default: http://--db-host:--db-port)',
    key: 'endpoints',
    commands: both,
    env: 'ETCDCTL_ENDPOINTS',
  },
  cacert: {
    flags: '--etcd-cacert <file>',
    description: 'etcd: CA bundle to verify the server (TLS)',
    key: 'cacert',
    commands: both,
    env: 'ETCDCTL_CACERT',
  },
  cert: { flags: '--etcd-cert <file>', description: 'etcd: client certificate (TLS)', key: 'cert', commands: both, env: 'ETCDCTL_CERT' },
  key: { flags: '--etcd-key <file>', description: 'etcd: client certificate key (TLS)', key: 'key', commands: both, env: 'ETCDCTL_KEY' },
} as const satisfies Record<string, EngineFlag>;

/** The flag's help on this command. */
export function flagHelp(flag: EngineFlag, command: EngineCommand): string {
  return flag.help?.[command] ?? flag.description;
}

/** The long flag of a commander flag string: `--db-host <host>` → `--db-host`. */
export function longFlag(flag: EngineFlag): string {
  const long = flag.flags.split(/[ ,|]+/).find((part) => part.startsWith('--'));
  if (!long) throw new CairnError('Cairn.Usage', `engine flag ${JSON.stringify(flag.flags)} has no long form`);
  return long;
}

/** Commander's attribute name for a flag: `--db-host` → `dbHost` (what `command.opts()` holds). */
export function flagAttribute(flag: EngineFlag): string {
  return longFlag(flag)
    .slice(2)
    .replace(/-([a-z])/g, (_, c: string) => c.toUpperCase());
}

/**
 * The flags a command takes for these engines, each once. Engines share a
 * flag by sharing its object; two different flags with one long name would
 * fill two keys from one value, so that is refused (a test runs this over the
 * shipped engines).
 */
export function collectEngineFlags(specs: Iterable<EngineSpec>, command: EngineCommand): EngineFlag[] {
  const byName = new Map<string, { flag: EngineFlag; engine: string }>();
  for (const spec of specs) {
    for (const flag of spec.flags) {
      if (!flag.commands.includes(command)) continue;
      const name = longFlag(flag);
      const seen = byName.get(name);
      if (seen && seen.flag !== flag && (seen.flag.key !== flag.key || seen.flag.flags !== flag.flags || seen.flag.parse !== flag.parse)) {
        throw new CairnError('Cairn.Usage', `engines ${seen.engine} and ${spec.name} define ${name} differently`, {
          hint: 'share one flag object (core/engine-options/flags.ts) or give one of them another name',
        });
      }
      if (!seen) byName.set(name, { flag, engine: spec.name });
    }
  }
  return [...byName.values()].map((v) => v.flag);
}

/**
 * The engine options a command's parsed flags give one engine: each of the
 * engine's flags for the command, read under its commander attribute name,
 * lands under its key; flags not given (and repeatable ones still empty) are
 * left out, so the engine's schema defaults apply.
 */
export function engineOptionsFromFlags(spec: EngineSpec, command: EngineCommand, values: Record<string, unknown>): Record<string, unknown> {
  const options: Record<string, unknown> = {};
  for (const flag of spec.flags) {
    if (!flag.commands.includes(command)) continue;
    const value = values[flagAttribute(flag)];
    if (value === undefined || (Array.isArray(value) && value.length === 0)) continue;
    options[flag.key] = value;
  }
  return options;
}
