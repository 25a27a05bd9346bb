import { Option, type Command } from 'commander';
import { collect, positiveInt } from './context.ts';

/**
 * The engine-specific flags (connection, etcd, --jobs, --parallel, ...) of
 * every command that runs an engine, in one table: which engine option each
 * fills, and which commands take it. Two functions use the table:
 * `addEngineFlags` adds a command's flags, `engineOptionsFrom` turns its parsed
 * flags into the raw engine options the engine's schema then validates.
 * (The table is meant to be generated from the engines' option schemas.)
 */
export type EngineCommand = 'backup' | 'restore' | 'binlog-push';

interface EngineFlag {
  /** Commander's flag syntax, e.g. '--db-host <host>'. */
  flags: string;
  /** The engine option it fills. */
  option: string;
  /** Help text: one for every command, or per command. */
  help: string | Partial<Record<EngineCommand, string>>;
  commands: readonly EngineCommand[];
  /** Read from this environment variable when the flag is not given. */
  env?: string;
  /** Repeatable: the values are collected into a list (an empty list is left out). */
  repeatable?: boolean;
  parse?: (value: string) => unknown;
}

const CONNECTION: readonly EngineCommand[] = ['backup', 'restore', 'binlog-push'];

// Database connection flags: each also reads an environment variable; the password only from a file or CAIRN_DB_PASSWORD.
const ENGINE_FLAGS: readonly EngineFlag[] = [
  { flags: '--db-host <host>', option: 'host', help: 'database server host', commands: CONNECTION, env: 'CAIRN_DB_HOST' },
  { flags: '--db-port <port>', option: 'port', help: 'database server port', commands: CONNECTION, env: 'CAIRN_DB_PORT' },
  { flags: '--db-socket <path>', option: 'socket', help: 'database server Unix socket', commands: CONNECTION, env: 'CAIRN_DB_SOCKET' },
  { flags: '--db-user <user>', option: 'user', help: 'database user', commands: CONNECTION, env: 'CAIRN_DB_USER' },
  {
    flags: '--db-password-file <file>',
    option: 'passwordFile',
    help: 'read the database password from this file (or set CAIRN_DB_PASSWORD)',
    commands: CONNECTION,
  },
  {
    flags: '--db-defaults-file <file>',
    option: 'defaultsFile',
    help: 'MariaDB/MySQL option file with the client settings',
    commands: CONNECTION,
  },
  {
    flags: '--db-name <name>',
    option: 'databases',
    help: 'database to back up (repeatable; default: all)',
    commands: ['backup'],
    repeatable: true,
  },
  {
    flags: '--parallel <n>',
    option: 'parallel',
    help: 'mariadb engine: files copied at once by mariabackup',
    commands: ['backup'],
    parse: positiveInt,
  },
  {
    flags: '--owner <user>',
    option: 'owner',
    help: "physical engines: give the restored data directory to this user (the database server's)",
    commands: ['restore'],
  },
  {
    flags: '--jobs <n>',
    option: 'jobs',
    help: 'pgdump: parallel pg_restore jobs (above 1 the dump is written to --temp-dir first)',
    commands: ['restore'],
    parse: positiveInt,
  },
  {
    flags: '--etcd-prefix <prefix>',
    option: 'prefixes',
    help: {
      backup: 'etcd-keys: back up only keys under this prefix (repeatable; default: every key)',
      restore: "etcd-keys: restore only the snapshot's keys under this prefix (repeatable)",
    },
    commands: ['backup', 'restore'],
    repeatable: true,
  },
  {
    flags: '--etcd-endpoints <urls>',
    option: 'endpoints',
    help: 'etcd-keys: client URLs, comma-separated (default: http://--db-host:--db-port)',
    commands: ['backup', 'restore'],
    env: 'ETCDCTL_ENDPOINTS',
  },
  {
    flags: '--etcd-cacert <file>',
    option: 'cacert',
    help: 'etcd-keys: CA bundle to verify the server (TLS)',
    commands: ['backup', 'restore'],
    env: 'ETCDCTL_CACERT',
  },
  {
    flags: '--etcd-cert <file>',
    option: 'cert',
    help: 'etcd-keys: client certificate (TLS)',
    commands: ['backup', 'restore'],
    env: 'ETCDCTL_CERT',
  },
  {
    flags: '--etcd-key <file>',
    option: 'key',
    help: 'etcd-keys: client certificate key (TLS)',
    commands: ['backup', 'restore'],
    env: 'ETCDCTL_KEY',
  },
  { flags: '--etcd-name <name>', option: 'name', help: "etcd: the restored member's name (default: default)", commands: ['restore'] },
  {
    flags: '--etcd-initial-cluster <list>',
    option: 'initialCluster',
    help: 'etcd: name=peerURL,... of the new cluster',
    commands: ['restore'],
  },
  {
    flags: '--etcd-initial-advertise-peer-urls <urls>',
    option: 'initialAdvertisePeerUrls',
    help: "etcd: the restored member's peer URLs (default: http://127.0.0.1:2380)",
    commands: ['restore'],
  },
  {
    flags: '--clear-prefix',
    option: 'clearPrefix',
    help: 'etcd-keys: delete every key under the target prefix(es) before restoring',
    commands: ['restore'],
  },
  {
    flags: '--rename-prefix <old:new>',
    option: 'renamePrefix',
    help: 'etcd-keys: restore keys under OLD as NEW (every restored key must start with OLD)',
    commands: ['restore'],
  },
];

function optionOf(flag: EngineFlag, command: EngineCommand): Option {
  const help = typeof flag.help === 'string' ? flag.help : (flag.help[command] ?? '');
  const option = new Option(flag.flags, help);
  if (flag.env) option.env(flag.env);
  if (flag.repeatable) option.argParser(collect).default([]);
  else if (flag.parse) option.argParser(flag.parse);
  return option;
}

/** Adds the engine flags `command` takes. */
export function addEngineFlags(cmd: Command, command: EngineCommand): Command {
  for (const flag of ENGINE_FLAGS) if (flag.commands.includes(command)) cmd.addOption(optionOf(flag, command));
  return cmd;
}

/** The raw engine options of a command's parsed flags: only what was given (or read from the environment). */
export function engineOptionsFrom(flags: Record<string, unknown>, command: EngineCommand): Record<string, unknown> {
  const options: Record<string, unknown> = {};
  for (const flag of ENGINE_FLAGS) {
    if (!flag.commands.includes(command)) continue;
    const value = flags[optionOf(flag, command).attributeName()];
    if (value === undefined || (Array.isArray(value) && value.length === 0)) continue;
    options[flag.option] = value;
  }
  return options;
}
