import { hostname, userInfo, availableParallelism } from 'node:os';
import { Command, CommanderError, Option } from 'commander';
import { parseCompression } from '../core/config.ts';
import { CairnError, ExitCode, errorMessage } from '../core/errors.ts';
import { Repository, type Who } from '../core/repository.ts';
import { shortId, type Snapshot } from '../core/snapshot.ts';
import { backup } from '../commands/backup.ts';
import { restore } from '../commands/restore.ts';
import { verify } from '../commands/verify.ts';
import { openStorage } from '../storage/open.ts';
import { VERSION } from '../version.ts';
import { Output, formatBytes, formatDuration } from './output.ts';
import { readPassphrase } from './passphrase.ts';

interface GlobalOptions {
  repo?: string;
  passwordFile?: string;
  json?: boolean;
  quiet?: boolean;
  concurrency: number;
}

const collect = (value: string, previous: string[]): string[] => [...previous, value];

function positiveInt(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1 || n > 64) throw new CairnError('Cairn.Usage', `expected a whole number from 1 to 64, got ${JSON.stringify(value)}`);
  return n;
}

/** Runs the CLI and returns the process exit code (docs/exit-codes.md). Never calls process.exit. */
export async function main(argv: string[], env: NodeJS.ProcessEnv = process.env): Promise<number> {
  let output = new Output({ json: !process.stdout.isTTY, quiet: false });
  const controller = new AbortController();
  let signals = 0;
  const onSignal = (signal: NodeJS.Signals): void => {
    if (++signals > 1) process.exit(ExitCode.cancelled);
    controller.abort(new CairnError('Cairn.Cancelled', `cancelled by ${signal}; nothing was committed`));
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
    .option('--concurrency <n>', 'pieces compressed and objects transferred at once (memory ≈ n × 24 MiB)', positiveInt, Math.min(8, Math.max(2, availableParallelism())))
    .exitOverride()
    .configureOutput({ writeErr: (text) => process.stderr.write(text) })
    .hook('preAction', (_cmd, action) => {
      const g = action.optsWithGlobals<GlobalOptions>();
      output = new Output({ json: Boolean(g.json) || !process.stdout.isTTY, quiet: Boolean(g.quiet) });
    });

  const context = async (cmd: Command, confirm = false): Promise<{ g: GlobalOptions; passphrase: string; storage: Awaited<ReturnType<typeof openStorage>> }> => {
    const g = cmd.optsWithGlobals<GlobalOptions>();
    if (!g.repo) throw new CairnError('Cairn.Usage', 'no repository given', { hint: 'pass --repo URL or set CAIRN_REPOSITORY' });
    const storage = await openStorage(g.repo, env);
    const passphrase = await readPassphrase({ env, passwordFile: g.passwordFile, confirm });
    return { g, passphrase, storage };
  };
  const openRepo = async (cmd: Command): Promise<{ g: GlobalOptions; repo: Repository }> => {
    const { g, passphrase, storage } = await context(cmd);
    return { g, repo: await Repository.open(storage, passphrase) };
  };
  const who = (host?: string): Who => ({ host: host ?? hostname(), user: currentUser() });

  program
    .command('init')
    .description('create a new repository')
    .option('--compression <codec>', 'default compression: zstd, zstd:LEVEL or none', 'zstd:1')
    .action(async (opts: { compression: string }, cmd: Command) => {
      const { passphrase, storage } = await context(cmd, true);
      const repo = await Repository.init(storage, passphrase, who(), { compression: parseCompression(opts.compression) });
      output.result(
        { type: 'init', repository: storage.location, id: repo.id },
        `created repository ${repo.id.slice(0, 8)} at ${storage.location}\nKeep the passphrase safe: without it the backups cannot be read.`,
      );
    });

  program
    .command('backup')
    .description('back up files and directories')
    .argument('<path...>', 'files or directories to back up')
    .option('-e, --exclude <pattern>', 'skip paths matching the pattern (repeatable)', collect, [])
    .option('-t, --tag <tag>', 'tag the snapshot (repeatable)', collect, [])
    .option('--host <name>', 'host name recorded in the snapshot')
    .option('--parent <snapshot>', 'compare against this snapshot instead of the latest of the same host and paths')
    .option('--compression <codec>', 'zstd, zstd:LEVEL or none (default: the repository\'s)')
    .action(async (paths: string[], opts: { exclude: string[]; tag: string[]; host?: string; parent?: string; compression?: string }, cmd: Command) => {
      const { g, repo } = await openRepo(cmd);
      const snapshot = await backup(repo, {
        paths,
        excludes: opts.exclude,
        tags: opts.tag,
        who: who(opts.host),
        compression: opts.compression ? parseCompression(opts.compression) : undefined,
        concurrency: g.concurrency,
        parent: opts.parent,
        progress: output,
        signal: controller.signal,
      });
      output.result({ type: 'summary', operation: 'backup', snapshotId: snapshot.id, ...snapshot.summary }, backupText(snapshot));
      if (snapshot.summary.errors > 0) {
        throw new CairnError('Cairn.PartialFailure', `snapshot ${shortId(snapshot.id)} was saved, but ${snapshot.summary.errors} path(s) could not be read`, { hint: 'see the warnings above' });
      }
    });

  program
    .command('snapshots')
    .description('list snapshots')
    .action(async (_opts: unknown, cmd: Command) => {
      const { repo } = await openRepo(cmd);
      const { snapshots, unreadable } = await repo.listSnapshots();
      for (const u of unreadable) output.warn(`snapshot ${u.id} cannot be read: ${u.error}`, { snapshot: u.id });
      output.result({ type: 'snapshots', snapshots }, snapshotTable(snapshots));
    });

  program
    .command('restore')
    .description('restore a snapshot into a directory')
    .argument('<snapshot>', 'snapshot id (or a unique prefix), or "latest"')
    .requiredOption('--target <dir>', 'directory to restore into (must be empty unless --force)')
    .option('-i, --include <pattern>', 'restore only paths matching the pattern (repeatable)', collect, [])
    .option('--force', 'restore into a non-empty directory, replacing what is in the way')
    .option('--ignore-errors', 'restore what can be restored when some data is damaged (exit code 3)')
    .action(async (ref: string, opts: { target: string; include: string[]; force?: boolean; ignoreErrors?: boolean }, cmd: Command) => {
      const { g, repo } = await openRepo(cmd);
      const started = Date.now();
      const { snapshot, result } = await restore(repo, {
        snapshot: ref,
        target: opts.target,
        includes: opts.include,
        force: Boolean(opts.force),
        ignoreErrors: Boolean(opts.ignoreErrors),
        concurrency: g.concurrency,
        progress: output,
        signal: controller.signal,
      });
      const ms = Date.now() - started;
      output.result(
        { type: 'summary', operation: 'restore', snapshotId: snapshot.id, target: opts.target, ...result, durationMs: ms },
        `restored snapshot ${shortId(snapshot.id)} into ${opts.target}: ${result.files} files, ${result.dirs} directories, ${result.symlinks} symlinks, ${formatBytes(result.bytes)} in ${formatDuration(ms)}` +
          (result.errors.length ? `\n${result.errors.length} file(s) could not be restored:\n${result.errors.map((e) => `  ${e.path}: ${e.error}`).join('\n')}` : ''),
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
      const report = await verify(repo, { readData, concurrency: g.concurrency, progress: output });
      output.result({ type: 'verify', ...report }, verifyText(report));
      if (!report.ok) throw new CairnError('Cairn.Damaged', `the repository has ${report.problems.length} problem(s) affecting ${report.affected.length} file(s)`, { hint: 'restore affected files from another snapshot or copy; a later backup re-uploads missing pieces of files that still exist' });
    });

  try {
    await program.parseAsync(argv);
    return ExitCode.ok;
  } catch (error) {
    if (error instanceof CommanderError) {
      if (error.code === 'commander.helpDisplayed' || error.code === 'commander.version' || error.exitCode === 0) return ExitCode.ok;
      return ExitCode.usage;
    }
    const failure = controller.signal.aborted && !(error instanceof CairnError && error.code !== 'Cairn.Cancelled') ? (controller.signal.reason as unknown) : error;
    const cairn = failure instanceof CairnError ? failure : new CairnError('Cairn.Failure', errorMessage(failure), { cause: failure });
    output.error({ code: cairn.code, message: cairn.message, hint: cairn.hint, exitCode: cairn.exitCode });
    if (env.CAIRN_DEBUG && failure instanceof Error) process.stderr.write(`${failure.stack}\n`);
    return cairn.exitCode;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}

function currentUser(): string {
  try {
    return userInfo().username;
  } catch {
    return String(process.getuid?.() ?? 'unknown');
  }
}

function parsePercent(text: string): number {
  const n = Number(text.replace(/%$/, ''));
  if (!Number.isFinite(n) || n <= 0 || n > 100) throw new CairnError('Cairn.Usage', `invalid percentage ${JSON.stringify(text)}`, { hint: 'give a number from 0 to 100, e.g. 10%' });
  return n / 100;
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
  const rows = snapshots.map((s) => [shortId(s.id), s.time.replace('T', ' ').replace(/\.\d+Z$/, 'Z'), s.host, s.tags.join(','), formatBytes(s.summary.totalBytes), formatBytes(s.summary.bytesAdded), s.paths.join(' ')]);
  const header = ['ID', 'Time', 'Host', 'Tags', 'Size', 'Added', 'Paths'];
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] as string).length)));
  const line = (r: string[]): string => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i] as number))).join('  ');
  return [line(header), ...rows.map(line), `${snapshots.length} snapshot(s)`].join('\n');
}

function verifyText(r: Awaited<ReturnType<typeof verify>>): string {
  const lines = [`checked ${r.snapshots} snapshot(s), ${r.packs} pack(s)${r.packsRead ? `; read ${r.packsRead} pack(s), ${r.piecesChecked} piece(s), ${formatBytes(r.bytesRead)}` : ''}`];
  for (const p of r.problems) lines.push(`damaged: ${p.object}: ${p.problem}`);
  for (const a of r.affected) lines.push(`affected: snapshot ${shortId(a.snapshot)} ${a.path}: ${a.problem}`);
  lines.push(r.ok ? 'no problems found' : `${r.problems.length} problem(s), ${r.affected.length} affected file(s)`);
  return lines.join('\n');
}
