import type { Command } from 'commander';
import { shortId, type Snapshot } from '../core/snapshot.ts';
import { underLock } from '../commands/operation.ts';
import {
  SnapshotBrowser,
  diff,
  dump,
  emptyDiffSummary,
  countDiff,
  filterSnapshots,
  find,
  ls,
  type DiffItem,
  type DiffSummary,
  type ListedEntry,
} from '../commands/browse.ts';
import { tagSnapshots, type TagChange } from '../commands/tag.ts';
import { Output, formatBytes } from './output.ts';
import { collect, type Cli } from './context.ts';

/**
 * Browsing snapshots (`ls`, `find`, `diff`, `dump`) and changing their tags
 * (`tag`). The browsing commands only read, under the shared lock so that a
 * prune cannot take the data from under them.
 */
export function register(program: Command, cli: Cli): void {
  program
    .command('ls')
    .description('list a directory of a snapshot like `ls -l` (mode, owner, size, mtime, name, link target)')
    .argument('<snapshot>', 'snapshot id (or a unique prefix), or "latest"')
    .argument('[path]', 'directory or file inside the snapshot', '/')
    .option('-R, --recursive', 'list everything below the directory')
    .action(async (ref: string, path: string, opts: { recursive?: boolean }, cmd: Command) => {
      const { g, repo } = await cli.openRepo(cmd);
      await underLock(cli.operation(repo, g), 'ls', false, async () => {
        const snapshot = await repo.findSnapshot(ref);
        const browser = await SnapshotBrowser.open(repo, g.concurrency * 2);
        let entries = 0;
        let bytes = 0;
        for await (const entry of ls(browser, snapshot, path, Boolean(opts.recursive))) {
          entries++;
          bytes += entry.size;
          cli.output.result(
            { type: 'entry', snapshotId: snapshot.id, entry },
            lsLine(entry, Boolean(opts.recursive) || entry.path === path.replace(/^\/+|\/+$/g, '')),
          );
        }
        cli.output.result({ type: 'ls', snapshotId: snapshot.id, path, entries, bytes }, '');
      });
    });

  program
    .command('find')
    .description('which snapshots hold paths matching a pattern, with size and mtime')
    .argument('<pattern...>', 'glob: `*` and `?` within a name, `**` across directories; without a slash it matches names anywhere')
    .option('-s, --snapshot <id>', 'search only this snapshot (repeatable)', collect, [])
    .option('--host <name>', 'search only snapshots of this host (repeatable)', collect, [])
    .option('--tag <tags>', 'search only snapshots with these tags (a,b: both; repeatable: any)', collect, [])
    .action(async (patterns: string[], opts: { snapshot: string[]; host: string[]; tag: string[] }, cmd: Command) => {
      const { g, repo } = await cli.openRepo(cmd);
      await underLock(cli.operation(repo, g), 'find', false, async () => {
        let snapshots: Snapshot[];
        if (opts.snapshot.length > 0) {
          const byId = new Map<string, Snapshot>();
          for (const ref of opts.snapshot) {
            const s = await repo.findSnapshot(ref);
            byId.set(s.id, s);
          }
          snapshots = [...byId.values()].sort((a, b) => a.time.localeCompare(b.time) || a.id.localeCompare(b.id));
        } else {
          const listed = await repo.listSnapshots();
          for (const u of listed.unreadable) cli.output.warn(`snapshot ${u.id} cannot be read: ${u.error}`, { snapshot: u.id });
          snapshots = listed.snapshots;
        }
        snapshots = filterSnapshots(snapshots, { hosts: opts.host, tags: opts.tag });
        const browser = await SnapshotBrowser.open(repo, g.concurrency * 2);
        let matches = 0;
        const holding = new Set<string>();
        for await (const { snapshot, entry } of find(browser, snapshots, patterns)) {
          const header = holding.has(snapshot.id) ? '' : `snapshot ${shortId(snapshot.id)} ${snapshot.time} ${snapshot.host}:\n`;
          holding.add(snapshot.id);
          matches++;
          cli.output.result(
            { type: 'match', snapshotId: snapshot.id, time: snapshot.time, host: snapshot.host, entry },
            `${header}  ${modeString(entry)} ${formatBytes(entry.size).padStart(10)}  ${entry.mtime.replace('T', ' ').replace(/\.\d+Z$/, 'Z')}  ${entry.path}${entry.target !== undefined ? ` -> ${entry.target}` : ''}`,
          );
        }
        cli.output.result(
          { type: 'find', patterns, searched: snapshots.length, snapshots: holding.size, matches },
          `${matches} match(es) in ${holding.size} of ${snapshots.length} snapshot(s)`,
        );
      });
    });

  program
    .command('diff')
    .description('what was added, removed and changed between two snapshots (content, or metadata only)')
    .argument('<a>', 'the older snapshot (id, prefix or "latest")')
    .argument('<b>', 'the newer snapshot')
    .action(async (refA: string, refB: string, _opts: unknown, cmd: Command) => {
      const { g, repo } = await cli.openRepo(cmd);
      await underLock(cli.operation(repo, g), 'diff', false, async () => {
        const a = await repo.findSnapshot(refA);
        const b = await repo.findSnapshot(refB);
        const browser = await SnapshotBrowser.open(repo, g.concurrency * 2);
        const summary = emptyDiffSummary();
        for await (const item of diff(browser, a, b)) {
          countDiff(summary, item);
          cli.output.result({ type: 'change', entry: item }, diffLine(item));
        }
        cli.output.result({ type: 'diff', a: a.id, b: b.id, ...summary }, diffSummaryText(summary));
      });
    });

  program
    .command('dump')
    .description('write one file of a snapshot to stdout, byte for byte')
    .argument('<snapshot>', 'snapshot id (or a unique prefix), or "latest"')
    .argument('<file>', 'path of the file inside the snapshot')
    .action(async (ref: string, path: string, _opts: unknown, cmd: Command) => {
      // stdout carries the file's bytes only: messages go to stderr, as text.
      cli.output = new Output({ json: false, quiet: true });
      const { g, repo } = await cli.openRepo(cmd);
      await underLock(cli.operation(repo, g), 'dump', false, async () => {
        const snapshot = await repo.findSnapshot(ref);
        const browser = await SnapshotBrowser.open(repo, g.concurrency * 2);
        await dump(browser, snapshot, path, process.stdout, cli.signal);
      });
    });

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
      const changes = await tagSnapshots(repo, storage, {
        refs,
        add: opts.add,
        remove: opts.remove,
        set: opts.set.length > 0 ? opts.set.filter((t) => t !== '') : undefined,
        dryRun: Boolean(opts.dryRun),
        ...cli.operation(repo, g),
      });
      cli.output.result(
        { type: 'tag', dryRun: Boolean(opts.dryRun), changes },
        changes.map((c) => tagLine(c, Boolean(opts.dryRun))).join('\n'),
      );
    });
}

