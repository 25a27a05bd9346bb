import type { Command } from 'commander';
import { removeLocks } from '../../commands/unlock.ts';
import type { Cli } from '../context.ts';

/** `cairn unlock`: remove the lock records of operations that ended or died. */
export function registerUnlock(program: Command, cli: Cli): void {
  program
    .command('unlock')
    .description('remove lock records of operations that ended or died (with --all, every lock record)')
    .option('--all', 'also remove locks that still look active: only when you know their processes are gone')
    .action(async (opts: { all?: boolean }, cmd: Command) => {
      const { g, repo, storage } = await cli.openRepo(cmd);
      const { removed, stillActive } = await removeLocks(repo, storage, { ...cli.operation(g), all: Boolean(opts.all) });
      cli.output.result(
        { type: 'unlock', removed, stillActive },
        `removed ${removed} lock(s)${stillActive ? `; ${stillActive} active lock(s) left (use --all only if their processes are gone)` : ''}`,
      );
    });
}
