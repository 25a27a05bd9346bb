import { mkdir, readFile, readdir, rm, statfs } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { CairnError, errorMessage } from '../core/errors.ts';
import { compactTime, type LogArchive, type LogFileRecord, type PushOutcome } from '../core/log-archive.ts';
import type { MysqlConnection } from '../process/mysql-option-file.ts';
import { parseBinlog, type BinlogInfo } from './binlog-parser.ts';
import { BinlogSource, explainBinlogError } from './binlog-source.ts';
import { processAlive } from '../core/lock-file.ts';
import { ensureSpoolDir } from './wal-spool.ts';

/**
 * `cairn binlog-push` (docs/pitr.md): archives a MariaDB server's closed
 * binlog files into a log stream, over the replication protocol, so it works
 * from any host that may connect (REPLICATION SLAVE to read the binlogs,
 * BINLOG MONITOR to list them) and never depends on reading the server's
 * datadir. Each file is fetched with `mariadb-binlog --raw` into a private
 * spool directory, parsed (which checks every event's checksum), stored
 * create-if-absent, described by a record, and removed from the spool: the
 * spool holds one file at a time (two while following), each at most about
 * max_binlog_size (docs/contracts.md, "Streaming and its named exceptions").
 *
 * A file is identified by its creation time, server id and name (its object
 * key), never by its name alone: a server restored from a backup numbers its
 * binlogs from .000001 again, and those are new files.
 */

export interface BinlogPushOptions {
  connection: MysqlConnection;
  archive: LogArchive;
  /** Owner-only directory; the spool of this run is a subdirectory. */
  spoolDir: string;
  host: string;
  env: NodeJS.ProcessEnv;
  signal?: AbortSignal | undefined;
  /** Called once per archived file. */
  onArchived: (file: ArchivedBinlog) => void;
  warn: (message: string, details?: Record<string, unknown>) => void;
  /**
   * One-shot: first close the file the server is writing (FLUSH BINARY LOGS)
   * when it holds transactions the archive lacks, so a schedule bounds the
   * archive's lag even on a server too quiet to rotate by size.
   */
  rotate?: boolean | undefined;
}

export interface ArchivedBinlog {
  name: string;
  key: string;
  size: number;
  outcome: PushOutcome;
  transactions: number;
  startGtid: string;
  endGtid: string;
  firstEventTime: string | null;
  lastEventTime: string | null;
}

export interface PushSummary {
  archived: ArchivedBinlog[];
  /** Closed files found already archived. */
  alreadyArchived: number;
  /** The file the server is writing (not archived until it is closed). */
  active: string | undefined;
}

const MARGIN = 16 << 20;

/** The object key of an archived binlog: creation time, server id, name; a restored server's new .000001 gets a new key. */
export function binlogKey(info: Pick<BinlogInfo, 'createdAt' | 'serverId'>, name: string): string {
  return `${compactTime(info.createdAt)}-${info.serverId}-${name.replace(/[^A-Za-z0-9_.+-]/g, '_')}`;
}

/** What the log archive records about one binlog file. */
export function binlogRecord(
  name: string,
  data: Buffer,
  info: BinlogInfo,
  options: { archive: LogArchive; host: string; closed: boolean },
): LogFileRecord {
  return {
    name,
    key: binlogKey(info, name),
    kind: 'binlog',
    size: data.length,
    hash: options.archive.hash(data),
    archivedAt: new Date().toISOString(),
    host: options.host,
    // The file's first event is its Format_description (its creation): what orders files and places a base
    // snapshot taken before the file's first transaction. The last event is the last commit.
    firstEventTime: info.createdAt,
    lastEventTime: info.lastEventTime,
    binlog: {
      serverId: info.serverId,
      startGtid: info.startGtid,
      endGtid: info.endGtid,
      startPosition: info.startPosition,
      endPosition: info.endPosition,
      ...(info.nextFile !== undefined ? { nextFile: info.nextFile } : {}),
      closed: options.closed,
      ...(info.closedAt !== undefined ? { closedAt: info.closedAt } : {}),
      transactions: info.transactions.length,
    },
  };
}

async function requireSpace(dir: string, bytes: number, what: string): Promise<void> {
  const space = await statfs(dir);
  const free = space.bavail * space.bsize;
  if (free < bytes + MARGIN) {
    throw new CairnError('Cairn.Failure', `not enough free space in ${dir} for ${what} (${bytes + MARGIN} bytes needed, ${free} free)`, {
      hint: 'free space there, or give a spool directory on a larger filesystem with --spool-dir or CAIRN_SPOOL_DIR',
    });
  }
}

