import type { Command } from 'commander';
import type { Cli } from '../context.ts';

/** `cairn engines`: the backup engines and what each needs. */
export function registerEngines(program: Command, cli: Cli): void {
  program
    .command('engines')
    .description('list the backup engines and what each needs')
    .action(async () => {
      const list = [
        {
          name: 'files',
          description: 'files and directories; --stop-cmd/--start-cmd for a cold copy',
          requires: ['read access to the paths'],
        },
        ...[...(await cli.loadEngines()).engines.values()].map((e) => ({ name: e.name, description: e.description, requires: e.requires })),
      ];
      cli.output.result(
        { type: 'engines', engines: list },
        list.map((e) => `${e.name.padEnd(10)} ${e.description}\n           needs: ${e.requires.join('; ')}`).join('\n'),
      );
    });
}
