import { readdir } from 'node:fs/promises';
import { resolve } from 'node:path';
import { availableParallelism } from 'node:os';
import { Command, CommanderError, Option } from 'commander';
import { parseCompression } from '../core/config.ts';
import { parseDurationMs } from '../core/duration.ts';
import { CairnError, ExitCode, errorMessage } from '../core/errors.ts';
import { Repository, type Who } from '../core/repository.ts';
import { shortId, type Snapshot } from '../core/snapshot.ts';
import { backup } from '../commands/backup.ts';
import { restore } from '../commands/restore.ts';
import { verify } from '../commands/verify.ts';
import { forget, forgetIds, setPin, type ForgetGroup, type GroupField } from '../commands/forget.ts';
import { prune } from '../commands/prune.ts';
import { stats } from '../commands/stats.ts';
import { record, type OperationContext } from '../commands/operation.ts';
import { readHistory } from '../core/history.ts';
import { engineByName, engines } from '../engines/registry.ts';
import { readLocks } from '../core/locks.ts';
import { retentionPolicySchema } from '../core/retention.ts';
import type { DeletableStorage } from '../core/storage.ts';
import { VERSION } from '../core/version.ts';
import { Output, formatBytes, formatDuration } from './output.ts';
import { initKeys, registerKeyCommands } from './key-commands.ts';
import { register as registerAgent } from './agent-commands.ts';
import { Cli, collect, nonNegativeInt, parsePercent, positiveInt, type GlobalOptions } from './context.ts';
import { addStorageOptions, finishRun, type StorageFlags } from './storage-options.ts';
import { register as registerCopy } from './copy-commands.ts';
import { dbOptions } from './db-options.ts';
import { register as registerBrowse } from './browse-commands.ts';
import { register as registerWal } from './wal-commands.ts';
import { register as registerBinlog } from './binlog-commands.ts';
import { register as registerPitr } from './pitr-commands.ts';
import { filterSnapshots, groupSnapshots, parseGroupBy } from '../commands/browse.ts';
import { describeReplay, measuredThroughputs, planPointInTime, type PointInTimePlan } from '../core/pitr-planning.ts';
import type { RecoveryTarget } from '../core/log-chain.ts';

/** Command modules: each adds its commands to the program (see context.ts). */
const commandModules: ((program: Command, cli: Cli) => void)[] = [
  registerCopy,
  registerBrowse,
  registerKeyCommands,
  registerAgent,
  registerWal,
  registerBinlog,
  registerPitr,
];

