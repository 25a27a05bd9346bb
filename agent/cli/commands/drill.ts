import { existsSync } from 'node:fs';
import type { Command } from 'commander';
import { shortId } from '../../core/snapshot.ts';
import { drill, drillFailure, type DrillReport } from '../../commands/drill.ts';
import type { Cli } from '../context.ts';
import { addLatestFilterFlags, latestFilterFrom, type LatestFilterFlags } from '../latest-filter.ts';
import { formatBytes, formatDuration } from '../output.ts';

interface DrillFlags extends LatestFilterFlags {
  thorough?: boolean;
  scratchDir?: string;
}

/** `cairn drill [snapshot]`: restore into a private scratch place, prove it with the engine's tools, remove it (agent/commands/drill.ts). */
export function registerDrill(program: Command, cli: Cli): void {
  const command = program
    .command('drill')
    .description(
      'restore drill: restore a snapshot into a private scratch directory (and private database server), check it with the engine’s own tools, then remove everything; never touches a running server',
    )
    .argument('[snapshot]', 'snapshot id (or a unique prefix), or "latest"', 'latest')
    .option('--thorough', 'the deeper, slower checks (mariadb-check --extended, pg_amcheck --heapallindexed)')
    .option('--scratch-dir <dir>', 'where the scratch directory is made (default: CAIRN_DRILL_DIR, else the system temp directory)');
  addLatestFilterFlags(command).action(async (snapshot: string, opts: DrillFlags, cmd: Command) => {
    const { g, repo } = await cli.openRepo(cmd);
    const report = await drill(repo, {
      ...cli.operation(g),
      snapshot,
      latestFilter: latestFilterFrom(opts),
      thorough: opts.thorough ?? false,
      scratchDir: opts.scratchDir,
      env: cli.env,
      engines: await cli.loadEngines(),
    });
    cli.output.result({ type: 'drill', ...report }, drillText(report));
    if (!report.ok) throw drillFailure(report);
  });
}

export function drillText(r: DrillReport): string {
  const lines = [
    `drill of snapshot ${shortId(r.snapshotId)} (${r.engine}, ${r.snapshotTime}) in ${r.scratch} (${formatBytes(r.spaceNeeded)} free space required)`,
  ];
  for (const c of r.checks) {
    const mark = !c.ran ? 'skipped' : c.ok ? 'ok' : 'FAILED';
    lines.push(`  ${mark.padEnd(7)} ${c.name} (${formatDuration(c.durationMs)}): ${c.found}`);
  }
  lines.push(
    `${r.ok ? 'passed' : 'FAILED'}: restore ${formatDuration(r.restoreMs)}, checks ${formatDuration(r.checkMs)}, total ${formatDuration(r.durationMs)}; ${existsSync(r.scratch) ? 'scratch directory left (the warning above says why)' : 'scratch directory removed'}`,
  );
  return lines.join('\n');
}
