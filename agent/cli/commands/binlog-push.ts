import type { Command } from 'commander';
import { binlogPush } from '../../commands/binlog-push.ts';
import { engineOptionsFromFlags } from '../../core/engine-options/flags.ts';
import { mariadbSpec } from '../../core/engine-options/mariadb.ts';
import type { ArchivedBinlog, PushSummary } from '../../pitr/binlog-push.ts';
import type { Cli } from '../context.ts';
import { addEngineFlags } from '../engine-flags.ts';
import { formatBytes } from '../output.ts';

interface BinlogPushFlags {
  follow?: boolean;
  rotate?: boolean;
  archiveName: string;
  spoolDir?: string;
  host?: string;
}

/** `cairn binlog-push`: MariaDB's binlogs into the log archive (docs/pitr.md). */
export function registerBinlogPush(program: Command, cli: Cli): void {
  const command = program
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
    .option('--host <name>', 'host name recorded with each archived file');
  // The mariadb engine's connection flags: binlog-push reads the binlogs of the server its snapshots are taken from.
  addEngineFlags(command, 'binlog-push', [mariadbSpec]).action(async (opts: BinlogPushFlags, cmd: Command) => {
    const { repo } = await cli.openRepo(cmd);
    const { stream, summary } = await binlogPush(repo, {
      connection: engineOptionsFromFlags(mariadbSpec, 'binlog-push', cmd.opts()),
      archiveName: opts.archiveName,
      spoolDir: opts.spoolDir,
      host: cli.who(opts.host).host,
      env: cli.env,
      signal: cli.signal,
      follow: Boolean(opts.follow),
      rotate: Boolean(opts.rotate),
      onArchived: (s, file) => printArchived(cli, s, file),
      warn: (message, details) => cli.output.warn(message, details),
    });
    if (summary) printPushSummary(cli, stream, summary);
  });
}

/** One archived binlog; `cairn agent archive` prints the same lines. */
export function printArchived(cli: Cli, stream: string, file: ArchivedBinlog): void {
  const what = file.outcome === 'stored' ? 'archived' : 'already archived';
  cli.output.result(
    { type: 'binlog-push', stream, ...file },
    `${what} ${file.name} (${formatBytes(file.size)}, ${file.transactions} transaction(s)${file.lastEventTime ? ` up to ${file.lastEventTime}` : ''}, GTID ${file.endGtid || 'none'}) as ${file.key}`,
  );
}

/** A one-shot push's summary. */
export function printPushSummary(cli: Cli, stream: string, summary: PushSummary): void {
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
}
