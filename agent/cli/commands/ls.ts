import type { Command } from 'commander';
import { listSnapshotPath } from '../../commands/browse.ts';
import type { ListedEntry } from '../../commands/snapshot-browser.ts';
import type { Cli } from '../context.ts';
import { addLatestFilterFlags, latestFilterFrom, type LatestFilterFlags } from '../latest-filter.ts';
import { listingTime, modeString } from '../listing-format.ts';

/** `cairn ls`: a directory of a snapshot, like `ls -l`. */
export function registerLs(program: Command, cli: Cli): void {
  const command = program
    .command('ls')
    .description('list a directory of a snapshot like `ls -l` (mode, owner, size, mtime, name, link target)')
    .argument('<snapshot>', 'snapshot id (or a unique prefix), or "latest"')
    .argument('[path]', 'directory or file inside the snapshot', '/')
    .option('-R, --recursive', 'list everything below the directory')
    .option(
      '--no-lock',
      'take no lock and write nothing to the repository (one this host cannot write: a replica, a read-only mount or role); a prune running meanwhile could remove what it reads',
    );
  addLatestFilterFlags(command).action(
    async (ref: string, path: string, opts: LatestFilterFlags & { recursive?: boolean; lock: boolean }, cmd: Command) => {
      const { g, repo } = await cli.openRepo(cmd);
      const recursive = Boolean(opts.recursive);
      const asked = path.replace(/^\/+|\/+$/g, '');
      const done = await listSnapshotPath(
        repo,
        { ...cli.operation(g), noLock: !opts.lock, latestFilter: latestFilterFrom(opts), snapshot: ref, path, recursive },
        (snapshot, entry) =>
          cli.output.result({ type: 'entry', snapshotId: snapshot.id, entry }, lsLine(entry, recursive || entry.path === asked)),
      );
      cli.output.result({ type: 'ls', snapshotId: done.snapshot.id, path, entries: done.entries, bytes: done.bytes }, '');
    },
  );
}

function lsLine(e: ListedEntry, fullPath: boolean): string {
  return `${modeString(e)}  ${`${e.uid}/${e.gid}`.padEnd(11)} ${String(e.size).padStart(12)}  ${listingTime(e.mtime)}  ${fullPath ? e.path : e.name}${e.target !== undefined ? ` -> ${e.target}` : ''}`;
}
