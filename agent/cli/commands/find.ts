import type { Command } from 'commander';
import { shortId } from '../../core/snapshot.ts';
import { findInSnapshots } from '../../commands/browse.ts';
import { collect, type Cli } from '../context.ts';
import { listingTime, modeString } from '../listing-format.ts';
import { formatBytes } from '../output.ts';

/** `cairn find`: which snapshots hold paths matching a pattern. */
export function registerFind(program: Command, cli: Cli): void {
  program
    .command('find')
    .description('which snapshots hold paths matching a pattern, with size and mtime')
    .argument('<pattern...>', 'glob: `*` and `?` within a name, `**` across directories; without a slash it matches names anywhere')
    .option('-s, --snapshot <id>', 'search only this snapshot (repeatable)', collect, [])
    .option('--host <name>', 'search only snapshots of this host (repeatable)', collect, [])
    .option('--tag <tags>', 'search only snapshots with these tags (a,b: both; repeatable: any)', collect, [])
    .option(
      '--no-lock',
      'take no lock and write nothing to the repository (one this host cannot write: a replica, a read-only mount or role); a prune running meanwhile could remove what it reads',
    )
    .action(async (patterns: string[], opts: { snapshot: string[]; host: string[]; tag: string[]; lock: boolean }, cmd: Command) => {
      const { g, repo } = await cli.openRepo(cmd);
      const headed = new Set<string>();
      const found = await findInSnapshots(
        repo,
        { ...cli.operation(g), noLock: !opts.lock, patterns, snapshots: opts.snapshot, hosts: opts.host, tags: opts.tag },
        (snapshot, entry) => {
          const header = headed.has(snapshot.id) ? '' : `snapshot ${shortId(snapshot.id)} ${snapshot.time} ${snapshot.host}:\n`;
          headed.add(snapshot.id);
          cli.output.result(
            { type: 'match', snapshotId: snapshot.id, time: snapshot.time, host: snapshot.host, entry },
            `${header}  ${modeString(entry)} ${formatBytes(entry.size).padStart(10)}  ${listingTime(entry.mtime)}  ${entry.path}${entry.target !== undefined ? ` -> ${entry.target}` : ''}`,
          );
        },
      );
      cli.output.result(
        { type: 'find', patterns, ...found },
        `${found.matches} match(es) in ${found.snapshots} of ${found.searched} snapshot(s)`,
      );
    });
}
