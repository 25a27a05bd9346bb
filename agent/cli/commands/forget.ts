import type { Command } from 'commander';
import { CairnError } from '../../core/errors.ts';
import { retentionPolicySchema } from '../../core/retention.ts';
import { shortId } from '../../core/snapshot.ts';
import { forget, forgetIds, type ForgetGroup } from '../../commands/forget.ts';
import { parseGroupBy } from '../../commands/snapshot-selector.ts';
import { collect, nonNegativeInt, type Cli } from '../context.ts';
import { groupTitle } from '../listing-format.ts';

const KEEP_FLAGS = ['keepLast', 'keepHourly', 'keepDaily', 'keepWeekly', 'keepMonthly', 'keepYearly', 'keepWithin', 'keepWithinPitr'];

/** `cairn forget`: a retention policy per group of snapshots, or the snapshots named (docs/retention.md). */
export function registerForget(program: Command, cli: Cli): void {
  program
    .command('forget')
    .description(
      'apply a retention policy per group of snapshots, or forget the snapshots named, deleting their manifests (run prune to free the data)',
    )
    .argument('[snapshot...]', 'forget these snapshots (ids, unique prefixes or "latest") instead of applying a policy')
    .option('--keep-last <n>', 'keep the n newest snapshots', nonNegativeInt)
    .option('--keep-hourly <n>', 'keep the newest snapshot of each of the last n hours that have one', nonNegativeInt)
    .option('--keep-daily <n>', 'same, per day', nonNegativeInt)
    .option('--keep-weekly <n>', 'same, per ISO week', nonNegativeInt)
    .option('--keep-monthly <n>', 'same, per month', nonNegativeInt)
    .option('--keep-yearly <n>', 'same, per year', nonNegativeInt)
    .option('--keep-within <duration>', 'keep every snapshot within this long of the newest (e.g. 7d, 2w, 1y6M)')
    .option(
      '--keep-within-pitr <duration>',
      'keep a point-in-time recovery window this long: the snapshots in it and the base before it (prune keeps their log)',
    )
    .option('--keep-tag <tag>', 'always keep snapshots with this tag (repeatable)', collect, [])
    .option('--group-by <fields>', 'group snapshots by these fields: host,paths,plan,tags', 'host,paths,plan')
    .option('--dry-run', 'print the decisions and their reasons; delete nothing')
    .option('--force', 'with snapshot ids: forget pinned snapshots too')
    .action(async (ids: string[], opts: Record<string, unknown>, cmd: Command) => {
      const keepFlags = KEEP_FLAGS.filter((k) => opts[k] !== undefined);
      const keepTags = opts.keepTag as string[];
      if (keepTags.length > 0) keepFlags.push('keepTag');
      if (ids.length > 0 && keepFlags.length > 0)
        throw new CairnError('Cairn.Usage', 'give either snapshot ids or --keep-* rules, not both', {
          hint: '`cairn forget ID...` forgets those snapshots; `cairn forget --keep-...` applies a policy',
        });
      const dryRun = Boolean(opts.dryRun);
      const { g, repo, storage } = await cli.openRepo(cmd);
      if (ids.length > 0) {
        const removed = await forgetIds(repo, storage, { ...cli.operation(g), ids, dryRun, force: Boolean(opts.force) });
        cli.output.result(
          { type: 'forget', dryRun, removed },
          [
            ...removed.map(
              (r) =>
                `${dryRun ? 'would remove' : 'removed'}  ${shortId(r.id)}  ${r.unreadable ? '(unreadable manifest)' : `${r.time}  ${r.host}`}${r.pinned ? '  (pinned)' : ''}`,
            ),
            ...(dryRun ? [] : ['run `cairn prune` to free the space their data used']),
          ].join('\n'),
        );
        return;
      }
      const policy = retentionPolicySchema.parse({
        ...Object.fromEntries(KEEP_FLAGS.map((k) => [k, opts[k]])),
        keepTags: keepTags.length > 0 ? keepTags : undefined,
      });
      const groupBy = parseGroupBy(String(opts.groupBy));
      const groups = await forget(repo, storage, { ...cli.operation(g), policy, groupBy, dryRun });
      cli.output.result({ type: 'forget', dryRun, groups }, forgetText(groups, dryRun));
    });
}

function forgetText(groups: ForgetGroup[], dryRun: boolean): string {
  const lines: string[] = [];
  for (const g of groups) {
    lines.push(`${groupTitle(g.group)}: keep ${g.keep.length}, ${dryRun ? 'would remove' : 'removed'} ${g.remove.length}`);
    for (const d of g.keep) lines.push(`  keep    ${shortId(d.id)}  ${d.time}  ${d.reasons.join('; ')}`);
    for (const d of g.remove) lines.push(`  ${dryRun ? 'would remove' : 'remove'}  ${shortId(d.id)}  ${d.time}  ${d.reasons.join('; ')}`);
  }
  if (!dryRun && groups.some((g) => g.remove.length > 0)) lines.push('run `cairn prune` to free the space their data used');
  return lines.join('\n') || 'no snapshots';
}
