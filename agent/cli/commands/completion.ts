import { Argument, type Command } from 'commander';
import { VERSION } from '../../core/version.ts';
import { commandTree } from '../command-tree.ts';
import { completionScript, SHELLS, type Shell } from '../completion/index.ts';
import type { Cli } from '../context.ts';

/**
 * `cairn completion bash|zsh|fish`: the completion script for that shell, generated from the
 * commands as registered (command-table.ts loads every one for it). The script is printed as
 * it is, even with --json: it is meant for a file or `source`.
 */
export function registerCompletion(program: Command, cli: Cli): void {
  program
    .command('completion')
    .description('print a shell completion script for bash, zsh or fish (commands, options, file names)')
    .addArgument(new Argument('<shell>', 'the shell the script is for').choices(SHELLS))
    .action((shell: Shell) => {
      cli.streams.stdout.write(completionScript(shell, commandTree(program), VERSION));
    });
}
