import type { Command } from 'commander';
import { parseCompression } from '../../core/config.ts';
import { readFile } from 'node:fs/promises';
import { CairnError, errorMessage } from '../../core/errors.ts';
import { shortId, type Snapshot, type SnapshotSummary } from '../../core/snapshot.ts';
import { backup, backupDryRun, type BackupDryRun, type BackupOptions } from '../../commands/backup.ts';
import { engineOptionsFromFlags } from '../../core/engine-options/flags.ts';
import { collect, type Cli } from '../context.ts';
import { addEngineFlags } from '../engine-flags.ts';
import { formatBytes, formatDuration } from '../output.ts';

interface BackupFlags {
  exclude: string[];
  excludeFile: string[];
  filesFrom: string[];
  excludeIfPresent: string[];
  oneFileSystem?: boolean;
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
  dryRun?: boolean;
  dbHost?: string;
  dbPort?: string;
  dbSocket?: string;
  dbName: string[];
}

/** `cairn backup`: files and directories, or a database with --engine (docs/engines.md). */
export function registerBackup(program: Command, cli: Cli): void {
  const command = program
    .command('backup')
    .description('back up files and directories, or a database with --engine')
    .argument('[path...]', 'files or directories to back up (the files engine)')
    .option('-e, --exclude <pattern>', 'skip paths matching the pattern (repeatable)', collect, [])
    .option('--exclude-file <file>', 'skip paths matching the patterns in this file, one a line (repeatable)', collect, [])
    .option(
      '--exclude-if-present <file>',
      'leave out every directory holding a file of this name, e.g. .nobackup (repeatable)',
      collect,
      [],
    )
    .option('-x, --one-file-system', 'do not cross into other file systems: a mount point is stored as an empty directory')
    .option(
      '--files-from <file>',
      'back up the paths listed in this file, one a line, besides those given (repeatable; - reads stdin)',
      collect,
      [],
    )
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
    .option(
      '-n, --dry-run',
      'read what the backup would read and count what it would add, writing nothing to the repository (no lock, no history, no snapshot)',
    );
  addEngineFlags(command, 'backup', cli.engines.catalog.specs).action(async (given: string[], opts: BackupFlags, cmd: Command) => {
    // A dry run is not a backup: the metrics file's backup series (and its freshness) must not move, whatever happens.
    if (opts.dryRun) cli.run.operation = 'backup --dry-run';
    const paths = [...given, ...(await listFiles(opts.filesFrom, 'paths'))];
    const excludes = [...opts.exclude, ...(await listFiles(opts.excludeFile, 'patterns'))];
    const { g, repo } = await cli.openRepo(cmd);
    const engine = opts.engine && opts.engine !== 'files' ? cli.engines.byName(opts.engine) : undefined;
    if (!engine && paths.length === 0)
      throw new CairnError('Cairn.Usage', 'nothing to back up', { hint: 'give paths, or --engine NAME with its connection options' });
    if (engine && paths.length > 0)
      throw new CairnError('Cairn.Usage', `the ${engine.name} engine takes no paths`, {
        hint: 'give the connection with --db-host/--db-socket and the databases with --db-name',
      });
    const where = opts.dbSocket ?? `${opts.dbHost ?? 'localhost'}:${opts.dbPort ?? ''}`;
    const options: BackupOptions = {
      ...cli.operation(g, opts.host),
      paths,
      excludes,
      oneFileSystem: Boolean(opts.oneFileSystem),
      excludeIfPresent: opts.excludeIfPresent,
      tags: opts.tag,
      compression: opts.compression !== undefined ? parseCompression(opts.compression) : undefined,
      parent: opts.parent,
      engine: engine
        ? {
            engine,
            options: engine.parseOptions(engineOptionsFromFlags(engine.spec, 'backup', cmd.opts())),
            source: `${engine.name}:${opts.dbName.length ? opts.dbName.join(',') : 'all'}@${where}`,
          }
        : undefined,
      preHook: opts.preHook,
      postHook: opts.postHook,
      stopCmd: opts.stopCmd,
      startCmd: opts.startCmd,
      tempDir: opts.tempDir,
      env: cli.env,
    };
    if (opts.dryRun) {
      const preview = await backupDryRun(repo, options);
      cli.output.result(
        {
          type: 'summary',
          operation: 'backup',
          dryRun: true,
          engine: 'files',
          paths: preview.paths,
          ...(preview.parent ? { parent: preview.parent } : {}),
          ...preview.summary,
        },
        dryRunText(preview),
      );
      return;
    }
    const snapshot = await backup(repo, options);
    cli.run.backup = snapshot.summary;
    cli.output.result(
      {
        type: 'summary',
        operation: 'backup',
        snapshotId: snapshot.id,
        engine: snapshot.engine,
        engineMetadata: snapshot.engineMetadata,
        ...snapshot.summary,
        ...(snapshot.partial ? { partial: true } : {}),
      },
      backupText(snapshot),
    );
    if (snapshot.summary.errors > 0) {
      throw new CairnError(
        'Cairn.PartialFailure',
        `snapshot ${shortId(snapshot.id)} was saved as partial: ${snapshot.summary.errors} path(s) could not be read`,
        {
          hint: 'see the warnings above; a partial snapshot restores what was read, but retention does not count it as a good backup',
        },
      );
    }
  });
}

