import type { Command } from 'commander';
import { CairnError } from '../../core/errors.ts';
import { verify } from '../../commands/verify.ts';
import type { Cli } from '../context.ts';
import { verifyText } from './verify.ts';

/** `cairn check`: verify without reading the data. */
export function registerCheck(program: Command, cli: Cli): void {
  program
    .command('check')
    .description("check the repository's structure without reading all data (same as verify without --read-data)")
    .action(async (_opts: unknown, cmd: Command) => {
      const { g, repo } = await cli.openRepo(cmd);
      const report = await verify(repo, { ...cli.operation(g), readData: 0 });
      cli.output.result({ type: 'verify', ...report }, verifyText(report));
      if (!report.ok)
        throw new CairnError(
          'Cairn.Damaged',
          `the repository has ${report.problems.length} problem(s) affecting ${report.affected.length} file(s)`,
        );
    });
}
