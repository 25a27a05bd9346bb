import { resolve } from 'node:path';
import type { Command } from 'commander';
import type { SnapshotFilter } from '../commands/snapshot-selector.ts';
import { collect } from './context.ts';

/** The flags of a command that takes one snapshot: what `latest` means there. */
export interface LatestFilterFlags {
  host: string[];
  path: string[];
  tag: string[];
}

/**
 * `--host`, `--path` and `--tag` as restic has them on restore, ls, dump and diff: `latest` is then
 * the newest snapshot of that host, of a backup of that path, carrying those tags. An id is taken
 * as it is.
 */
export function addLatestFilterFlags(command: Command): Command {
  return command
    .option('--host <name>', '"latest" among snapshots of this host (repeatable: any of them)', collect, [])
    .option('--path <path>', '"latest" among backups of this path (repeatable: all of them)', collect, [])
    .option('--tag <a,b>', '"latest" among snapshots with these tags (a,b needs both; repeatable: any set)', collect, []);
}

/** The filter the flags give, or undefined when none was given. */
export function latestFilterFrom(flags: LatestFilterFlags): SnapshotFilter | undefined {
  if (flags.host.length === 0 && flags.path.length === 0 && flags.tag.length === 0) return undefined;
  return { hosts: flags.host, paths: flags.path.map((p) => resolve(p)), tags: flags.tag };
}
