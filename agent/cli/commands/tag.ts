import type { Command } from 'commander';
import { shortId } from '../../core/snapshot.ts';
import { tagSnapshots, type TagChange } from '../../commands/tag.ts';
import { collect, type Cli } from '../context.ts';

/** `cairn tag`: add, remove or set the tags of snapshots. */
export function registerTag(program: Command, cli: Cli): void {
  program
    .command('tag')
    .description('add, remove or set tags of snapshots (writes a new manifest under a new id, then deletes the old one)')
    .argument('<snapshot...>', 'snapshot ids, unique prefixes or "latest"')
    .option('--add <tag>', 'add this tag (repeatable)', collect, [])
    .option('--remove <tag>', 'remove this tag (repeatable)', collect, [])
    .option('--set <tag>', 'replace all tags with these (repeatable; --set "" clears them)', collect, [])
    .option('--dry-run', 'show the new tags; change nothing')
    .action(async (refs: string[], opts: { add: string[]; remove: string[]; set: string[]; dryRun?: boolean }, cmd: Command) => {
      const { g, repo, storage } = await cli.openRepo(cmd);
      const dryRun = Boolean(opts.dryRun);
      const changes = await tagSnapshots(repo, storage, {
        ...cli.operation(g),
        refs,
        add: opts.add,
        remove: opts.remove,
        set: opts.set.length > 0 ? opts.set.filter((t) => t !== '') : undefined,
        dryRun,
      });
      cli.output.result({ type: 'tag', dryRun, changes }, changes.map((c) => tagLine(c, dryRun)).join('\n'));
    });
}

function tagLine(c: TagChange, dryRun: boolean): string {
  const tags = c.tags.length > 0 ? c.tags.join(',') : '(none)';
  if (!c.changed) return `${shortId(c.id)}  unchanged  tags: ${tags}`;
  if (dryRun) return `${shortId(c.id)}  would become tags: ${tags}`;
  return `${shortId(c.id)} → ${shortId(c.newId)}  tags: ${tags}`;
}
