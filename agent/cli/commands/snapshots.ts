import type { Command } from 'commander';
import { readDamage, type KnownDamage } from '../../core/damage.ts';
import { shortId, type Snapshot } from '../../core/snapshot.ts';
import { filterSnapshots, groupSnapshots, parseGroupBy } from '../../commands/snapshot-selector.ts';
import { collect, type Cli } from '../context.ts';
import { groupTitle } from '../listing-format.ts';
import { formatBytes } from '../output.ts';

/** `cairn snapshots`: the snapshots, filtered and optionally grouped. */
export function registerSnapshots(program: Command, cli: Cli): void {
  program
    .command('snapshots')
    .description('list snapshots')
    .option('--host <name>', 'only snapshots of this host (repeatable)', collect, [])
    .option('--tag <tags>', 'only snapshots with these tags (a,b: both; repeatable: any)', collect, [])
    .option('--group-by <fields>', 'group by host, paths, plan and/or tags (e.g. host,plan)')
    .option('--no-lock', 'accepted for scripts that pass it everywhere: listing snapshots takes no lock and writes nothing')
    .action(async (opts: { host: string[]; tag: string[]; groupBy?: string }, cmd: Command) => {
      const { repo } = await cli.openRepo(cmd);
      const listed = await repo.listSnapshots();
      const damage = await readDamage(repo, (message) => cli.output.warn(message));
      for (const u of listed.unreadable) cli.output.warn(`snapshot ${u.id} cannot be read (damaged): ${u.error}`, { snapshot: u.id });
      // An unreadable manifest is a damaged snapshot: listed as such (it matches no filter, having no readable host or tags).
      const unreadable = listed.unreadable.map((u) => ({ id: u.id, status: 'damaged' as const, unreadable: true, error: u.error }));
      const snapshots = filterSnapshots(listed.snapshots, { hosts: opts.host, tags: opts.tag }).map((s) => withStatus(s, damage));
      const unreadableText = unreadable.map((u) => `${shortId(u.id)}  damaged: the manifest cannot be read (${u.error})`).join('\n');
      if (opts.groupBy === undefined) {
        cli.output.result(
          { type: 'snapshots', snapshots, unreadable },
          [snapshotTable(snapshots), unreadableText].filter(Boolean).join('\n'),
        );
        return;
      }
      const groupBy = parseGroupBy(opts.groupBy);
      const groups = groupSnapshots(snapshots, groupBy);
      cli.output.result(
        { type: 'snapshots', groupBy, groups, unreadable },
        [groups.map((gr) => `${groupTitle(gr.group)}\n${snapshotTable(gr.snapshots)}`).join('\n\n') || 'no snapshots', unreadableText]
          .filter(Boolean)
          .join('\n\n'),
      );
    });
}

type ListedSnapshot = Snapshot & { status?: 'damaged' | 'partial'; statusReason?: string };

/** A snapshot that is not good says so: `status` damaged (a marker or the tag) or partial, and why. */
function withStatus(s: Snapshot, damage: KnownDamage): ListedSnapshot {
  const why = damage.notGood(s);
  if (why === undefined) return s;
  return { ...s, status: damage.damaged(s) ? 'damaged' : 'partial', statusReason: why };
}

function snapshotTable(snapshots: ListedSnapshot[]): string {
  if (snapshots.length === 0) return 'no snapshots';
  const rows = snapshots.map((s) => [
    shortId(s.id),
    s.time.replace('T', ' ').replace(/\.\d+Z$/, 'Z'),
    s.host,
    [...s.tags, ...(s.status ? [`(${s.status})`] : [])].join(','),
    formatBytes(s.summary.totalBytes),
    formatBytes(s.summary.bytesAdded),
    s.paths.join(' '),
  ]);
  const header = ['ID', 'Time', 'Host', 'Tags', 'Size', 'Added', 'Paths'];
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] as string).length)));
  const line = (r: string[]): string => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i] as number))).join('  ');
  return [line(header), ...rows.map(line), `${snapshots.length} snapshot(s)`].join('\n');
}
