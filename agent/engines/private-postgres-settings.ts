import { join } from 'node:path';
import { run } from '../process/run.ts';

/**
 * What a private PostgreSQL server of a drill is told, on its command line and
 * on every client connection, so that nothing the restored data says can make
 * it reach production or run a program.
 *
 * A restored data directory's own postgresql.conf and postgresql.auto.conf are
 * never read (private-postgres.ts): they may name production's data directory
 * (`data_directory`), configuration files (`hba_file`, `ident_file`,
 * `include`), a pid file to overwrite (`external_pid_file`), commands to run
 * (`archive_command`, `restore_command`, `ssl_passphrase_command`…) and
 * libraries to load. The command line below sets every such setting anyway,
 * so a value reaching the server by another road (a configuration this code
 * did not foresee) still loses: `-c` is the highest source a server file can
 * be overridden with.
 *
 * The catalogs are the restored data too: `ALTER ROLE … SET` and
 * `ALTER DATABASE … SET` store settings (session_preload_libraries,
 * dynamic_library_path, search_path…) that a login applies over the command
 * line. Only what the client sends at connection time outranks them, so every
 * drill client connects with clientOptions (PGOPTIONS).
 */

/** The settings this server program knows (`postgres --describe-config`): one of another version is left out rather than failing the start. */
export async function knownSettings(binDir: string, env: NodeJS.ProcessEnv): Promise<Set<string>> {
  const { stdout } = await run([join(binDir, 'postgres'), '--describe-config'], { env });
  return new Set(
    stdout
      .split('\n')
      .map((line) => line.split('\t')[0] ?? '')
      .filter(Boolean),
  );
}

export interface OverrideInputs {
  dataDir: string;
  runDir: string;
  port: number;
  hbaFile: string;
  identFile: string;
  known: ReadonlySet<string>;
}

/**
 * The command-line settings (`-c name=value`) that confine a private server: no TCP, a socket in the
 * private run directory, the drill's own hba and ident files, no command, library, pid file or path of
 * the restored configuration, no archiving, no replication, no background worker of an extension.
 */
export function serverOverrides(inputs: OverrideInputs): Record<string, string> {
  const all: Record<string, string> = {
    data_directory: inputs.dataDir,
    hba_file: inputs.hbaFile,
    ident_file: inputs.identFile,
    external_pid_file: '',
    listen_addresses: '',
    port: String(inputs.port),
    unix_socket_directories: inputs.runDir,
    unix_socket_permissions: '0700',
    unix_socket_group: '',
    bonjour: 'off',
    ssl: 'off',
    ssl_passphrase_command: '',
    archive_mode: 'off',
    archive_command: '',
    archive_library: '',
    archive_cleanup_command: '',
    recovery_end_command: '',
    restore_command: '',
    primary_conninfo: '',
    primary_slot_name: '',
    max_logical_replication_workers: '0',
    synchronous_standby_names: '',
    shared_preload_libraries: '',
    session_preload_libraries: '',
    local_preload_libraries: '',
    // `$libdir` only: a library named without a path is looked for nowhere else.
    dynamic_library_path: '$libdir',
    jit: 'off',
    // An autovacuum ANALYZE evaluates index expressions, as the table's owner, before the drill could demote it.
    autovacuum: 'off',
    jit_provider: 'llvmjit',
    // PostgreSQL 14 and older write statistics files into this directory.
    stats_temp_directory: 'pg_stat_tmp',
    logging_collector: 'off',
    log_destination: 'stderr',
    cluster_name: 'cairn-drill',
    // PostgreSQL 17: no event trigger fires (a login trigger of the restored catalogs would at every connection).
    event_triggers: 'off',
  };
  return Object.fromEntries(Object.entries(all).filter(([name]) => inputs.known.has(name)));
}

/**
 * The `options` of every client connection (PGOPTIONS), which outrank the per-role and per-database
 * settings of the catalogs. A superuser's session gets the settings only a superuser may send:
 * no preloaded library, `$libdir` only, an empty search_path (a function or operator of a restored
 * schema is never found first), damaged pages reported rather than zeroed or ignored, and (17) no
 * event trigger. Another role (the pgdump drill's restoring role) may send only the ordinary ones.
 */
export function clientOptions(known: ReadonlySet<string>, superuser: boolean): string {
  const settings: Array<[string, string]> = [
    ['local_preload_libraries', ''],
    ['search_path', ''],
    ['statement_timeout', '0'],
    ['default_transaction_read_only', 'off'],
    ...(superuser
      ? ([
          ['session_preload_libraries', ''],
          ['dynamic_library_path', '$libdir'],
          ['zero_damaged_pages', 'off'],
          ['ignore_checksum_failure', 'off'],
          ['event_triggers', 'off'],
        ] as Array<[string, string]>)
      : []),
  ];
  return settings
    .filter(([name]) => known.has(name))
    .map(([name, value]) => `-c ${name}=${value}`)
    .join(' ');
}