/** Runs the CLI and returns the process exit code (docs/exit-codes.md). Never calls process.exit. */
export async function main(argv: string[], env: NodeJS.ProcessEnv = process.env): Promise<number> {
  const cli = new Cli(env);
  const controller = cli.controller;
  let signals = 0;
  const onSignal = (signal: NodeJS.Signals): void => {
    if (++signals > 1) process.exit(ExitCode.cancelled);
    const outcome =
      cli.run.operation === 'restore'
        ? 'the restore target is incomplete (restore again into an empty directory, or with --force)'
        : 'nothing was committed';
    controller.abort(new CairnError('Cairn.Cancelled', `cancelled by ${signal}; ${outcome}`));
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);

  const program = new Command('cairn')
    .description('Encrypted, deduplicated, incremental backups of databases and directories')
    .version(VERSION)
    .addOption(new Option('-r, --repo <url>', 'repository: a directory, file:///path or s3://bucket/prefix').env('CAIRN_REPOSITORY'))
    .option('--password-file <file>', 'read the passphrase from this file (default: CAIRN_PASSWORD, or a prompt)')
    .option('--json', 'print JSON lines (the default when stdout is not a terminal)')
    .option('-q, --quiet', 'no progress line')
    .option('--lock-wait <duration>', 'when the repository is locked, keep trying this long (e.g. 30s, 10m)')
    .option(
      '--concurrency <n>',
      'pieces compressed and objects transferred at once (memory ≈ n × 24 MiB)',
      positiveInt,
      Math.min(8, Math.max(2, availableParallelism())),
    )
    .exitOverride()
    .configureOutput({ writeErr: (text) => process.stderr.write(text) })
    .hook('preAction', (_cmd, action) => {
      const g = action.optsWithGlobals<GlobalOptions>();
      cli.output = new Output({ json: Boolean(g.json) || !process.stdout.isTTY, quiet: Boolean(g.quiet) });
    });

  addStorageOptions(program).hook('preAction', (_cmd, action) => {
    cli.run.operation ??= action.name();
  });

  const openRepo = (cmd: Command): Promise<{ g: GlobalOptions; repo: Repository }> => cli.openRepo(cmd);
  const who = (host?: string): Who => cli.who(host);
  const locking = (g: GlobalOptions): { leaseMs?: number; lockWaitMs?: number } => cli.locking(g);

  program
    .command('init')
    .description('create a new repository')
    .option('--compression <codec>', 'default compression: zstd, zstd:LEVEL or none', 'zstd:1')
    .option(
      '--kms-key-id <arn>',
      'wrap the master key with this AWS KMS key (see docs/keys.md); with no passphrase given, restoring then needs KMS',
    )
    .action(async (opts: { compression: string; kmsKeyId?: string }, cmd: Command) => {
      const storage = await cli.storage(cmd);
      const keys = await initKeys(cli, cmd, opts.kmsKeyId);
      const repo = await Repository.init(storage, keys.wrap, who(), { compression: parseCompression(opts.compression) });
      await record({ repo, who: who(), progress: cli.output }, 'init', {
        repositoryId: repo.id,
        location: storage.location,
        ...(opts.kmsKeyId ? { kmsKeyId: opts.kmsKeyId } : {}),
      });
      if (keys.kmsOnly) cli.output.warn(keys.notice, { kmsOnly: true });
      cli.output.result(
        { type: 'init', repository: storage.location, id: repo.id, kmsOnly: keys.kmsOnly },
        `created repository ${repo.id.slice(0, 8)} at ${storage.location}\n${keys.notice}`,
      );
    });

  program
    .command('backup')
    .description('back up files and directories, or a database with --engine')
    .argument('[path...]', 'files or directories to back up (the files engine)')
    .option('-e, --exclude <pattern>', 'skip paths matching the pattern (repeatable)', collect, [])
    .option('-t, --tag <tag>', 'tag the snapshot (repeatable)', collect, [])
    .option('--host <name>', 'host name recorded in the snapshot')
    .option('--parent <snapshot>', 'compare against this snapshot instead of the latest of the same host and paths')
    .option('--compression <codec>', "zstd, zstd:LEVEL or none (default: the repository's)")
    .option('--engine <name>', 'a database engine instead of files (see `cairn engines`)')
    .option('--stop-cmd <command>', 'files engine, cold copy: run before reading (stops the service)')
    .option('--start-cmd <command>', 'files engine, cold copy: run afterwards, whatever happened (starts it again)')
    .option('--pre-hook <command>', 'run before the backup (any engine)')
    .option('--post-hook <command>', 'run after the backup, whatever happened; CAIRN_RESULT says success or failure')
    .option('--temp-dir <dir>', 'where engines that need local files may write them (default: the system temp dir)')
    .option('--parallel <n>', 'mariadb engine: files copied at once by mariabackup', positiveInt)
    .addOption(etcdFlags.prefix('back up only keys under this prefix (repeatable; default: every key)'))
    .addOption(etcdFlags.endpoints())
    .addOption(etcdFlags.cacert())
    .addOption(etcdFlags.cert())
    .addOption(etcdFlags.key())
    .addOption(dbOptions.host())
    .addOption(dbOptions.port())
    .addOption(dbOptions.socket())
    .addOption(dbOptions.user())
    .addOption(dbOptions.passwordFile())
    .addOption(dbOptions.defaultsFile())
    .addOption(dbOptions.name())
    .action(async (paths: string[], opts: BackupCliOptions, cmd: Command) => {
      const { g, repo } = await openRepo(cmd);
      const engine = opts.engine && opts.engine !== 'files' ? engineByName(opts.engine) : undefined;
      if (!engine && paths.length === 0)
        throw new CairnError('Cairn.Usage', 'nothing to back up', { hint: 'give paths, or --engine NAME with its connection options' });
      if (engine && paths.length > 0)
        throw new CairnError('Cairn.Usage', `the ${engine.name} engine takes no paths`, {
          hint: 'give the connection with --db-host/--db-socket and the databases with --db-name',
        });
      const engineOptions = engine
        ? engine.parseOptions({ ...engineOptionsFrom(opts), ...(opts.parallel ? { parallel: opts.parallel } : {}) })
        : undefined;
      const snapshot = await backup(repo, {
        paths,
        excludes: opts.exclude,
        tags: opts.tag,
        who: who(opts.host),
        compression: opts.compression ? parseCompression(opts.compression) : undefined,
        concurrency: g.concurrency,
        parent: opts.parent,
        progress: cli.output,
        signal: controller.signal,
        engine: engine
          ? {
              engine,
              options: engineOptions,
              source: `${engine.name}:${opts.dbName.length ? opts.dbName.join(',') : 'all'}@${opts.dbSocket ?? `${opts.dbHost ?? 'localhost'}:${opts.dbPort ?? ''}`}`,
            }
          : undefined,
        preHook: opts.preHook,
        postHook: opts.postHook,
        stopCmd: opts.stopCmd,
        startCmd: opts.startCmd,
        tempDir: opts.tempDir,
        env,
        ...locking(g),
      });
      cli.run.backup = snapshot.summary;
      cli.output.result(
        {
          type: 'summary',
          operation: 'backup',
          snapshotId: snapshot.id,
          engine: snapshot.engine,
          engineMetadata: snapshot.engineMetadata,
          ...snapshot.summary,
        },
        backupText(snapshot),
      );
      if (snapshot.summary.errors > 0) {
        throw new CairnError(
          'Cairn.PartialFailure',
          `snapshot ${shortId(snapshot.id)} was saved, but ${snapshot.summary.errors} path(s) could not be read`,
          { hint: 'see the warnings above' },
        );
      }
    });

  program
    .command('engines')
    .description('list the backup engines and what each needs')
    .action(() => {
      const list = [
        {
          name: 'files',
          description: 'files and directories; --stop-cmd/--start-cmd for a cold copy',
          requires: ['read access to the paths'],
        },
        ...[...engines.values()].map((e) => ({ name: e.name, description: e.description, requires: e.requires })),
      ];
      cli.output.result(
        { type: 'engines', engines: list },
        list.map((e) => `${e.name.padEnd(10)} ${e.description}\n           needs: ${e.requires.join('; ')}`).join('\n'),
      );
    });

  program
    .command('snapshots')
    .description('list snapshots')
    .option('--host <name>', 'only snapshots of this host (repeatable)', collect, [])
    .option('--tag <tags>', 'only snapshots with these tags (a,b: both; repeatable: any)', collect, [])
    .option('--group-by <fields>', 'group by host, paths, plan and/or tags (e.g. host,plan)')
    .action(async (opts: { host: string[]; tag: string[]; groupBy?: string }, cmd: Command) => {
      const { repo } = await openRepo(cmd);
      const listed = await repo.listSnapshots();
      for (const u of listed.unreadable) cli.output.warn(`snapshot ${u.id} cannot be read: ${u.error}`, { snapshot: u.id });
      const snapshots = filterSnapshots(listed.snapshots, { hosts: opts.host, tags: opts.tag });
      if (opts.groupBy === undefined) {
        cli.output.result({ type: 'snapshots', snapshots }, snapshotTable(snapshots));
        return;
      }
      const groupBy = parseGroupBy(opts.groupBy);
      const groups = groupSnapshots(snapshots, groupBy);
      cli.output.result(
        { type: 'snapshots', groupBy, groups },
        groups.map((gr) => `${groupTitle(gr.group)}\n${snapshotTable(gr.snapshots)}`).join('\n\n') || 'no snapshots',
      );
    });

  program
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
    .addOption(dbOptions.host())
    .addOption(dbOptions.port())
    .addOption(dbOptions.socket())
    .addOption(dbOptions.user())
    .addOption(dbOptions.passwordFile())
    .addOption(dbOptions.defaultsFile())
    .option('--owner <user>', "physical engines: give the restored data directory to this user (the database server's)")
    .option('--jobs <n>', 'pgdump: parallel pg_restore jobs (above 1 the dump is written to --temp-dir first)', positiveInt)
    .option('--if-empty', 'do nothing when the target directory already holds data (bootstrapping a replica)')
    .option('--wait-for-snapshot <duration>', 'keep looking this long for a snapshot to appear (e.g. 60s)')
    .option('--etcd-name <name>', "etcd: the restored member's name (default: default)")
    .option('--etcd-initial-cluster <list>', 'etcd: name=peerURL,... of the new cluster')
    .option('--etcd-initial-advertise-peer-urls <urls>', "etcd: the restored member's peer URLs (default: http://127.0.0.1:2380)")
    .addOption(etcdFlags.prefix("restore only the snapshot's keys under this prefix (repeatable)"))
    .option('--clear-prefix', 'etcd-keys: delete every key under the target prefix(es) before restoring')
    .option('--rename-prefix <old:new>', 'etcd-keys: restore keys under OLD as NEW (every restored key must start with OLD)')
    .addOption(etcdFlags.endpoints())
    .addOption(etcdFlags.cacert())
    .addOption(etcdFlags.cert())
    .addOption(etcdFlags.key())
    .action(async (ref: string, opts: RestoreCliOptions, cmd: Command) => {
      const { g, repo } = await openRepo(cmd);
      const target = recoveryTargetFrom(opts);
      if (opts.dryRun && !target)
        throw new CairnError('Cairn.Usage', '--dry-run plans a point-in-time restore', {
          hint: 'add --to-time (or --to-lsn, --to-xid, --to-gtid, --to-position)',
        });
      if (target && opts.dryRun) {
        const { plan, snapshot } = await planPointInTime(repo, {
          target,
          stream: opts.archiveStream,
          base: ref === 'latest' ? undefined : ref,
        });
        const described = describeReplay(plan, snapshot, await measuredThroughputs(repo));
        cli.output.result({ type: 'pitr-plan', dryRun: true, ...described }, pitrPlanText(described));
        return;
      }
      if (opts.ifEmpty && opts.target && (await readdir(opts.target).catch(() => [])).length > 0) {
        cli.output.result(
          { type: 'summary', operation: 'restore', skipped: true, target: opts.target },
          `${opts.target} already holds data; nothing restored (--if-empty)`,
        );
        return;
      }
      const started = Date.now();
      const { snapshot, result, replay } = await restore(repo, {
        snapshot: ref,
        waitForSnapshotMs: opts.waitForSnapshot ? parseDurationMs(opts.waitForSnapshot) : undefined,
        target: opts.target,
        targetDatabase: opts.targetDatabase,
        engineOptions: {
          ...engineOptionsFrom({ ...opts, dbName: [] }),
          ...(opts.owner ? { owner: opts.owner } : {}),
          ...(opts.jobs ? { jobs: opts.jobs } : {}),
          ...(opts.etcdName ? { name: opts.etcdName } : {}),
          ...(opts.etcdInitialCluster ? { initialCluster: opts.etcdInitialCluster } : {}),
          ...(opts.etcdInitialAdvertisePeerUrls ? { initialAdvertisePeerUrls: opts.etcdInitialAdvertisePeerUrls } : {}),
          ...(opts.clearPrefix ? { clearPrefix: true } : {}),
          ...(opts.renamePrefix !== undefined ? { renamePrefix: opts.renamePrefix } : {}),
          ...(opts.force ? { force: true } : {}),
        },
        env,
        includes: opts.include,
        force: Boolean(opts.force),
        ignoreErrors: Boolean(opts.ignoreErrors),
        concurrency: g.concurrency,
        progress: cli.output,
        signal: controller.signal,
        who: who(),
        ...locking(g),
        ...(target ? { pointInTime: { target, stream: opts.archiveStream, cairnArgv: cairnArgv(g) } } : {}),
      });
      const ms = Date.now() - started;
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
      if (result.errors.length > 0) throw new CairnError('Cairn.PartialFailure', `${result.errors.length} file(s) could not be restored`);
    });

  program
    .command('verify')
    .description('check the repository; with --read-data, read and authenticate all data')
    .option('--read-data', 'read every pack and check every piece')
    .option('--read-data-subset <percent>', 'read this percentage of the packs, chosen at random (e.g. 10%)')
    .action(async (opts: { readData?: boolean; readDataSubset?: string }, cmd: Command) => {
      const { g, repo } = await openRepo(cmd);
      const readData = opts.readData ? 1 : opts.readDataSubset ? parsePercent(opts.readDataSubset) : 0;
      const report = await verify(repo, {
        readData,
        concurrency: g.concurrency,
        progress: cli.output,
        who: who(),
        signal: controller.signal,
        ...locking(g),
      });
      cli.output.result({ type: 'verify', ...report }, verifyText(report));
      if (!report.ok)
        throw new CairnError(
          'Cairn.Damaged',
          `the repository has ${report.problems.length} problem(s) affecting ${report.affected.length} file(s)`,
          {
            hint: 'restore affected files from another snapshot or copy; a later backup re-uploads missing pieces of files that still exist',
          },
        );
    });

  const openForDelete = (cmd: Command): Promise<{ g: GlobalOptions; repo: Repository; storage: DeletableStorage }> => cli.openRepo(cmd);
  const opContext = (repo: Repository, g: GlobalOptions): OperationContext => cli.operation(repo, g);

  program
    .command('forget')
    .description(
      'apply a retention policy per group of snapshots, or forget the snapshots named, deleting their manifests (run prune to free the data)',
    )
    .argument('[snapshot...]', 'forget these snapshots (ids, unique prefixes or "latest") instead of applying a policy')
    .option('--keep-last <n>', 'keep the n newest snapshots', nonNegativeInt)
    .option('--keep-hourly <n>', 'keep the newest snapshot of each of the last n hours that have one', nonNegativeInt)
    .option('--keep-daily <n>', 'same, per day', nonNegativeInt)
    .option('--keep-weekly <n>', 'same, per ISO week', nonNegativeInt)
    .option('--keep-monthly <n>', 'same, per month', nonNegativeInt)
    .option('--keep-yearly <n>', 'same, per year', nonNegativeInt)
    .option('--keep-within <duration>', 'keep every snapshot within this long of the newest (e.g. 7d, 2w, 1y6M)')
    .option(
      '--keep-within-pitr <duration>',
      'keep a point-in-time recovery window this long: the snapshots in it and the base before it (prune keeps their log)',
    )
    .option('--keep-tag <tag>', 'always keep snapshots with this tag (repeatable)', collect, [])
    .option('--group-by <fields>', 'group snapshots by these fields: host,paths,plan,tags', 'host,paths,plan')
    .option('--dry-run', 'print the decisions and their reasons; delete nothing')
    .option('--force', 'with snapshot ids: forget pinned snapshots too')
    .action(async (ids: string[], opts: Record<string, unknown>, cmd: Command) => {
      const keepFlags = [
        'keepLast',
        'keepHourly',
        'keepDaily',
        'keepWeekly',
        'keepMonthly',
        'keepYearly',
        'keepWithin',
        'keepWithinPitr',
      ].filter((k) => opts[k] !== undefined);
      if ((opts.keepTag as string[]).length > 0) keepFlags.push('keepTag');
      if (ids.length > 0 && keepFlags.length > 0)
        throw new CairnError('Cairn.Usage', 'give either snapshot ids or --keep-* rules, not both', {
          hint: '`cairn forget ID...` forgets those snapshots; `cairn forget --keep-...` applies a policy',
        });
      const { g, repo, storage } = await openForDelete(cmd);
      if (ids.length > 0) {
        const removed = await forgetIds(repo, storage, {
          ids,
          dryRun: Boolean(opts.dryRun),
          force: Boolean(opts.force),
          ...opContext(repo, g),
        });
        cli.output.result(
          { type: 'forget', dryRun: Boolean(opts.dryRun), removed },
          [
            ...removed.map(
              (r) => `${opts.dryRun ? 'would remove' : 'removed'}  ${shortId(r.id)}  ${r.time}  ${r.host}${r.pinned ? '  (pinned)' : ''}`,
            ),
            ...(opts.dryRun ? [] : ['run `cairn prune` to free the space their data used']),
          ].join('\n'),
        );
        return;
      }
      const policy = retentionPolicySchema.parse({
        keepLast: opts.keepLast,
        keepHourly: opts.keepHourly,
        keepDaily: opts.keepDaily,
        keepWeekly: opts.keepWeekly,
        keepMonthly: opts.keepMonthly,
        keepYearly: opts.keepYearly,
        keepWithin: opts.keepWithin,
        keepWithinPitr: opts.keepWithinPitr,
        keepTags: (opts.keepTag as string[]).length > 0 ? opts.keepTag : undefined,
      });
      const groupBy = String(opts.groupBy)
        .split(',')
        .map((f) => f.trim())
        .filter(Boolean);
      for (const f of groupBy)
        if (!['host', 'paths', 'plan', 'tags'].includes(f))
          throw new CairnError('Cairn.Usage', `cannot group by ${JSON.stringify(f)}`, { hint: 'use host, paths, plan and/or tags' });
      const groups = await forget(repo, storage, {
        policy,
        groupBy: groupBy as GroupField[],
        dryRun: Boolean(opts.dryRun),
        ...opContext(repo, g),
      });
      cli.output.result({ type: 'forget', dryRun: Boolean(opts.dryRun), groups }, forgetText(groups, Boolean(opts.dryRun)));
    });

  for (const [name, pinned] of [
    ['pin', true],
    ['unpin', false],
  ] as const) {
    program
      .command(name)
      .description(
        pinned ? 'keep a snapshot whatever the retention policy says' : 'let the retention policy decide about a pinned snapshot again',
      )
      .argument('<snapshot>', 'snapshot id or unique prefix')
      .action(async (ref: string, _opts: unknown, cmd: Command) => {
        const { g, repo, storage } = await openForDelete(cmd);
        const snapshot = await setPin(repo, storage, ref, pinned, opContext(repo, g));
        cli.output.result({ type: name, snapshotId: snapshot.id }, `${pinned ? 'pinned' : 'unpinned'} snapshot ${shortId(snapshot.id)}`);
      });
  }

  program
    .command('prune')
    .description('delete data no snapshot uses and repack sparse packs (takes the exclusive lock)')
    .option('--dry-run', 'report what would be freed; change nothing')
    .option('--max-unused <percent>', 'repack a pack when more than this share of it is unused', '5%')
    .action(async (opts: { dryRun?: boolean; maxUnused: string }, cmd: Command) => {
      const { g, repo, storage } = await openForDelete(cmd);
      const report = await prune(repo, storage, {
        dryRun: Boolean(opts.dryRun),
        maxUnused: parsePercent(opts.maxUnused, true),
        concurrency: g.concurrency,
        ...opContext(repo, g),
      });
      cli.output.result(
        { type: 'prune', ...report },
        `${report.dryRun ? 'would delete' : 'deleted'} ${report.packsDeleted} pack(s) and repack ${report.packsRepacked}; ${report.dryRun ? 'would free' : 'freed'} ${formatBytes(report.bytesFreed)} (${formatBytes(report.bytesBefore)} → ${formatBytes(report.bytesAfter)})` +
          report.logs
            .filter((l) => l.filesRemoved > 0)
            .map(
              (l) =>
                `\n${l.stream}: ${report.dryRun ? 'would remove' : 'removed'} ${l.filesRemoved} archived log file(s), ${formatBytes(l.bytesRemoved)} (older than every base snapshot that needs them)`,
            )
            .join(''),
      );
    });

  program
    .command('unlock')
    .description('remove lock records of operations that ended or died (with --all, every lock record)')
    .option('--all', 'also remove locks that still look active: only when you know their processes are gone')
    .action(async (opts: { all?: boolean }, cmd: Command) => {
      const { g, repo, storage } = await openForDelete(cmd);
      const states = await readLocks(repo);
      let removed = 0;
      for (const s of states) {
        if (s.state === 'active' && !opts.all) continue;
        for (const key of s.keys) await storage.delete(key);
        removed++;
      }
      const active = states.filter((s) => s.state === 'active').length;
      await record(opContext(repo, g), 'unlock', { removed, all: Boolean(opts.all) });
      cli.output.result(
        { type: 'unlock', removed, stillActive: opts.all ? 0 : active },
        `removed ${removed} lock(s)${!opts.all && active ? `; ${active} active lock(s) left (use --all only if their processes are gone)` : ''}`,
      );
    });

  program
    .command('history')
    .description("show the repository's audit trail, oldest first")
    .action(async (_opts: unknown, cmd: Command) => {
      const { repo } = await openRepo(cmd);
      const events = await readHistory(repo);
      cli.output.result(
        { type: 'history', events },
        events.map((e) => `${e.time}  ${e.event.padEnd(17)} ${e.user}@${e.host}  ${historyDetail(e)}`).join('\n') || 'no history',
      );
    });

  program
    .command('stats')
    .description('sizes, deduplication and compression of the repository and each snapshot')
    .action(async (_opts: unknown, cmd: Command) => {
      const { repo } = await openRepo(cmd);
      const s = await stats(repo);
      cli.output.result(
        { type: 'stats', ...s },
        [
          `${s.snapshots} snapshot(s), ${s.pieces} pieces in ${s.packs} pack(s)`,
          `logical ${formatBytes(s.logicalBytes)}, unique ${formatBytes(s.uniqueBytes)}, stored ${formatBytes(s.storedBytes)}`,
          `deduplication ${s.dedupeRatio.toFixed(2)}×, compression ${s.compressionRatio.toFixed(2)}×`,
          ...s.perSnapshot.map(
            (p) => `  ${shortId(p.id)}  ${p.time}  ${p.host}  ${formatBytes(p.logicalBytes)} logical, ${formatBytes(p.addedBytes)} added`,
          ),
        ].join('\n'),
      );
    });

  program
    .command('check')
    .description("check the repository's structure without reading all data (same as verify without --read-data)")
    .action(async (_opts: unknown, cmd: Command) => {
      const { g, repo } = await openRepo(cmd);
      const report = await verify(repo, {
        readData: 0,
        concurrency: g.concurrency,
        progress: cli.output,
        who: who(),
        signal: controller.signal,
        ...locking(g),
      });
      cli.output.result({ type: 'verify', ...report }, verifyText(report));
      if (!report.ok)
        throw new CairnError(
          'Cairn.Damaged',
          `the repository has ${report.problems.length} problem(s) affecting ${report.affected.length} file(s)`,
        );
    });

  for (const register of commandModules) register(program, cli);

  try {
    await program.parseAsync(argv);
    await finishRun(program.opts<StorageFlags>(), cli.run, true);
    return cli.quietExitCode ?? ExitCode.ok;
  } catch (error) {
    if (error instanceof CommanderError) {
      if (error.code === 'commander.helpDisplayed' || error.code === 'commander.version' || error.exitCode === 0) return ExitCode.ok;
      return ExitCode.usage;
    }
    const failure =
      controller.signal.aborted && !(error instanceof CairnError && error.code !== 'Cairn.Cancelled')
        ? (controller.signal.reason as unknown)
        : error;
    const cairn = failure instanceof CairnError ? failure : new CairnError('Cairn.Failure', errorMessage(failure), { cause: failure });
    cli.output.error({ code: cairn.code, message: cairn.message, hint: cairn.hint, exitCode: cairn.exitCode });
    if (env.CAIRN_DEBUG && failure instanceof Error) process.stderr.write(`${failure.stack}\n`);
    await finishRun(program.opts<StorageFlags>(), cli.run, false);
    return cairn.exitCode;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}

interface DbCliOptions {
  dbHost?: string;
  dbPort?: string;
  dbSocket?: string;
  dbUser?: string;
  dbPasswordFile?: string;
  dbDefaultsFile?: string;
  dbName: string[];
  etcdPrefix?: string[];
  etcdEndpoints?: string;
  etcdCacert?: string;
  etcdCert?: string;
  etcdKey?: string;
}

interface BackupCliOptions extends DbCliOptions {
  parallel?: number;
  exclude: string[];
  tag: string[];
  host?: string;
  parent?: string;
  compression?: string;
  engine?: string;
  stopCmd?: string;
  startCmd?: string;
  preHook?: string;
  postHook?: string;
  tempDir?: string;
}

/** The point-in-time target of restore's --to-* flags, if any (at most one). */
function recoveryTargetFrom(opts: RestoreCliOptions): RecoveryTarget | undefined {
  const given = [opts.toTime, opts.toLsn, opts.toXid, opts.toGtid, opts.toPosition].filter((v) => v !== undefined);
  if (given.length === 0) return undefined;
  if (given.length > 1)
    throw new CairnError('Cairn.Usage', 'give one recovery target', {
      hint: 'use one of --to-time, --to-lsn, --to-xid, --to-gtid, --to-position',
    });
  if (opts.toTime !== undefined) {
    const ms = Date.parse(opts.toTime);
    if (Number.isNaN(ms))
      throw new CairnError('Cairn.Usage', `invalid --to-time ${JSON.stringify(opts.toTime)}`, {
        hint: 'give an ISO-8601 time, e.g. 2026-11-23T10:15:00Z (without a zone it is local time)',
      });
    return { time: new Date(ms).toISOString() };
  }
  if (opts.toLsn !== undefined) return { lsn: opts.toLsn };
  if (opts.toXid !== undefined) {
    if (!/^\d+$/.test(opts.toXid))
      throw new CairnError('Cairn.Usage', `invalid --to-xid ${JSON.stringify(opts.toXid)}`, {
        hint: 'a transaction id is a number (txid_current())',
      });
    return { xid: opts.toXid };
  }
  if (opts.toGtid !== undefined) return { gtid: opts.toGtid };
  return { position: opts.toPosition as string };
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

interface RestoreCliOptions extends Omit<DbCliOptions, 'dbName'> {
  toTime?: string;
  toLsn?: string;
  toXid?: string;
  toGtid?: string;
  toPosition?: string;
  archiveStream?: string;
  dryRun?: boolean;
  owner?: string;
  jobs?: number;
  ifEmpty?: boolean;
  waitForSnapshot?: string;
  etcdName?: string;
  etcdInitialCluster?: string;
  etcdInitialAdvertisePeerUrls?: string;
  clearPrefix?: boolean;
  renamePrefix?: string;
  target?: string;
  targetDatabase?: string;
  include: string[];
  force?: boolean;
  ignoreErrors?: boolean;
}

/** The etcd-keys engine's connection (etcdctl's own variables are read too) and prefix flags. */
const etcdFlags = {
  prefix: (what: string) => new Option('--etcd-prefix <prefix>', `etcd-keys: ${what}`).argParser(collect).default([]),
  endpoints: () =>
    new Option('--etcd-endpoints <urls>', 'etcd-keys: client URLs, comma-separated (default: http://--db-host:--db-port)').env(
      'ETCDCTL_ENDPOINTS',
    ),
  cacert: () => new Option('--etcd-cacert <file>', 'etcd-keys: CA bundle to verify the server (TLS)').env('ETCDCTL_CACERT'),
  cert: () => new Option('--etcd-cert <file>', 'etcd-keys: client certificate (TLS)').env('ETCDCTL_CERT'),
  key: () => new Option('--etcd-key <file>', 'etcd-keys: client certificate key (TLS)').env('ETCDCTL_KEY'),
};

function engineOptionsFrom(opts: DbCliOptions): Record<string, unknown> {
  const raw: Record<string, unknown> = {
    host: opts.dbHost,
    port: opts.dbPort,
    socket: opts.dbSocket,
    user: opts.dbUser,
    passwordFile: opts.dbPasswordFile,
    defaultsFile: opts.dbDefaultsFile,
    databases: opts.dbName,
    prefixes: opts.etcdPrefix?.length ? opts.etcdPrefix : undefined,
    endpoints: opts.etcdEndpoints,
    cacert: opts.etcdCacert,
    cert: opts.etcdCert,
    key: opts.etcdKey,
  };
  return Object.fromEntries(Object.entries(raw).filter(([, v]) => v !== undefined));
}

function backupText(s: Snapshot): string {
  const m = s.summary;
  return [
    `snapshot ${shortId(s.id)} saved`,
    `  files: ${m.filesNew} new, ${m.filesChanged} changed, ${m.filesUnchanged} unchanged (${m.dirs} directories)`,
    `  data:  ${formatBytes(m.bytesNew)} new, ${formatBytes(m.bytesChanged)} changed, ${formatBytes(m.bytesUnchanged)} unchanged; ${formatBytes(m.bytesRead)} read`,
    `  added to the repository: ${formatBytes(m.bytesAdded)} stored (${formatBytes(m.rawBytesAdded)} before compression) in ${formatDuration(m.durationMs)}`,
  ].join('\n');
}

function snapshotTable(snapshots: Snapshot[]): string {
  if (snapshots.length === 0) return 'no snapshots';
  const rows = snapshots.map((s) => [
    shortId(s.id),
    s.time.replace('T', ' ').replace(/\.\d+Z$/, 'Z'),
    s.host,
    s.tags.join(','),
    formatBytes(s.summary.totalBytes),
    formatBytes(s.summary.bytesAdded),
    s.paths.join(' '),
  ]);
  const header = ['ID', 'Time', 'Host', 'Tags', 'Size', 'Added', 'Paths'];
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] as string).length)));
  const line = (r: string[]): string => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i] as number))).join('  ');
  return [line(header), ...rows.map(line), `${snapshots.length} snapshot(s)`].join('\n');
}

