import type { Command } from 'commander';
import { CairnError } from '../core/errors.ts';
import { validateStream } from '../core/log-archive.ts';
import { clientOptionsFrom, type WalClientOptions } from '../pitr/wal-client.ts';
import type { Cli, GlobalOptions } from './context.ts';
import type { StorageFlags } from './storage-options.ts';

/** The flags wal-push, wal-fetch and wal-daemon share. */
export interface WalFlags {
  stream?: string;
  spoolDir?: string;
  /** wal-fetch only: the restore's staging directory. */
  stageDir?: string;
}

export const STREAM_HELP = 'log stream (default: pg-<system identifier> from global/pg_control in the working directory)';

/** The repository URL itself (the daemon is found by it), with an error that speaks of the server's environment. */
export function requireRepo(g: GlobalOptions): string {
  if (!g.repo)
    throw new CairnError('Cairn.Usage', 'no repository given', {
      hint: "pass --repo URL or set CAIRN_REPOSITORY (archive_command and restore_command see the server's environment)",
    });
  return g.repo;
}

/** What the thin clients need: where the daemon is, and the global options it must be started with. */
export function walClientOptions(cli: Cli, cmd: Command, opts: WalFlags): WalClientOptions {
  const g = cmd.optsWithGlobals<GlobalOptions & StorageFlags>();
  return clientOptionsFrom(
    { ...g, repo: requireRepo(g) },
    {
      spoolDir: opts.spoolDir,
      stageDir: opts.stageDir,
      stream: opts.stream === undefined ? undefined : validateStream(opts.stream),
      env: cli.env,
      cwd: process.cwd(),
    },
  );
}
