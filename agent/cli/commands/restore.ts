import { resolve } from 'node:path';
import type { Command } from 'commander';
import { parseDurationMs } from '../../core/duration.ts';
import { engineOptionsFromFlags } from '../../core/engine-options/flags.ts';
import { CairnError } from '../../core/errors.ts';
import { describeReplay, measuredThroughputs, planPointInTime, type PointInTimePlan } from '../../core/pitr-planning.ts';
import { shortId } from '../../core/snapshot.ts';
import { restore, targetAlreadyHoldsData, type RestoreDone } from '../../commands/restore.ts';
import { collect, type Cli, type GlobalOptions } from '../context.ts';
import { addEngineFlags } from '../engine-flags.ts';
import { addLatestFilterFlags, latestFilterFrom, type LatestFilterFlags } from '../latest-filter.ts';
import { formatBytes, formatDuration } from '../output.ts';
import { recoveryTargetFrom, type RecoveryTargetFlags } from '../recovery-target.ts';

interface RestoreFlags extends RecoveryTargetFlags, LatestFilterFlags {
  archiveStream?: string;
  dryRun?: boolean;
  ifEmpty?: boolean;
  waitForSnapshot?: string;
  target?: string;
  targetDatabase?: string;
  tempDir?: string;
  include: string[];
  force?: boolean;
  ignoreErrors?: boolean;
  lock: boolean;
}

/** `cairn restore`: a snapshot into a directory or a database server, or to a point in time (docs/pitr.md). */
export function registerRestore(program: Command, cli: Cli): void {
  const command = program
    .command('restore')
    .description('restore a snapshot into a directory (files, physical engines) or a database server (logical engines)')
    .argument(
      '[snapshot]',
      'snapshot id (or a unique prefix), or "latest"; with --to-*, the base to replay from (default: the newest whose log reaches the target)',
      'latest',
    )
    .option('--target <dir>', 'directory to restore into (must be empty unless --force)')
    .option('--to-time <time>', 'point-in-time recovery: replay the archived log up to this time (ISO-8601, e.g. 2026-11-23T10:15:00Z)')
    .option('--to-lsn <lsn>', 'postgres: replay WAL up to this LSN (e.g. 0/3000148)')
    .option('--to-xid <xid>', 'postgres: replay WAL up to and including this transaction')
    .option('--to-gtid <gtid>', 'mariadb: replay binlogs up to and including this GTID (domain-server-seq)')
    .option('--to-position <file:pos>', 'mariadb: replay binlogs up to this binlog file and position')
    .option('--archive-stream <stream>', 'the log stream to replay, when the repository holds several (see `cairn pitr status`)')
    .option('--dry-run', 'with --to-*: print the plan (base snapshot, log range, bytes, estimated time) and change nothing')
    .option('--target-database <name>', 'logical engines: restore into this database instead of the one backed up')
    .option('-i, --include <pattern>', 'restore only paths matching the pattern (repeatable)', collect, [])
    .option('--force', 'restore into a non-empty directory, replacing what is in the way')
    .option('--ignore-errors', 'restore what can be restored when some data is damaged (exit code 3)')
    .option('--if-empty', 'do nothing when the target directory already holds data (bootstrapping a replica)')
    .option(
      '--no-lock',
      'take no lock and write nothing to the repository (one this host cannot write: a replica, a read-only mount or role); a prune running meanwhile could remove what it reads',
    )
    .option('--wait-for-snapshot <duration>', 'keep looking this long for a snapshot to appear (e.g. 60s)')
    .option(
      '--temp-dir <dir>',
      'where engines that need local files may write them, e.g. pgdump with --jobs (default: the system temp dir)',
    );
  addLatestFilterFlags(command);
  addEngineFlags(command, 'restore', cli.engines.catalog.specs).action(async (ref: string, opts: RestoreFlags, cmd: Command) => {
    const { g, repo } = await cli.openRepo(cmd);
    const target = recoveryTargetFrom(opts);
    const latestFilter = latestFilterFrom(opts);
    if (target && latestFilter)
      throw new CairnError('Cairn.Usage', '--host, --path and --tag choose "latest"; a point-in-time restore chooses its base itself', {
        hint: 'name the base snapshot by its id instead, or leave the filters out',
      });
    if (opts.dryRun && !target)
      throw new CairnError('Cairn.Usage', '--dry-run plans a point-in-time restore', {
        hint: 'add --to-time (or --to-lsn, --to-xid, --to-gtid, --to-position)',
      });
    if (target && opts.dryRun) {
      const base = ref === 'latest' ? undefined : ref;
      const { plan, snapshot } = await planPointInTime(repo, { target, stream: opts.archiveStream, base });
      const described = describeReplay(plan, snapshot, await measuredThroughputs(repo));
      cli.output.result({ type: 'pitr-plan', dryRun: true, ...described }, pitrPlanText(described));
      return;
    }
    if (await targetAlreadyHoldsData(opts)) {
      cli.output.result(
        { type: 'summary', operation: 'restore', skipped: true, target: opts.target },
        `${opts.target ?? ''} already holds data; nothing restored (--if-empty)`,
      );
      return;
    }
    const started = Date.now();
    const done = await restore(repo, {
      ...cli.operation(g),
      noLock: !opts.lock,
      snapshot: ref,
      latestFilter,
      waitForSnapshotMs: opts.waitForSnapshot !== undefined ? parseDurationMs(opts.waitForSnapshot) : undefined,
      target: opts.target,
      targetDatabase: opts.targetDatabase,
      // The snapshot's engine reads its own flags (restore's --force too, for etcd-keys).
      engineOptions: (spec) => engineOptionsFromFlags(spec, 'restore', cmd.opts()),
      engines: cli.engines,
      env: cli.env,
      tempDir: opts.tempDir,
      includes: opts.include,
      force: Boolean(opts.force),
      ignoreErrors: Boolean(opts.ignoreErrors),
      ...(target ? { pointInTime: { target, stream: opts.archiveStream, cairnArgv: cairnArgv(g) } } : {}),
    });
    printRestored(cli, done, opts, Date.now() - started);
    if (done.result.errors.length > 0)
      throw new CairnError('Cairn.PartialFailure', `${done.result.errors.length} file(s) could not be restored`);
  });
}

