import type { Command } from 'commander';
import { LogArchive, validateStream } from '../core/log-archive.ts';
import { mysqlConnectionSchema } from '../engines/mysql-connection.ts';
import { parseEngineOptions } from '../engines/engine-helpers.ts';
import { followBinlogs, pushClosedBinlogs, type ArchivedBinlog, type BinlogPushOptions } from '../pitr/binlog-push.ts';
import { chooseSpoolDir } from '../pitr/wal-spool.ts';
import type { Cli } from './context.ts';
import { dbOptions } from './db-options.ts';
import { formatBytes } from './output.ts';

/** backup's connection flags (main.ts), as the connection fields they fill. */
const DB_FLAGS = {
  dbHost: 'host',
  dbPort: 'port',
  dbSocket: 'socket',
  dbUser: 'user',
  dbPasswordFile: 'passwordFile',
  dbDefaultsFile: 'defaultsFile',
} as const;

type BinlogPushCliOptions = { follow?: boolean; rotate?: boolean; archiveName: string; spoolDir?: string; host?: string } & Partial<
  Record<keyof typeof DB_FLAGS, string>
>;

/** Commands of the log archive (docs/pitr.md): MariaDB's binlogs. */
export function register(program: Command, cli: Cli): void {
  program
    .command('binlog-push')
    .description(
      "archive a MariaDB server's closed binlogs into the repository (stream mariadb-<archive name>); one-shot for a schedule, or --follow as a service. Needs REPLICATION SLAVE and BINLOG MONITOR",
    )
    .option('--follow', 'keep running: stream the binlogs and archive each file as soon as the server closes it (stop with SIGTERM)')
    .option('--archive-name <name>', 'the log stream is mariadb-<name>: one per database server or cluster', 'default')
    .option(
      '--spool-dir <dir>',
      'where fetched binlogs wait for their upload, owner-only (default: CAIRN_SPOOL_DIR, /var/spool/cairn, $XDG_RUNTIME_DIR/cairn or <tmp>/cairn-<uid>); needs about max_binlog_size free, twice that with --follow',
    )
    .option(
      '--rotate',
      'one-shot: first close the binlog the server is writing when it holds transactions not yet archived (FLUSH BINARY LOGS, needs RELOAD), so a schedule bounds the archive lag on a quiet server',
    )
    .option('--host <name>', 'host name recorded with each archived file')
    .addOption(dbOptions.host())
    .addOption(dbOptions.port())
    .addOption(dbOptions.socket())
    .addOption(dbOptions.user())
    .addOption(dbOptions.passwordFile())
    .addOption(dbOptions.defaultsFile())
    .action(async (opts: BinlogPushCliOptions, cmd: Command) => {
      const stream = validateStream(`mariadb-${opts.archiveName}`);
      const given = Object.entries(DB_FLAGS)
        .map(([flag, field]) => [field, opts[flag as keyof typeof DB_FLAGS]])
        .filter(([, value]) => value !== undefined);
      const connection = parseEngineOptions('binlog-push', mysqlConnectionSchema, Object.fromEntries(given));
      const { repo } = await cli.openRepo(cmd);
      const options: BinlogPushOptions = {
        connection,
        archive: new LogArchive(repo, stream),
        spoolDir: await chooseSpoolDir(opts.spoolDir, cli.env),
        host: cli.who(opts.host).host,
        env: cli.env,
        signal: cli.signal,
        onArchived: (file) => cli.output.result({ type: 'binlog-push', stream, ...file }, archivedText(file)),
        warn: (message, details) => cli.output.warn(message, details),
        rotate: Boolean(opts.rotate),
      };
      if (opts.follow) {
        await followBinlogs(options);
        return;
      }
      const summary = await pushClosedBinlogs(options);
      cli.output.result(
        {
          type: 'summary',
          operation: 'binlog-push',
          stream,
          archived: summary.archived.length,
          alreadyArchived: summary.alreadyArchived,
          active: summary.active ?? null,
        },
        `${stream}: archived ${summary.archived.length} file(s), ${summary.alreadyArchived} already archived; ${summary.active ?? 'no file'} is still being written`,
      );
    });
}

function archivedText(file: ArchivedBinlog): string {
  const what = file.outcome === 'stored' ? 'archived' : 'already archived';
  return `${what} ${file.name} (${formatBytes(file.size)}, ${file.transactions} transaction(s)${file.lastEventTime ? ` up to ${file.lastEventTime}` : ''}, GTID ${file.endGtid || 'none'}) as ${file.key}`;
}
