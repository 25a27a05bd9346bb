import type { Command } from 'commander';
import { shortId } from '../../core/snapshot.ts';
import { stats } from '../../commands/stats.ts';
import type { Cli } from '../context.ts';
import { formatBytes } from '../output.ts';

/** `cairn stats`: sizes, deduplication and compression. */
export function registerStats(program: Command, cli: Cli): void {
  program
    .command('stats')
    .description('sizes, deduplication and compression of the repository and each snapshot')
    .action(async (_opts: unknown, cmd: Command) => {
      const { repo } = await cli.openRepo(cmd);
      const s = await stats(repo);
      cli.output.result(
        { type: 'stats', ...s },
        [
          `${s.snapshots} snapshot(s), ${s.pieces} pieces in ${s.packs} pack(s)`,
          `logical ${formatBytes(s.logicalBytes)}, unique ${formatBytes(s.uniqueBytes)}, stored ${formatBytes(s.storedBytes)}`,
          `deduplication ${s.dedupeRatio.toFixed(2)}×, compression ${s.compressionRatio.toFixed(2)}×`,
          ...s.perSnapshot.map(
            (p) => `  ${shortId(p.id)}  ${p.time}  ${p.host}  ${formatBytes(p.logicalBytes)} logical, ${formatBytes(p.addedBytes)} added`,
          ),
        ].join('\n'),
      );
    });
}