/** This process's spool under the spool directory; the spools of processes that died are removed (the server still has those files). */
async function workDir(spoolDir: string, stream: string, kind: string): Promise<string> {
  await ensureSpoolDir(spoolDir);
  const prefix = `binlog-${stream}-`;
  for (const name of await readdir(spoolDir)) {
    const pid = Number(/-(\d+)$/.exec(name)?.[1]);
    if (name.startsWith(prefix) && !processAlive(pid)) await rm(join(spoolDir, name), { recursive: true, force: true });
  }
  const dir = join(spoolDir, `${prefix}${kind}-${process.pid}`);
  await mkdir(dir, { recursive: true, mode: 0o700 });
  return dir;
}

/** Parses, stores and describes one fetched file, then removes it from the spool. */
async function archiveFile(path: string, name: string, options: BinlogPushOptions, serverMovedOn: boolean): Promise<ArchivedBinlog> {
  const data = await readFile(path);
  const info = parseBinlog(data, name);
  const closed = info.closed || serverMovedOn;
  if (!closed) throw new CairnError('Cairn.Failure', `${name} is still being written; only closed binlogs are archived`);
  const record = binlogRecord(name, data, info, { archive: options.archive, host: options.host, closed });
  const outcome = await options.archive.putFile(record.key, data);
  await options.archive.writeRecords([record]);
  await rm(path, { force: true });
  const done: ArchivedBinlog = {
    name,
    key: record.key,
    size: data.length,
    outcome,
    transactions: info.transactions.length,
    startGtid: info.startGtid,
    endGtid: info.endGtid,
    firstEventTime: record.firstEventTime,
    lastEventTime: record.lastEventTime,
  };
  options.onArchived(done);
  return done;
}

async function rotateIfBehind(source: BinlogSource, records: readonly LogFileRecord[]): Promise<void> {
  const position = (await source.sql('SELECT @@gtid_binlog_pos'))[0]?.[0] ?? '';
  const newest = records
    .filter((r) => r.binlog)
    .sort((a, b) => (a.firstEventTime ?? a.archivedAt).localeCompare(b.firstEventTime ?? b.archivedAt))
    .at(-1);
  const archived = new Set((newest?.binlog?.endGtid ?? '').split(',').filter(Boolean));
  const current = position.split(',').filter(Boolean);
  if (current.length === 0 || current.every((gtid) => archived.has(gtid))) return;
  await source.sql('FLUSH BINARY LOGS').catch((error: unknown) => {
    throw new CairnError(
      'Cairn.Failure',
      `could not rotate the binlog for --rotate: ${error instanceof Error ? error.message : String(error)}`,
      {
        hint: 'FLUSH BINARY LOGS needs RELOAD (BINLOG ADMIN on MariaDB 10.5+): GRANT RELOAD ON *.* TO the user, or drop --rotate',
        cause: error,
      },
    );
  });
}

const LARGE_BINLOG = 256 * 2 ** 20;

/** Archives every closed file the server has that the stream lacks; the one it is writing stays for the next run. */
async function catchUp(
  source: BinlogSource,
  dir: string,
  options: BinlogPushOptions,
  known?: readonly LogFileRecord[],
): Promise<PushSummary> {
  const files = await source.list();
  const closed = files.slice(0, -1);
  const records = known ?? (await options.archive.read()).records;
  const names = new Set(records.map((r) => r.name));
  const keys = new Set(records.map((r) => r.key));
  const summary: PushSummary = { archived: [], alreadyArchived: 0, active: files.at(-1)?.name };
  // An archived file is held in memory whole (read, compressed, sealed): about three times its size.
  const largest = Math.max(0, ...closed.map((f) => f.size));
  if (largest > LARGE_BINLOG) {
    options.warn(`binlogs up to ${Math.round(largest / 2 ** 20)} MiB: each is held in memory about 3x while it is archived`, {
      hint: `set max_binlog_size to ${LARGE_BINLOG / 2 ** 20}M or less (64M suits most servers and bounds the archive lag too)`,
    });
  }
  for (const file of closed) {
    options.signal?.throwIfAborted();
    if (names.has(file.name) && keys.has(binlogKey(await source.header(file.name), file.name))) {
      summary.alreadyArchived++;
      continue;
    }
    await requireSpace(dir, file.size, file.name);
    const path = await source.fetch(file.name, dir);
    summary.archived.push(await archiveFile(path, file.name, options, true));
  }
  return summary;
}

