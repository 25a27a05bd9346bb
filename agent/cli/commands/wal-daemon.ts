import { setTimeout as sleep } from 'node:timers/promises';
import type { Command } from 'commander';
import { parseDurationMs } from '../../core/duration.ts';
import { CairnError } from '../../core/errors.ts';
import { LogArchive, validateStream } from '../../core/log-archive.ts';
import { askRunning } from '../../pitr/wal-client.ts';
import { runWalDaemon } from '../../pitr/wal-daemon.ts';
import type { DaemonStatus } from '../../pitr/wal-protocol.ts';
import { processAlive } from '../../core/lock-file.ts';
import { chooseSpoolDir, repositoryIdentity, spoolDaemons, spoolPaths, type SpoolPaths } from '../../pitr/wal-spool.ts';
import type { Cli } from '../context.ts';
import { requireRepo, type WalFlags } from '../wal-options.ts';

const DEFAULT_IDLE_MS = 10 * 60_000;

/** `cairn wal-daemon`: the process behind wal-push and wal-fetch, or --status/--stop of the running ones. */
export function registerWalDaemon(program: Command, cli: Cli): void {
  program
    .command('wal-daemon')
    .description(
      'the process behind wal-push and wal-fetch: opens the repository once and serves them on a Unix socket; started on demand, stops when idle (CAIRN_WAL_DAEMON_IDLE, default 10m)',
    )
    .option('--stream <name>', 'log stream to serve (pg-<system identifier>)')
    .option('--spool-dir <dir>', 'socket, pid file, log and prefetched WAL (see wal-push)')
    .option(
      '--stop',
      'stop the daemon of this repository and --stream, or without --stream every daemon in the spool directory, and wait for it to exit',
    )
    .option('--status', "print the running daemon's state (pid, requests, prefetched files)")
    .action(async (opts: WalFlags & { stop?: boolean; status?: boolean }, cmd: Command) => {
      const dir = await chooseSpoolDir(opts.spoolDir, cli.env);
      if (opts.stop || opts.status) {
        const g = cli.globals(cmd);
        const daemons = opts.stream ? [spoolPaths(dir, requireRepo(g), validateStream(opts.stream))] : await spoolDaemons(dir);
        if (opts.stop) await stopDaemons(cli, daemons);
        else await printStatus(cli, daemons);
        return;
      }
      if (!opts.stream)
        throw new CairnError('Cairn.Usage', 'wal-daemon needs --stream', {
          hint: 'give --stream pg-<system identifier>; wal-push and wal-fetch start it with the right one',
        });
      const stream = validateStream(opts.stream);
      const g = cli.globals(cmd);
      const repository = repositoryIdentity(requireRepo(g));
      await runWalDaemon({
        spool: spoolPaths(dir, repository, stream),
        stream,
        repository,
        openArchive: async () => new LogArchive((await cli.openRepo(cmd)).repo, stream),
        idleMs: idleMs(cli.env),
        env: cli.env,
        host: cli.who().host,
        signal: cli.signal,
      });
    });
}

function idleMs(env: NodeJS.ProcessEnv): number {
  const text = env.CAIRN_WAL_DAEMON_IDLE?.trim();
  if (!text) return DEFAULT_IDLE_MS;
  return /^\d+(\.\d+)?$/.test(text) ? Number(text) * 1000 : parseDurationMs(text);
}

async function printStatus(cli: Cli, daemons: SpoolPaths[]): Promise<void> {
  const statuses: DaemonStatus[] = [];
  for (const spool of daemons) {
    const answer = await askRunning(spool, { v: 1, op: 'status' });
    if (answer?.op === 'status') statuses.push(answer.status);
  }
  cli.output.result(
    { type: 'wal-daemon', running: statuses },
    statuses.length === 0
      ? 'no WAL daemon is running'
      : statuses
          .map(
            (s) =>
              `pid ${s.pid}: ${s.stream} in ${s.repository}, since ${s.startedAt}; ${s.pushed} pushed, ${s.fetched} fetched (${s.servedFromPrefetch} prefetched)`,
          )
          .join('\n'),
  );
}

async function stopDaemons(cli: Cli, daemons: SpoolPaths[]): Promise<void> {
  const stopped: number[] = [];
  for (const spool of daemons) {
    const status = await askRunning(spool, { v: 1, op: 'status' });
    if (status?.op !== 'status') continue;
    await askRunning(spool, { v: 1, op: 'stop' });
    // It finishes uploads already under way (at most 30 s) before it exits: wait, so "stopped" means gone.
    const deadline = Date.now() + 40_000;
    while (processAlive(status.status.pid) && Date.now() < deadline) await sleep(50);
    if (processAlive(status.status.pid))
      throw new CairnError('Cairn.Failure', `the WAL daemon (pid ${status.status.pid}) did not stop within 40 s`, {
        hint: `see its log ${spool.log}; kill ${status.status.pid} stops it at once`,
      });
    stopped.push(status.status.pid);
  }
  cli.output.result(
    { type: 'wal-daemon', stopped },
    stopped.length === 0 ? 'no WAL daemon was running' : `stopped WAL daemon${stopped.length > 1 ? 's' : ''} ${stopped.join(', ')}`,
  );
}
