import type { Command } from 'commander';
import { CairnError } from '../../core/errors.ts';
import { verify, type VerifyReport } from '../../commands/verify.ts';
import { distinctProblems, repairHint } from '../../commands/repair-hint.ts';
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
      const problems = distinctProblems(report);
      cli.output.result({ type: 'verify', ...report, distinctProblems: problems }, checkText(report, problems));
      if (!report.ok)
        throw new CairnError('Cairn.Damaged', `the repository has ${checkSummary(report, problems)}`, { hint: repairHint(report) });
    });
}

/** verify's listing, with a last line that counts distinct problems (a missing piece found only through its files counts too). */
function checkText(report: VerifyReport, problems: number): string {
  const lines = verifyText(report).split('\n');
  if (!report.ok) lines[lines.length - 1] = checkSummary(report, problems);
  return lines.join('\n');
}

function checkSummary(report: VerifyReport, problems: number): string {
  const snapshots = new Set(report.affected.map((a) => a.snapshot)).size;
  return `${problems} problem(s) affecting ${report.affected.length} file(s) in ${snapshots} snapshot(s)`;
}
