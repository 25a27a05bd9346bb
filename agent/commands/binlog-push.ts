import { LogArchive, validateStream } from '../core/log-archive.ts';
import type { Repository } from '../core/repository.ts';
import { parseEngineOptions } from '../engines/engine-helpers.ts';
import { mysqlConnectionSchema } from '../core/engine-options/connection.ts';
import { mariadbSpec } from '../core/engine-options/mariadb.ts';
import { followBinlogs, pushClosedBinlogs, type ArchivedBinlog, type PushSummary } from '../pitr/binlog-push.ts';
import { chooseSpoolDir } from '../pitr/wal-spool.ts';

export interface BinlogPushCommandOptions {
  /** The server's connection, as raw options (host, port, socket, user, passwordFile, defaultsFile). */
  connection: Record<string, unknown>;
  /** The log stream is mariadb-<archiveName>. */
  archiveName: string;
  /** Where fetched binlogs wait for their upload (default: chooseSpoolDir's). */
  spoolDir?: string | undefined;
  /** Host name recorded with each archived file. */
  host: string;
  env: NodeJS.ProcessEnv;
  signal?: AbortSignal | undefined;
  /** Keep running and archive each file as the server closes it, until the signal. */
  follow?: boolean | undefined;
  /** One-shot: close the binlog being written first when it holds transactions not yet archived. */
  rotate?: boolean | undefined;
  onArchived: (stream: string, file: ArchivedBinlog) => void;
  warn: (message: string, details?: Record<string, unknown>) => void;
}

/**
 * `cairn binlog-push`, and the orchestrated `cairn agent archive` that runs
 * it for a plan: a MariaDB server's closed binlogs into the repository's log
 * stream mariadb-<archive name> (docs/pitr.md). One-shot it returns what it
 * pushed; with `follow` it returns when the signal stops it.
 */
export async function binlogPush(
  repo: Repository,
  options: BinlogPushCommandOptions,
): Promise<{ stream: string; summary: PushSummary | undefined }> {
  const stream = validateStream(`${mariadbSpec.capabilities.pitr.streamPrefix}${options.archiveName}`);
  const connection = parseEngineOptions('binlog-push', mysqlConnectionSchema, options.connection);
  const push = {
    connection,
    archive: new LogArchive(repo, stream),
    spoolDir: await chooseSpoolDir(options.spoolDir, options.env),
    host: options.host,
    env: options.env,
    signal: options.signal,
    onArchived: (file: ArchivedBinlog) => options.onArchived(stream, file),
    warn: options.warn,
    rotate: Boolean(options.rotate),
  };
  if (options.follow) {
    await followBinlogs(push);
    return { stream, summary: undefined };
  }
  return { stream, summary: await pushClosedBinlogs(push) };
}
