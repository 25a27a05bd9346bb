import type { Command } from 'commander';
import { walFetch, walFetchMissingExit } from '../../pitr/wal-client.ts';
import type { Cli } from '../context.ts';
import { STREAM_HELP, walClientOptions, type WalFlags } from '../wal-options.ts';

/** `cairn wal-fetch`: PostgreSQL's restore_command (docs/pitr.md), through the WAL daemon. */
export function registerWalFetch(program: Command, cli: Cli): void {
  program
    .command('wal-fetch')
    .description(
      'PostgreSQL restore_command: write an archived WAL file (restore_command = \'cairn wal-fetch --stream pg-<id> %f "%p"\'); exit 1 without a message when it was never archived',
    )
    .argument('<name>', '%f: the file PostgreSQL wants')
    .argument('<dest>', '%p: where to write it, relative to the data directory')
    .option('--stream <name>', STREAM_HELP)
    .option('--spool-dir <dir>', "the WAL daemon's directory (see wal-push)")
    .option(
      '--stage-dir <dir>',
      "the restore's staging directory (written by cairn restore into restore_command): the daemon places the next segments there for restore_command to take with mv",
    )
    .action(async (name: string, dest: string, opts: WalFlags, cmd: Command) => {
      if (!(await walFetch(name, dest, walClientOptions(cli, cmd, opts)))) {
        // PostgreSQL asks for files that do not exist (the next timeline's history, the end of the archive) and reads
        // exit 1 as "not there": a message for each would fill its log.
        cli.quietExitCode = walFetchMissingExit(cli.env);
      }
    });
}
