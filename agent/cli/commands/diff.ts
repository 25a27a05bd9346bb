import type { Command } from 'commander';
import { diffSnapshots } from '../../commands/browse.ts';
import type { DiffItem, DiffSummary } from '../../commands/tree-diff.ts';
import type { Cli } from '../context.ts';
import { addLatestFilterFlags, latestFilterFrom, type LatestFilterFlags } from '../latest-filter.ts';
import { formatBytes } from '../output.ts';

/** `cairn diff`: what changed between two snapshots. */
export function registerDiff(program: Command, cli: Cli): void {
  const command = program
    .command('diff')
    .description('what was added, removed and changed between two snapshots (content, or metadata only)')
    .argument('<a>', 'the older snapshot (id, prefix or "latest")')
    .argument('<b>', 'the newer snapshot');
  addLatestFilterFlags(command).action(async (refA: string, refB: string, opts: LatestFilterFlags, cmd: Command) => {
    const { g, repo } = await cli.openRepo(cmd);
    const { a, b, summary } = await diffSnapshots(
      repo,
      { ...cli.operation(g), latestFilter: latestFilterFrom(opts), a: refA, b: refB },
      (item) => cli.output.result({ type: 'change', entry: item }, diffLine(item)),
    );
    cli.output.result({ type: 'diff', a: a.id, b: b.id, ...summary }, diffSummaryText(summary));
  });
}

function diffLine(item: DiffItem): string {
  const slash = item.type === 'dir' ? '/' : '';
  switch (item.change) {
    case 'added':
      return `+  ${item.path}${slash}${item.type === 'file' ? `  (${formatBytes(item.sizeAfter ?? 0)})` : ''}`;
    case 'removed':
      return `-  ${item.path}${slash}${item.type === 'file' ? `  (${formatBytes(item.sizeBefore ?? 0)})` : ''}`;
    case 'changed':
      return `M  ${item.path}  (${formatBytes(item.sizeBefore ?? 0)} → ${formatBytes(item.sizeAfter ?? 0)})`;
    case 'metadata':
      return `U  ${item.path}${slash}  (${(item.fields ?? []).join(', ')})`;
  }
}

function diffSummaryText(s: DiffSummary): string {
  const kinds = (c: { files: number; dirs: number; symlinks: number }): string =>
    `${c.files} file(s), ${c.dirs} dir(s), ${c.symlinks} symlink(s)`;
  return [
    `added: ${kinds(s.added)}, ${formatBytes(s.added.bytes)}`,
    `removed: ${kinds(s.removed)}, ${formatBytes(s.removed.bytes)}`,
    `changed: ${s.changed.entries} (content, ${formatBytes(s.changed.bytesBefore)} → ${formatBytes(s.changed.bytesAfter)}), ${s.metadata.entries} (metadata only)`,
  ].join('; ');
}
