import type { Command } from 'commander';
import { prune } from '../../commands/prune.ts';
import { parseDurationMs } from '../../core/duration.ts';
import { parsePercent, type Cli } from '../context.ts';
import { formatBytes } from '../output.ts';

/** `cairn prune`: free what no snapshot uses (docs/locks-and-gc.md). */
export function registerPrune(program: Command, cli: Cli): void {
  program
    .command('prune')
    .description('delete data no snapshot uses and repack sparse packs (takes the exclusive lock)')
    .option('--dry-run', 'report what would be freed; change nothing')
    .option('--max-unused <percent>', 'repack a pack when more than this share of it is unused', '5%')
    .option(
      '--gc-grace <duration>',
      'how long marked data waits, by the storage clock, before it is deleted: longer than any backup takes between its last check and its manifest (default 60s, or CAIRN_GC_GRACE)',
    )
    .action(async (opts: { dryRun?: boolean; maxUnused: string; gcGrace?: string }, cmd: Command) => {
      const { g, repo, storage } = await cli.openRepo(cmd);
      const report = await prune(repo, storage, {
        ...cli.operation(g),
        dryRun: Boolean(opts.dryRun),
        maxUnused: parsePercent(opts.maxUnused, true),
        ...graceOption(opts.gcGrace ?? cli.env.CAIRN_GC_GRACE),
      });
      const would = (done: string, planned: string): string => (report.dryRun ? planned : done);
      cli.output.result(
        { type: 'prune', ...report },
        `${would('deleted', 'would delete')} ${report.packsDeleted} pack(s) and repack ${report.packsRepacked}; ${would('freed', 'would free')} ${formatBytes(report.bytesFreed)} (${formatBytes(report.bytesBefore)} → ${formatBytes(report.bytesAfter)})` +
          report.logs
            .filter((l) => l.filesRemoved > 0)
            .map(
              (l) =>
                `\n${l.stream}: ${would('removed', 'would remove')} ${l.filesRemoved} archived log file(s), ${formatBytes(l.bytesRemoved)} (older than every base snapshot that needs them)`,
            )
            .join(''),
      );
    });
}

/** A grace given as a duration (`90s`, `5m`) or bare seconds; none: the library's default. */
function graceOption(value: string | undefined): { graceMs?: number } {
  if (!value) return {};
  return { graceMs: parseDurationMs(/^\d+$/.test(value) ? `${value}s` : value) };
}
