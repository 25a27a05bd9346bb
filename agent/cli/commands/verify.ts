import type { Command } from 'commander';
import { CairnError } from '../../core/errors.ts';
import { shortId } from '../../core/snapshot.ts';
import { distinctProblems, repairHint } from '../../commands/repair-hint.ts';
import { verify, type VerifyReport } from '../../commands/verify.ts';
import { parsePercent, type Cli } from '../context.ts';
import { formatBytes } from '../output.ts';

/** `cairn verify`: the repository's structure, and with --read-data (or a subset) its data. */
export function registerVerify(program: Command, cli: Cli): void {
  program
    .command('verify')
    .description('check the repository; with --read-data, read and authenticate all data')
    .option('--read-data', 'read every pack and check every piece')
    .option('--read-data-subset <percent>', 'read this percentage of the packs, chosen at random (e.g. 10%)')
    .option(
      '--no-lock',
      'take no lock and write nothing to the repository (one this host cannot write: a replica, a read-only mount or role); a prune running meanwhile could remove what it reads',
    )
    .action(async (opts: { readData?: boolean; readDataSubset?: string; lock: boolean }, cmd: Command) => {
      const { g, repo } = await cli.openRepo(cmd);
      const readData = opts.readData ? 1 : opts.readDataSubset !== undefined ? parsePercent(opts.readDataSubset) : 0;
      const report = await verify(repo, { ...cli.operation(g), noLock: !opts.lock, readData, markDamage: opts.lock });
      cli.output.result({ type: 'verify', ...report }, verifyText(report));
      if (!report.ok)
        throw new CairnError(
          'Cairn.Damaged',
          `the repository has ${distinctProblems(report)} problem(s) affecting ${report.affected.length} file(s)`,
          {
            hint:
              (report.markers.length
                ? `the damage is recorded in ${report.markers.join(', ')}: retention and \`latest\` no longer count the affected snapshots as good; `
                : '') + repairHint(report),
          },
        );
    });
}

export function verifyText(r: VerifyReport): string {
  const lines = [
    `checked ${r.snapshots} snapshot(s), ${r.packs} pack(s)${r.packsRead ? `; read ${r.packsRead} pack(s), ${r.piecesChecked} piece(s), ${formatBytes(r.bytesRead)}` : ''}`,
  ];
  for (const p of r.problems) lines.push(`damaged: ${p.object}: ${p.problem}`);
  for (const a of r.affected) lines.push(`affected: snapshot ${shortId(a.snapshot)} ${a.path}: ${a.problem}`);
  for (const k of r.known) lines.push(`known: ${k.object}: ${k.problem}`);
  for (const m of r.markers) lines.push(`recorded: ${m}`);
  lines.push(r.ok ? 'no problems found' : `${distinctProblems(r)} problem(s), ${r.affected.length} affected file(s)`);
  return lines.join('\n');
}