function printRestored(cli: Cli, { snapshot, result, replay }: RestoreDone, opts: RestoreFlags, ms: number): void {
  const where = opts.target ?? (opts.targetDatabase ? `database ${opts.targetDatabase}` : 'the server');
  const replayed = replay
    ? {
        pointInTime: replay.plan.describe,
        logStream: replay.plan.stream,
        logFiles: replay.files,
        logBytes: replay.bytes,
        replay: replay.summary,
      }
    : {};
  cli.output.result(
    {
      type: 'summary',
      operation: 'restore',
      snapshotId: snapshot.id,
      engine: snapshot.engine,
      target: where,
      ...result,
      ...replayed,
      durationMs: ms,
    },
    `restored snapshot ${shortId(snapshot.id)} (${snapshot.engine}) into ${where}: ${result.files} files, ${result.dirs} directories, ${result.symlinks} symlinks, ${formatBytes(result.bytes)} in ${formatDuration(ms)}` +
      (replay ? `\n${replay.summary}` : '') +
      (result.errors.length
        ? `\n${result.errors.length} file(s) could not be restored:\n${result.errors.map((e) => `  ${e.path}: ${e.error}`).join('\n')}`
        : ''),
  );
}

/** How a restored server calls this cairn back (restore_command): the same program, repository and passphrase file. */
function cairnArgv(g: GlobalOptions): string[] {
  const repo = g.repo ?? '';
  return [
    process.execPath,
    resolve(process.argv[1] ?? 'cairn'),
    '--repo',
    /^[a-z0-9]+:\/\//.test(repo) ? repo : resolve(repo),
    ...(g.passwordFile ? ['--password-file', resolve(g.passwordFile)] : []),
  ];
}

function pitrPlanText(p: PointInTimePlan): string {
  return [
    `base snapshot ${shortId(p.snapshot.id)} (${p.snapshot.engine}, ${p.snapshot.time} on ${p.snapshot.host}, ${formatBytes(p.snapshot.totalBytes)})`,
    `log: ${p.logRange.stream}, ${p.logRange.files} file(s) ${p.logRange.firstFile} … ${p.logRange.lastFile}, ${formatBytes(p.logRange.bytes)}, replayed to ${p.logRange.target}`,
    `window of this base: ${p.logRange.window.from} to ${p.logRange.window.to}`,
    `to fetch: ${formatBytes(p.bytes)}, estimated ${formatDuration(p.estimatedSeconds * 1000)} (${formatBytes(p.throughput.bytesPerSecond)}/s, ${p.throughput.basis})`,
    ...p.steps.map((s, i) => `${i + 1}. ${s}`),
  ].join('\n');
}