/** One run: archive what is closed and not archived yet. */
export async function pushClosedBinlogs(options: BinlogPushOptions): Promise<PushSummary> {
  const dir = await workDir(options.spoolDir, options.archive.stream, 'push');
  const source = await BinlogSource.open(options, dir);
  try {
    // Read once: rotating adds nothing to the archive, so the same records serve both steps.
    const { records } = await options.archive.read();
    if (options.rotate) await rotateIfBehind(source, records);
    return await catchUp(source, dir, options, records);
  } finally {
    await source.dispose();
    await rm(dir, { recursive: true, force: true });
  }
}

/** Errors that another attempt cannot fix: the service stops with them instead of retrying. */
function fatal(error: unknown): boolean {
  return (
    error instanceof CairnError &&
    ['Cairn.AlreadyExists', 'Cairn.Usage', 'Cairn.Config', 'Cairn.WrongKey', 'Cairn.InvalidInput', 'Cairn.Cancelled'].includes(error.code)
  );
}

function suffix(name: string): number {
  return Number(/\.(\d+)$/.exec(name)?.[1] ?? 0);
}

/**
 * `binlog-push --follow`: a service. Catches up, then streams from the file
 * the server is writing with `mariadb-binlog --stop-never` and archives each
 * file as soon as the next one starts (the server rotated it). When the
 * connection drops (a restart of the server, a network failure) it catches up
 * again and reconnects, waiting longer after each failure (up to a minute).
 * Returns when the signal fires (SIGTERM), leaving nothing half-stored.
 */
export async function followBinlogs(options: BinlogPushOptions & { pollMs?: number }): Promise<void> {
  const signal = options.signal;
  const dir = await workDir(options.spoolDir, options.archive.stream, 'follow');
  const fetchDir = join(dir, 'fetch');
  const streamDir = join(dir, 'stream');
  await mkdir(fetchDir, { mode: 0o700 });
  let failures = 0;
  try {
    while (!signal?.aborted) {
      const source = await BinlogSource.open(options, dir);
      try {
        await requireSpace(
          dir,
          2 * (await source.maxBinlogSize()),
          'the file being streamed and the one being uploaded (2 × max_binlog_size)',
        );
        const { active } = await catchUp(source, fetchDir, options);
        failures = 0;
        await rm(streamDir, { recursive: true, force: true });
        await mkdir(streamDir, { mode: 0o700 });
        await streamFrom(source, active as string, streamDir, options);
      } catch (error) {
        if (signal?.aborted) break;
        if (fatal(error)) throw error;
        failures++;
        const wait = Math.min(60_000, 1000 * 2 ** Math.min(failures - 1, 6));
        options.warn(`binlog-push --follow: ${errorMessage(error)}; trying again in ${Math.round(wait / 1000)} s`, {
          retryInMs: wait,
          ...(error instanceof CairnError && error.hint ? { hint: error.hint } : {}),
        });
        await sleep(wait, undefined, { signal }).catch(() => undefined);
      } finally {
        await source.dispose();
      }
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** Runs one mariadb-binlog stream and archives each file it finishes; returns (or throws) when the stream ends. */
async function streamFrom(
  source: BinlogSource,
  first: string,
  dir: string,
  options: BinlogPushOptions & { pollMs?: number },
): Promise<void> {
  const stop = new AbortController();
  const onAbort = (): void => stop.abort();
  options.signal?.addEventListener('abort', onAbort, { once: true });
  let ended: { error: unknown } | undefined;
  const child = source.stream(first, dir, stop.signal).then(
    () => (ended = { error: new CairnError('Cairn.Failure', 'mariadb-binlog --stop-never ended') }),
    (error: unknown) => (ended = { error: explainBinlogError(error, 'the binlog stream from the server ended') }),
  );
  try {
    for (;;) {
      const finished = ended;
      const names = (await readdir(dir)).sort((a, b) => suffix(a) - suffix(b));
      // Every file but the newest is finished (mariadb-binlog opens the next file on ROTATE); once the stream has ended, the newest is whole too, though perhaps not closed.
      for (const [i, name] of names.entries()) {
        const newest = i === names.length - 1;
        if (newest && !finished) break;
        const info = parseBinlog(await readFile(join(dir, name)), name);
        if (info.closed) await archiveFile(join(dir, name), name, options, true);
        else await rm(join(dir, name), { force: true }); // cut off by the end of the connection: fetched whole by the next catch-up
      }
      if (finished) throw finished.error;
      if (options.signal?.aborted) return;
      await Promise.race([sleep(options.pollMs ?? 1000), child]);
    }
  } finally {
    stop.abort();
    await child;
    options.signal?.removeEventListener('abort', onAbort);
  }
}