export function modeString(entry: Pick<ListedEntry, 'type' | 'mode'>): string {
  const m = entry.mode;
  const bit = (mask: number, c: string): string => (m & mask ? c : '-');
  const exec = (x: number, special: number, set: string, unset: string): string =>
    m & special ? (m & x ? set : unset) : m & x ? 'x' : '-';
  return (
    (entry.type === 'dir' ? 'd' : entry.type === 'symlink' ? 'l' : '-') +
    bit(0o400, 'r') +
    bit(0o200, 'w') +
    exec(0o100, 0o4000, 's', 'S') +
    bit(0o040, 'r') +
    bit(0o020, 'w') +
    exec(0o010, 0o2000, 's', 'S') +
    bit(0o004, 'r') +
    bit(0o002, 'w') +
    exec(0o001, 0o1000, 't', 'T')
  );
}

function lsLine(e: ListedEntry, fullPath: boolean): string {
  const when = e.mtime.replace('T', ' ').replace(/\.\d+Z$/, 'Z');
  return `${modeString(e)}  ${`${e.uid}/${e.gid}`.padEnd(11)} ${String(e.size).padStart(12)}  ${when}  ${fullPath ? e.path : e.name}${e.target !== undefined ? ` -> ${e.target}` : ''}`;
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

function tagLine(c: TagChange, dryRun: boolean): string {
  const tags = c.tags.length > 0 ? c.tags.join(',') : '(none)';
  if (!c.changed) return `${shortId(c.id)}  unchanged  tags: ${tags}`;
  if (dryRun) return `${shortId(c.id)}  would become tags: ${tags}`;
  return `${shortId(c.id)} → ${shortId(c.newId)}  tags: ${tags}`;
}