function backupText(s: Snapshot): string {
  const m = s.summary;
  return [
    `snapshot ${shortId(s.id)} saved${s.partial ? ' (partial: some paths could not be read)' : ''}`,
    ...countLines(m),
    `  added to the repository: ${formatBytes(m.bytesAdded)} stored (${formatBytes(m.rawBytesAdded)} before compression) in ${formatDuration(m.durationMs)}`,
  ].join('\n');
}

function dryRunText(d: BackupDryRun): string {
  const m = d.summary;
  return [
    `dry run: nothing was written to the repository${d.parent ? ` (compared with snapshot ${shortId(d.parent)})` : ''}`,
    ...countLines(m),
    `  would add to the repository: ${formatBytes(m.bytesAdded)} stored (${formatBytes(m.rawBytesAdded)} before compression, ${m.piecesAdded} pieces); found in ${formatDuration(m.durationMs)}`,
    ...(m.errors > 0 ? [`  ${m.errors} path(s) could not be read (see the warnings above): the backup would be partial`] : []),
  ].join('\n');
}

function countLines(m: SnapshotSummary): string[] {
  return [
    `  files: ${m.filesNew} new, ${m.filesChanged} changed, ${m.filesUnchanged} unchanged (${m.dirs} directories)`,
    `  data:  ${formatBytes(m.bytesNew)} new, ${formatBytes(m.bytesChanged)} changed, ${formatBytes(m.bytesUnchanged)} unchanged; ${formatBytes(m.bytesRead)} read`,
  ];
}

/**
 * The lines of --files-from / --exclude-file files as restic reads them: one entry a line (a
 * name may hold spaces: only a line end's CR goes), blank lines and lines starting with `#`
 * skipped; `-` is standard input.
 * A file that cannot be read, or lists nothing, is a usage error naming it (a backup of fewer paths
 * than meant, without a word, is the mistake this guards against).
 */
async function listFiles(files: string[], what: string): Promise<string[]> {
  const entries: string[] = [];
  for (const file of files) {
    let text: string;
    try {
      text = file === '-' ? await readAll(process.stdin) : await readFile(file, 'utf8');
    } catch (error) {
      throw new CairnError('Cairn.Usage', `cannot read the list of ${what} ${file}: ${errorMessage(error)}`, { cause: error });
    }
    const lines = text
      .split('\n')
      .map((line) => line.replace(/\r$/, ''))
      .filter((line) => line.trim() !== '' && !line.trimStart().startsWith('#'));
    if (lines.length === 0)
      throw new CairnError('Cairn.Usage', `the list of ${what} ${file} names none`, { hint: 'one entry a line; # starts a comment' });
    entries.push(...lines);
  }
  return entries;
}

async function readAll(stream: NodeJS.ReadableStream): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(Buffer.from(chunk as Buffer));
  return Buffer.concat(chunks).toString('utf8');
}
