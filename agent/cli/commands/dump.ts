import { Option, type Command } from 'commander';
import { dumpSnapshotFile } from '../../commands/browse.ts';
import { DUMP_ARCHIVES } from '../../commands/file-dump.ts';
import type { Cli } from '../context.ts';
import { addLatestFilterFlags, latestFilterFrom, type LatestFilterFlags } from '../latest-filter.ts';
import { Output } from '../output.ts';

/** `cairn dump`: a file of a snapshot on stdout, or a directory as a tar archive. */
export function registerDump(program: Command, cli: Cli): void {
  const command = program
    .command('dump')
    .description('write a file of a snapshot to stdout byte for byte, or a directory (/ for all of it) as a tar archive')
    .argument('<snapshot>', 'snapshot id (or a unique prefix), or "latest"')
    .argument('<path>', 'path of the file or directory inside the snapshot')
    .addOption(
      new Option('--archive <format>', "the archive format a directory is written in (as restic's; a file is always written as it is)")
        .choices(DUMP_ARCHIVES)
        .default('tar'),
    )
    .option(
      '--no-lock',
      'take no lock and write nothing to the repository (one this host cannot write: a replica, a read-only mount or role); a prune running meanwhile could remove what it reads',
    );
  addLatestFilterFlags(command).action(async (ref: string, path: string, opts: LatestFilterFlags & { lock: boolean }, cmd: Command) => {
    // stdout carries the file's bytes (or the archive) only: messages go to stderr, as text.
    cli.output = new Output({ json: false, quiet: true, streams: cli.streams });
    const { g, repo } = await cli.openRepo(cmd);
    await dumpSnapshotFile(repo, {
      ...cli.operation(g),
      noLock: !opts.lock,
      latestFilter: latestFilterFrom(opts),
      snapshot: ref,
      path,
      out: cli.streams.stdout,
    });
  });
}
