import type { Command } from 'commander';
import { walPush } from '../../pitr/wal-client.ts';
import type { Cli } from '../context.ts';
import { STREAM_HELP, walClientOptions, type WalFlags } from '../wal-options.ts';

/** `cairn wal-push`: PostgreSQL's archive_command (docs/pitr.md), through the WAL daemon. */
export function registerWalPush(program: Command, cli: Cli): void {
  program
    .command('wal-push')
    .description(
      "PostgreSQL archive_command: archive one WAL file into the repository (archive_command = 'cairn wal-push %p'); prints nothing on success",
    )
    .argument('<path>', '%p: the file to archive, relative to the data directory')
    .option('--stream <name>', STREAM_HELP)
    .option(
      '--spool-dir <dir>',
      "the WAL daemon's directory (default: CAIRN_SPOOL_DIR, /var/spool/cairn, $XDG_RUNTIME_DIR/cairn or <tmp>/cairn-<uid>)",
    )
    .action(async (path: string, opts: WalFlags, cmd: Command) => {
      await walPush(path, walClientOptions(cli, cmd, opts));
    });
}