function groupTitle(group: Record<string, unknown>): string {
  return Object.entries(group)
    .map(([k, v]) => `${k} ${Array.isArray(v) ? v.join(',') || '(none)' : typeof v === 'string' ? v : '(none)'}`)
    .join(', ');
}

function forgetText(groups: ForgetGroup[], dryRun: boolean): string {
  const lines: string[] = [];
  for (const g of groups) {
    lines.push(`group ${JSON.stringify(g.group)}: keep ${g.keep.length}, ${dryRun ? 'would remove' : 'removed'} ${g.remove.length}`);
    for (const d of g.keep) lines.push(`  keep    ${shortId(d.id)}  ${d.time}  ${d.reasons.join('; ')}`);
    for (const d of g.remove) lines.push(`  ${dryRun ? 'would remove' : 'remove'}  ${shortId(d.id)}  ${d.time}  ${d.reasons.join('; ')}`);
  }
  if (!dryRun && groups.some((g) => g.remove.length > 0)) lines.push('run `cairn prune` to free the space their data used');
  return lines.join('\n') || 'no snapshots';
}

function historyDetail(e: Record<string, unknown>): string {
  const skip = new Set(['time', 'event', 'host', 'user', 'tool']);
  return Object.entries(e)
    .filter(([k, v]) => !skip.has(k) && v !== undefined && typeof v !== 'object')
    .map(([k, v]) => `${k}=${String(v)}`)
    .join(' ')
    .slice(0, 200);
}

function verifyText(r: Awaited<ReturnType<typeof verify>>): string {
  const lines = [
    `checked ${r.snapshots} snapshot(s), ${r.packs} pack(s)${r.packsRead ? `; read ${r.packsRead} pack(s), ${r.piecesChecked} piece(s), ${formatBytes(r.bytesRead)}` : ''}`,
  ];
  for (const p of r.problems) lines.push(`damaged: ${p.object}: ${p.problem}`);
  for (const a of r.affected) lines.push(`affected: snapshot ${shortId(a.snapshot)} ${a.path}: ${a.problem}`);
  lines.push(r.ok ? 'no problems found' : `${r.problems.length} problem(s), ${r.affected.length} affected file(s)`);
  return lines.join('\n');
}
