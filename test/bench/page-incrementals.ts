import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { closeSync, mkdirSync, openSync, readFileSync, readSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { detectPageSize, MIN_PAGE_FILE } from '../../agent/core/page-file.ts';
import { contentSlices } from '../../agent/core/file-content.ts';
import { PieceReader } from '../../agent/core/piece-reader.ts';
import { Repository } from '../../agent/core/repository.ts';
import { decodeTree, type TreeEntry } from '../../agent/core/tree.ts';
import { FileStorage } from '../../agent/storage/file.ts';
import { postgresWorkDir, startPostgres, type PostgresServer } from '../helpers/postgres.ts';
import { startMariadb, type MariadbServer } from '../helpers/mariadb.ts';
import { CommandFailed, ensureCommand, runTimed, treeBytes, type Timed } from './measure.ts';
import { Cairn, CAIRN_BIN, Restic, type Logs } from './tools.ts';

/**
 * The page-incrementals section of `npm run bench` (issue 21): what the second
 * backup of a real database adds, after a bounded load of writes, beside the
 * pages that really changed.
 *
 * - Dataset B: PostgreSQL 15, `initdb`, `pgbench -i -s <scale>`, then
 *   `pgbench -c 2 -T <seconds> -R 60` and CHECKPOINT.
 * - Dataset A: MariaDB, sysbench `oltp_read_write prepare`, then
 *   `oltp_write_only --threads=2 --time=<seconds> --rate=<rate>` (60 by default).
 *
 * Each is backed up twice (before and after the writes) by: Cairn's files backup
 * of the stopped data directory, restic's backup of the same, Cairn's physical
 * engine (pg_basebackup / mariabackup, on the running server), and pgBackRest's
 * full then incremental backup (PostgreSQL; pgBackRest 2.45 copies a changed file
 * whole, block incremental came in 2.46). "Changed pages" compares the stopped
 * data directory before and after page by page (files the page-file detector
 * knows, at their page size); other files count their changed 4 KiB blocks, new
 * files whole. Added bytes are the repository's growth on disk (compressed and
 * encrypted, as stored), beside what each tool reports before compression.
 *
 * Sizes come from the environment (defaults: a few minutes on 2 cores):
 * CAIRN_BENCH_PG_SCALE (10; ~160 MB), CAIRN_BENCH_PG_SECONDS (30),
 * CAIRN_BENCH_MARIADB_TABLES (4), CAIRN_BENCH_MARIADB_ROWS (100000 per table;
 * ~100 MB), CAIRN_BENCH_MARIADB_SECONDS (30), CAIRN_BENCH_MARIADB_RATE (60 transactions/s);
 * CAIRN_BENCH_PAGES_DATASETS=B or A
 * for one of them. Full sizes: scale 100 (1.5 GB) and 10 × 1,000,000 rows (2.4 GB),
 * 300 s each. Timing never fails the run; a failed command does.
 */

const PASSWORD = 'cairn-bench-password';
const MB = 1e6;
const PG_BIN = '/usr/lib/postgresql/15/bin';
const asRoot = process.getuid?.() === 0;

export interface PageIncrementalOptions {
  logDir: string;
  /** Run restic and pgBackRest beside Cairn (the bench's --only cairn turns the peers off). */
  peers: boolean;
}

export interface ToolFigures {
  tool: string;
  /** What was backed up and how. */
  how: string;
  firstAdded: number;
  secondAdded: number;
  /** The tool's own figure for the second backup, before compression (cairn rawBytesAdded, restic data_added). */
  secondReportedRaw: number | undefined;
  firstSeconds: number;
  secondSeconds: number;
  /** Files backups: an unchanged re-backup of the stopped data directory, right after the first. */
  unchangedSeconds?: number | undefined;
  /** Cairn: the second snapshot's new data pieces (before compression), in page files and in other files. */
  pageFileRaw?: number | undefined;
  otherRaw?: number | undefined;
  /** Cairn: bytes of the pages that differ between its two snapshots (what its page files should add). */
  snapshotChangedPageBytes?: number | undefined;
}

export interface PageIncrementalResult {
  dataset: string;
  description: string;
  dataDirBytes: number;
  pageSize: number;
  pageFiles: number;
  pages: number;
  changedPages: number;
  changedPageBytes: number;
  /** Other files: changed 4 KiB blocks in place, new files whole. */
  changedOtherBytes: number;
  /** Of the changed pages, those that are all zeroes (a file extended): stored once, whatever their number. */
  changedZeroPages: number;
  tools: ToolFigures[];
  /** The engine's own tool streaming a full backup into zstd, the throughput the engine aims at (dataset A). */
  streamPeer?: { how: string; seconds: number; bytes: number } | undefined;
}

function envNumber(name: string, fallback: number): number {
  const raw = process.env[name];
  const value = raw === undefined || raw === '' ? fallback : Number(raw);
  if (!Number.isFinite(value) || value <= 0) throw new CommandFailed(`${name} must be a positive number, not ${raw}`);
  return value;
}

/** What is missing to run dataset B / A, or undefined. */
export function pageIncrementalsPrerequisites(): { postgres: string | undefined; mariadb: string | undefined } {
  const postgres =
    spawnSync('test', ['-x', join(PG_BIN, 'initdb')]).status !== 0 && !ensureCommand(join(PG_BIN, 'initdb'), 'postgresql')
      ? 'PostgreSQL 15 is missing: apt-get install postgresql'
      : !ensureCommand('pgbench', 'postgresql-contrib') || !ensureCommand('pg_basebackup', 'postgresql-client')
        ? 'pgbench or pg_basebackup is missing: apt-get install postgresql-contrib postgresql-client'
        : undefined;
  const mariadb =
    !ensureCommand('/usr/sbin/mariadbd', 'mariadb-server') || !ensureCommand('mariadb', 'mariadb-client')
      ? 'MariaDB is missing: apt-get install mariadb-server mariadb-client'
      : !ensureCommand('sysbench', 'sysbench')
        ? 'sysbench is missing: apt-get install sysbench'
        : undefined;
  return { postgres, mariadb };
}

// ---- the data directory, page by page -------------------------------------------------------

interface FileState {
  size: number;
  /** The page size the detector reads from the file, or undefined (then 4 KiB blocks). */
  pageSize: number | undefined;
  /** 16 bytes of SHA-256 per page (or block). */
  digests: Buffer;
}

const BLOCK = 4096;

function fileState(path: string): FileState {
  const fd = openSync(path, 'r');
  try {
    const head = Buffer.alloc(MIN_PAGE_FILE);
    const headBytes = readSync(fd, head, 0, head.length, 0);
    const pageSize = headBytes >= MIN_PAGE_FILE ? detectPageSize(head) : undefined;
    const unit = pageSize ?? BLOCK;
    const parts: Buffer[] = [];
    const buffer = Buffer.alloc(Math.max(unit, 1 << 20) - (Math.max(unit, 1 << 20) % unit));
    let size = 0;
    for (;;) {
      const n = readSync(fd, buffer, 0, buffer.length, size);
      if (n === 0) break;
      for (let at = 0; at < n; at += unit)
        parts.push(
          createHash('sha256')
            .update(buffer.subarray(at, Math.min(at + unit, n)))
            .digest()
            .subarray(0, 16),
        );
      size += n;
      if (n < buffer.length) break;
    }
    return { size, pageSize, digests: Buffer.concat(parts) };
  } finally {
    closeSync(fd);
  }
}

function dirState(root: string): Map<string, FileState> {
  const out = new Map<string, FileState>();
  for (const entry of readdirSync(root, { withFileTypes: true, recursive: true }))
    if (entry.isFile()) {
      const path = join(entry.parentPath, entry.name);
      out.set(path.slice(root.length + 1), fileState(path));
    }
  return out;
}

interface Changes {
  bytes: number;
  pageSize: number;
  pageFiles: number;
  pages: number;
  changedPages: number;
  changedPageBytes: number;
  changedOtherBytes: number;
  changedZeroPages: number;
}

const zeroDigests = new Map<number, Buffer>();
function zeroDigest(size: number): Buffer {
  let digest = zeroDigests.get(size);
  if (!digest) {
    digest = createHash('sha256').update(Buffer.alloc(size)).digest().subarray(0, 16);
    zeroDigests.set(size, digest);
  }
  return digest;
}

function changesBetween(before: Map<string, FileState>, after: Map<string, FileState>): Changes {
  const c: Changes = {
    bytes: 0,
    pageSize: 0,
    pageFiles: 0,
    pages: 0,
    changedPages: 0,
    changedPageBytes: 0,
    changedOtherBytes: 0,
    changedZeroPages: 0,
  };
  for (const [path, now] of after) {
    c.bytes += now.size;
    const was = before.get(path);
    const unit = now.pageSize ?? BLOCK;
    if (now.pageSize) {
      c.pageFiles++;
      c.pageSize = now.pageSize;
      c.pages += now.digests.length / 16;
    }
    const comparable = was && was.pageSize === now.pageSize;
    for (let i = 0; i * 16 < now.digests.length; i++) {
      const same =
        comparable && i * 16 < was.digests.length && now.digests.compare(was.digests, i * 16, i * 16 + 16, i * 16, i * 16 + 16) === 0;
      if (same) continue;
      const bytes = Math.min(unit, now.size - i * unit);
      if (now.pageSize) {
        c.changedPages++;
        c.changedPageBytes += bytes;
        if (now.digests.compare(zeroDigest(unit), 0, 16, i * 16, i * 16 + 16) === 0) c.changedZeroPages++;
      } else c.changedOtherBytes += bytes;
    }
  }
  return c;
}

// ---- the tools ----------------------------------------------------------------------------------

/** The last JSON line of a command's stdout with `key` = `value`. */
function jsonLine(timed: Timed, key: string, value: string): Record<string, unknown> | undefined {
  for (const line of readFileSync(timed.stdoutFile, 'utf8').split('\n').reverse()) {
    if (!line.startsWith('{')) continue;
    try {
      const parsed = JSON.parse(line) as Record<string, unknown>;
      if (parsed[key] === value) return parsed;
    } catch {
      // a cut line: not ours to judge
    }
  }
  return undefined;
}

interface Backup {
  seconds: number;
  added: number;
  reportedRaw: number | undefined;
}

/** One backup step of one tool: the repository's growth around `run`. */
async function measured(repo: string, run: () => Promise<{ timed: Timed; reportedRaw: number | undefined }>): Promise<Backup> {
  spawnSync('sync');
  const before = treeBytes(repo);
  const { timed, reportedRaw } = await run();
  return { seconds: timed.seconds, added: treeBytes(repo) - before, reportedRaw };
}

class CairnFiles {
  readonly cairn: Cairn;
  readonly repo: string;
  constructor(repo: string, logs: Logs) {
    this.repo = repo;
    this.cairn = new Cairn(repo, logs);
  }
  backup(data: string): Promise<Backup> {
    return measured(this.repo, async () => {
      const timed = await this.cairn.backup(data);
      return { timed, reportedRaw: jsonLine(timed, 'type', 'summary')?.rawBytesAdded as number | undefined };
    });
  }
}

class ResticFiles {
  readonly restic: Restic;
  readonly repo: string;
  constructor(repo: string, logs: Logs) {
    this.repo = repo;
    this.restic = new Restic(repo, `${repo}-cache`, logs);
  }
  backup(data: string): Promise<Backup> {
    return measured(this.repo, async () => {
      const timed = await this.restic.backup(data);
      return { timed, reportedRaw: timed.reportedAddedBytes };
    });
  }
}

/** Cairn's physical engine (postgres or mariadb) against the running server. */
class CairnEngine {
  readonly repo: string;
  private readonly logs: Logs;
  private readonly args: string[];
  private readonly env: Record<string, string>;
  /** Backs up with `--parent latest`: the engine's source names the server's port, which changes when the bench restarts it. */
  private readonly parentLatest: boolean;
  constructor(repo: string, logs: Logs, engine: string, port: number, user: string, dbPassword: string, parentLatest = false) {
    this.repo = repo;
    this.parentLatest = parentLatest;
    this.logs = logs;
    this.args = ['--engine', engine, '--db-host', '127.0.0.1', '--db-port', String(port), '--db-user', user];
    this.env = { CAIRN_REPOSITORY: repo, CAIRN_PASSWORD: PASSWORD, CAIRN_DB_PASSWORD: dbPassword };
  }
  private run(label: string, args: string[]): Promise<Timed> {
    this.logs.seq++;
    const prefix = join(this.logs.dir, `${String(this.logs.seq).padStart(2, '0')}-cairn-engine-${label}`);
    return runTimed(process.execPath, [CAIRN_BIN, '--json', ...args], { env: this.env, logPrefix: prefix });
  }
  async init(): Promise<void> {
    await this.run('init', ['init']);
  }
  backup(): Promise<Backup> {
    return measured(this.repo, async () => {
      const timed = await this.run('backup', ['backup', ...this.args, ...(this.parentLatest ? ['--parent', 'latest'] : [])]);
      return { timed, reportedRaw: jsonLine(timed, 'type', 'summary')?.rawBytesAdded as number | undefined };
    });
  }
}

function asPostgres(argv: string[]): [string, string[]] {
  return asRoot ? ['runuser', ['-u', 'postgres', '--', ...argv]] : [argv[0] as string, argv.slice(1)];
}

/** pgBackRest, zstd-compressed, WAL archived by archive-push; only its backup/ directory counts as a backup's bytes. */
class PgBackRest {
  readonly work: string;
  readonly repo: string;
  readonly config: string;
  readonly archiveCommand: string;
  private readonly logs: Logs;
  constructor(work: string, logs: Logs) {
    this.work = work;
    this.repo = join(work, 'repo');
    this.config = join(work, 'pgbackrest.conf');
    this.logs = logs;
    this.archiveCommand = `pgbackrest --config=${this.config} --stanza=bench archive-push %p`;
  }
  /** Written before the server starts (archive_command needs it); the server's port and socket come later. */
  writeConfig(server: { dataDir: string; port: number; socketDir: string }): void {
    for (const dir of ['repo', 'log', 'lock']) mkdirSync(join(this.work, dir), { recursive: true });
    writeFileSync(
      this.config,
      [
        '[global]',
        `repo1-path=${this.repo}`,
        'compress-type=zst',
        'process-max=2',
        `log-path=${join(this.work, 'log')}`,
        `lock-path=${join(this.work, 'lock')}`,
        'log-level-console=warn',
        'start-fast=y',
        '',
        '[bench]',
        `pg1-path=${server.dataDir}`,
        `pg1-port=${server.port}`,
        `pg1-socket-path=${server.socketDir}`,
        'pg1-user=postgres',
        '',
      ].join('\n'),
    );
    if (asRoot) spawnSync('chown', ['-R', 'postgres:', this.work]);
  }
  private run(label: string, args: string[]): Promise<Timed> {
    this.logs.seq++;
    const [cmd, argv] = asPostgres(['pgbackrest', `--config=${this.config}`, '--stanza=bench', ...args]);
    return runTimed(cmd, argv, { logPrefix: join(this.logs.dir, `${String(this.logs.seq).padStart(2, '0')}-pgbackrest-${label}`) });
  }
  async stanzaCreate(): Promise<void> {
    await this.run('stanza-create', ['stanza-create']);
  }
  backup(type: 'full' | 'incr'): Promise<Backup> {
    return measured(join(this.repo, 'backup'), async () => {
      const timed = await this.run(`backup-${type}`, [`--type=${type}`, 'backup']);
      // Its own figure: the bytes of the files this backup copied (`info`'s delta, before compression).
      const info = await this.run('info', ['--output=json', 'info']);
      const stanzas = JSON.parse(readFileSync(info.stdoutFile, 'utf8')) as Array<{ backup?: Array<{ info?: { delta?: number } }> }>;
      return { timed, reportedRaw: stanzas[0]?.backup?.at(-1)?.info?.delta };
    });
  }
}

/**
 * Where Cairn's second backup put its bytes: the data pieces the newest snapshot uses and
 * the one before does not (lengths before compression), in page files and in other files;
 * and the bytes of the pages that differ between the two snapshots' page files (their page
 * hashes compared index by index: the engines' baseline, since they read a running server).
 */
async function cairnBreakdown(repoPath: string): Promise<Pick<ToolFigures, 'pageFileRaw' | 'otherRaw' | 'snapshotChangedPageBytes'>> {
  const repo = await Repository.open(new FileStorage(repoPath), PASSWORD);
  const index = await repo.loadIndex();
  const reader = new PieceReader(repo, index);
  const { snapshots } = await repo.listSnapshots();
  const [older, newer] = [...snapshots].sort((a, b) => a.time.localeCompare(b.time)).slice(-2);
  if (!older || !newer) throw new CommandFailed(`${repoPath} holds fewer than two snapshots`);
  const filesOf = async function* (treeId: string, prefix: string): AsyncGenerator<[string, TreeEntry]> {
    for (const entry of decodeTree(await reader.read(Buffer.from(treeId, 'hex')), treeId).entries) {
      const path = `${prefix}/${entry.name}`;
      if (entry.type === 'dir' && entry.subtree) yield* filesOf(entry.subtree, path);
      else if (entry.type === 'file') yield [path, entry];
    }
  };
  const hashes = async (entry: TreeEntry | undefined): Promise<Buffer> =>
    Buffer.concat(await Promise.all((entry?.pageHashes ?? []).map((id) => reader.read(Buffer.from(id, 'hex')))));
  const seen = new Set<string>();
  const olderFiles = new Map<string, TreeEntry>();
  for await (const [path, entry] of filesOf(older.tree, '')) {
    olderFiles.set(path, entry);
    for await (const slice of contentSlices(entry, reader)) seen.add(slice.id.toString('hex'));
  }
  let pageFileRaw = 0;
  let otherRaw = 0;
  let snapshotChangedPageBytes = 0;
  for await (const [path, entry] of filesOf(newer.tree, '')) {
    for await (const slice of contentSlices(entry, reader)) {
      const id = slice.id.toString('hex');
      if (seen.has(id)) continue;
      seen.add(id);
      const length = index.get(slice.id)?.length ?? 0;
      if (entry.extentLists) pageFileRaw += length;
      else otherRaw += length;
    }
    if (!entry.extentLists || !entry.pageSize) continue;
    const was = olderFiles.get(path);
    const now = await hashes(entry);
    const before = await hashes(was?.pageSize === entry.pageSize ? was : undefined);
    for (let at = 0, page = 0; at < now.length; at += 16, page++)
      if (at + 16 > before.length || now.compare(before, at, at + 16, at, at + 16) !== 0)
        snapshotChangedPageBytes += Math.min(entry.pageSize, (entry.size ?? 0) - page * entry.pageSize);
  }
  return { pageFileRaw, otherRaw, snapshotChangedPageBytes };
}

function figures(tool: string, how: string, first: Backup, second: Backup): ToolFigures {
  return {
    tool,
    how,
    firstAdded: first.added,
    secondAdded: second.added,
    secondReportedRaw: second.reportedRaw,
    firstSeconds: first.seconds,
    secondSeconds: second.seconds,
  };
}

// ---- dataset B: PostgreSQL ------------------------------------------------------------------------

async function pgbench(server: PostgresServer, args: string[], logs: Logs, label: string): Promise<Timed> {
  logs.seq++;
  return runTimed('pgbench', ['-h', '127.0.0.1', '-p', String(server.port), '-U', 'postgres', ...args, 'bench'], {
    env: { PGPASSWORD: server.password },
    logPrefix: join(logs.dir, `${String(logs.seq).padStart(2, '0')}-pgbench-${label}`),
  });
}

/** Stops the server and keeps its data directory (startPostgres's stop removes a directory it made). */
function pgStopKeeping(dataDir: string): void {
  const [cmd, argv] = asPostgres([join(PG_BIN, 'pg_ctl'), '-D', dataDir, '-m', 'fast', '-w', 'stop']);
  const stop = spawnSync(cmd, argv, { encoding: 'utf8', cwd: '/tmp' });
  if (stop.status !== 0) throw new CommandFailed(`pg_ctl stop failed: ${stop.stderr}`);
}

async function datasetB(options: PageIncrementalOptions, work: string, logs: Logs): Promise<PageIncrementalResult> {
  const scale = envNumber('CAIRN_BENCH_PG_SCALE', 10);
  const seconds = envNumber('CAIRN_BENCH_PG_SECONDS', 30);
  const pgBackRest =
    options.peers && ensureCommand('pgbackrest', 'pgbackrest') ? new PgBackRest(join(work, 'pgbackrest'), logs) : undefined;
  if (options.peers && !pgBackRest) console.log('  pgbackrest is missing and cannot be installed: it is left out');
  const settings: Record<string, string> = {
    wal_level: 'replica',
    max_wal_senders: '4',
    ...(pgBackRest ? { archive_mode: 'on', archive_command: pgBackRest.archiveCommand } : {}),
  };
  // The config names the data directory before the server exists: startPostgres makes its own, so the first start
  // archives nothing until the config is written (archive-push fails and PostgreSQL retries the segment).
  const first = await startPostgres({ settings });
  const servers: PostgresServer[] = [first];
  const dataDir = first.dataDir;
  try {
    pgBackRest?.writeConfig(first);
    await pgBackRest?.stanzaCreate();
    first.sql('CREATE DATABASE bench');
    const init = await pgbench(first, ['-i', '-s', String(scale), '-q'], logs, 'init');
    console.log(`  pgbench -i -s ${scale}: ${init.seconds.toFixed(1)} s`);
    first.sql('CHECKPOINT');

    const engine = new CairnEngine(join(work, 'cairn-engine-repo'), logs, 'postgres', first.port, 'postgres', first.password);
    const files = new CairnFiles(join(work, 'cairn-files-repo'), logs);
    const restic = options.peers ? new ResticFiles(join(work, 'restic-repo'), logs) : undefined;
    await engine.init();
    await files.cairn.init();
    await restic?.restic.init();

    // 1. before the writes: the engines on the running server, then the stopped data directory.
    const engine1 = await engine.backup();
    const pgbr1 = await pgBackRest?.backup('full');
    pgStopKeeping(dataDir);
    const before = dirState(dataDir);
    const files1 = await files.backup(dataDir);
    const restic1 = await restic?.backup(dataDir);
    // Unchanged re-backups of the same stopped directory (issue 21: at most 5% of the first backup's time).
    const files1Again = await files.backup(dataDir);
    const restic1Again = await restic?.backup(dataDir);

    // 2. the writes, then the same backups again.
    const live = await startPostgres({ dataDir, settings });
    servers.push(live);
    pgBackRest?.writeConfig(live);
    const load = await pgbench(live, ['-n', '-c', '2', '-T', String(seconds), '-R', '60'], logs, 'run');
    const transactions = /number of transactions actually processed: (\d+)/.exec(readFileSync(load.stdoutFile, 'utf8'))?.[1];
    live.sql('CHECKPOINT');
    const liveEngine = new CairnEngine(engine.repo, logs, 'postgres', live.port, 'postgres', live.password, true);
    const engine2 = await liveEngine.backup();
    const pgbr2 = await pgBackRest?.backup('incr');
    pgStopKeeping(dataDir);
    const after = dirState(dataDir);
    const files2 = await files.backup(dataDir);
    const restic2 = await restic?.backup(dataDir);

    const changes = changesBetween(before, after);
    const tools = [
      {
        ...figures('cairn', 'files backup of the stopped data directory', files1, files2),
        unchangedSeconds: files1Again.seconds,
        ...(await cairnBreakdown(files.repo)),
      },
      ...(restic1 && restic2
        ? [{ ...figures('restic', 'backup of the stopped data directory', restic1, restic2), unchangedSeconds: restic1Again?.seconds }]
        : []),
      {
        ...figures('cairn', 'postgres engine (pg_basebackup -X fetch), running server', engine1, engine2),
        ...(await cairnBreakdown(engine.repo)),
      },
      ...(pgbr1 && pgbr2 ? [figures('pgbackrest', 'full, then incr (file level; backup/ only, WAL archive apart)', pgbr1, pgbr2)] : []),
    ];
    return {
      dataset: 'B',
      description: `PostgreSQL 15: pgbench -i -s ${scale}, then pgbench -c 2 -T ${seconds} -R 60 (${transactions ?? '?'} transactions) and CHECKPOINT`,
      dataDirBytes: changes.bytes,
      pageSize: changes.pageSize,
      pageFiles: changes.pageFiles,
      pages: changes.pages,
      changedPages: changes.changedPages,
      changedPageBytes: changes.changedPageBytes,
      changedOtherBytes: changes.changedOtherBytes,
      changedZeroPages: changes.changedZeroPages,
      tools,
    };
  } finally {
    for (const server of servers.reverse()) await server.stop();
  }
}

// ---- dataset A: MariaDB ---------------------------------------------------------------------------

/**
 * What the mariadb engine's first backup is measured against (issue 21): `mariabackup --backup
 * --stream=xbstream | zstd -3 -T2` into a file, with the engine's own --parallel (1), on the same
 * running server. Its figure is the stream's size.
 */
async function mariabackupZstd(server: MariadbServer, work: string, logs: Logs): Promise<{ how: string; seconds: number; bytes: number }> {
  const target = join(work, 'mariabackup-target');
  const out = join(work, 'mariabackup.xbstream.zst');
  mkdirSync(target, { recursive: true });
  logs.seq++;
  const how = 'mariabackup --backup --stream=xbstream | zstd -3 -T2';
  const pipeline = `set -o pipefail; mariabackup --backup --stream=xbstream --parallel=1 --socket="$1" --user=root --target-dir="$2" | zstd -3 -T2 -q -f -o "$3"`;
  const timed = await runTimed('bash', ['-c', pipeline, 'bash', server.socket, target, out], {
    logPrefix: join(logs.dir, `${String(logs.seq).padStart(2, '0')}-mariabackup-zstd`),
  });
  const bytes = statSync(out).size;
  rmSync(out, { force: true });
  rmSync(target, { recursive: true, force: true });
  return { how, seconds: timed.seconds, bytes };
}

function sysbench(server: MariadbServer, args: string[], logs: Logs, label: string): Promise<Timed> {
  logs.seq++;
  return runTimed('sysbench', ['--db-driver=mysql', `--mysql-socket=${server.socket}`, '--mysql-user=root', '--mysql-db=sbtest', ...args], {
    logPrefix: join(logs.dir, `${String(logs.seq).padStart(2, '0')}-sysbench-${label}`),
  });
}

async function datasetA(options: PageIncrementalOptions, work: string, logs: Logs): Promise<PageIncrementalResult> {
  const tables = envNumber('CAIRN_BENCH_MARIADB_TABLES', 4);
  const rows = envNumber('CAIRN_BENCH_MARIADB_ROWS', 100_000);
  const seconds = envNumber('CAIRN_BENCH_MARIADB_SECONDS', 30);
  const rate = envNumber('CAIRN_BENCH_MARIADB_RATE', 60);
  const datadir = join(work, 'mariadb-data');
  const install = spawnSync(
    'mariadb-install-db',
    [
      '--no-defaults',
      `--datadir=${datadir}`,
      '--auth-root-authentication-method=socket',
      '--skip-test-db',
      ...(asRoot ? ['--user=root'] : []),
    ],
    { encoding: 'utf8' },
  );
  if (install.status !== 0) throw new CommandFailed(`mariadb-install-db failed: ${install.stderr}`);
  const extraArgs = ['--innodb-buffer-pool-size=256M'];
  const servers: MariadbServer[] = [];
  try {
    const first = await startMariadb({ datadir, extraArgs });
    servers.push(first);
    first.sql(
      `CREATE USER 'cairn'@'127.0.0.1' IDENTIFIED BY '${first.password}'; GRANT ALL PRIVILEGES ON *.* TO 'cairn'@'127.0.0.1'; CREATE DATABASE sbtest;`,
    );
    const sb = ['oltp_read_write', `--tables=${tables}`, `--table-size=${rows}`];
    const prepare = await sysbench(first, [...sb, 'prepare'], logs, 'prepare');
    console.log(`  sysbench prepare, ${tables} × ${rows} rows: ${prepare.seconds.toFixed(1)} s`);

    const engine = new CairnEngine(join(work, 'cairn-engine-repo'), logs, 'mariadb', first.port, 'cairn', first.password);
    const files = new CairnFiles(join(work, 'cairn-files-repo'), logs);
    const restic = options.peers ? new ResticFiles(join(work, 'restic-repo'), logs) : undefined;
    await engine.init();
    await files.cairn.init();
    await restic?.restic.init();

    const engine1 = await engine.backup();
    const streamPeer = options.peers ? await mariabackupZstd(first, work, logs) : undefined;
    await first.stop(); // a clean shutdown writes every dirty page
    const before = dirState(datadir);
    const files1 = await files.backup(datadir);
    const restic1 = await restic?.backup(datadir);
    // Unchanged re-backups of the same stopped directory (issue 21: at most 5% of the first backup's time).
    const files1Again = await files.backup(datadir);
    const restic1Again = await restic?.backup(datadir);

    const live = await startMariadb({ datadir, extraArgs });
    servers.push(live);
    const load = await sysbench(
      live,
      ['oltp_write_only', `--tables=${tables}`, `--table-size=${rows}`, '--threads=2', `--time=${seconds}`, `--rate=${rate}`, 'run'],
      logs,
      'run',
    );
    const transactions = /transactions:\s+(\d+)/.exec(readFileSync(load.stdoutFile, 'utf8'))?.[1];
    const liveEngine = new CairnEngine(engine.repo, logs, 'mariadb', live.port, 'cairn', live.password, true);
    const engine2 = await liveEngine.backup();
    await live.stop();
    const after = dirState(datadir);
    const files2 = await files.backup(datadir);
    const restic2 = await restic?.backup(datadir);

    const changes = changesBetween(before, after);
    return {
      dataset: 'A',
      description: `MariaDB: sysbench oltp_read_write prepare (${tables} × ${rows} rows), then oltp_write_only --threads=2 --time=${seconds} --rate=${rate} (${transactions ?? '?'} transactions)`,
      dataDirBytes: changes.bytes,
      pageSize: changes.pageSize,
      pageFiles: changes.pageFiles,
      pages: changes.pages,
      changedPages: changes.changedPages,
      changedPageBytes: changes.changedPageBytes,
      changedOtherBytes: changes.changedOtherBytes,
      changedZeroPages: changes.changedZeroPages,
      tools: [
        {
          ...figures('cairn', 'files backup of the stopped data directory', files1, files2),
          unchangedSeconds: files1Again.seconds,
          ...(await cairnBreakdown(files.repo)),
        },
        ...(restic1 && restic2
          ? [{ ...figures('restic', 'backup of the stopped data directory', restic1, restic2), unchangedSeconds: restic1Again?.seconds }]
          : []),
        { ...figures('cairn', 'mariadb engine (mariabackup), running server', engine1, engine2), ...(await cairnBreakdown(engine.repo)) },
      ],
      streamPeer,
    };
  } finally {
    for (const server of servers.reverse()) await server.stop();
  }
}

// ---- the section --------------------------------------------------------------------------------

/** Runs dataset B, then A (CAIRN_BENCH_PAGES_DATASETS chooses); prints and returns the figures. */
export async function pageIncrementalsBench(options: PageIncrementalOptions): Promise<PageIncrementalResult[]> {
  const chosen = (process.env.CAIRN_BENCH_PAGES_DATASETS ?? 'B,A').toUpperCase().split(',');
  const missing = pageIncrementalsPrerequisites();
  const results: PageIncrementalResult[] = [];
  console.log('\nPage incrementals (issue 21): bytes the second backup of a real database adds, beside the pages that changed');
  for (const [name, run, lacking] of [
    ['B', datasetB, missing.postgres],
    ['A', datasetA, missing.mariadb],
  ] as const) {
    if (!chosen.includes(name)) continue;
    if (lacking) {
      console.log(`  dataset ${name} skipped: ${lacking}`);
      continue;
    }
    // Reachable by the database servers' user: pgBackRest and the servers run as postgres.
    const work = await postgresWorkDir();
    const logs: Logs = { dir: join(options.logDir, `pages-${name}`), seq: 0 };
    mkdirSync(logs.dir, { recursive: true });
    try {
      const result = await run(options, work, logs);
      results.push(result);
      console.log(formatPageIncrementals([result]));
    } finally {
      rmSync(work, { recursive: true, force: true });
    }
  }
  return results;
}

const mb = (bytes: number | undefined): string => (bytes === undefined ? '' : (bytes / MB).toFixed(1));

/** A table per dataset: each tool's first and second backup, the second against the changed pages and against restic. */
export function formatPageIncrementals(results: PageIncrementalResult[]): string {
  const out: string[] = [];
  for (const r of results) {
    out.push(
      `\ndataset ${r.dataset}: ${r.description}`,
      `  data directory ${mb(r.dataDirBytes)} MB; ${r.changedPages} of ${r.pages} pages changed (${mb(r.changedPageBytes)} MB, ${((r.changedPages / Math.max(1, r.pages)) * 100).toFixed(1)}%; ${r.changedZeroPages} of them zeroes) in ${r.pageFiles} files of ${r.pageSize / 1024} KiB pages; other files: ${mb(r.changedOtherBytes)} MB changed (4 KiB blocks in place, new files whole)`,
    );
    const header = [
      'tool',
      'what',
      'first MB',
      'second MB',
      'second / first',
      'second raw MB',
      'page files raw MB',
      'page files / changed pages',
      'changed pages between its snapshots MB',
      'page files / those',
      'other raw MB',
    ];
    const body = r.tools.map((t) => [
      t.tool,
      t.how,
      mb(t.firstAdded),
      mb(t.secondAdded),
      t.firstAdded ? `${((t.secondAdded / t.firstAdded) * 100).toFixed(1)}%` : '',
      mb(t.secondReportedRaw),
      mb(t.pageFileRaw),
      t.pageFileRaw !== undefined && r.changedPageBytes ? `${(t.pageFileRaw / r.changedPageBytes).toFixed(2)}×` : '',
      mb(t.snapshotChangedPageBytes),
      t.pageFileRaw !== undefined && t.snapshotChangedPageBytes ? `${(t.pageFileRaw / t.snapshotChangedPageBytes).toFixed(2)}×` : '',
      mb(t.otherRaw),
    ]);
    const widths = header.map((h, i) => Math.max(h.length, ...body.map((row) => (row[i] as string).length)));
    const line = (cells: string[]): string =>
      `  | ${cells.map((c, i) => (i < 2 ? c.padEnd(widths[i] as number) : c.padStart(widths[i] as number))).join(' | ')} |`;
    out.push(
      line(header),
      `  |${widths.map((w, i) => (i < 2 ? '-'.repeat(w + 2) : `${'-'.repeat(w + 1)}:`)).join('|')}|`,
      ...body.map(line),
    );
    const seconds = r.tools.map((t) => `${t.tool} ${t.how.split(',')[0]}: ${t.firstSeconds.toFixed(1)} s`);
    if (r.streamPeer) seconds.push(`${r.streamPeer.how}: ${r.streamPeer.seconds.toFixed(1)} s (${mb(r.streamPeer.bytes)} MB)`);
    out.push(`  first backup, wall time (${mb(r.dataDirBytes)} MB data directory): ${seconds.join('; ')}`);
    const engine = r.tools.find((t) => t.tool === 'cairn' && !t.how.startsWith('files'));
    const pgbackrest = r.tools.find((t) => t.tool === 'pgbackrest');
    if (engine && r.streamPeer)
      out.push(`  engine throughput vs ${r.streamPeer.how}: ${(r.streamPeer.seconds / engine.firstSeconds).toFixed(2)}× (aim ≥ 1×)`);
    if (engine && pgbackrest)
      out.push(
        `  engine full backup throughput vs pgBackRest's: ${(pgbackrest.firstSeconds / engine.firstSeconds).toFixed(2)}× (aim ≥ 1.5×)`,
      );
    const cairnFiles = r.tools.find((t) => t.tool === 'cairn' && t.how.startsWith('files'));
    const restic = r.tools.find((t) => t.tool === 'restic');
    const unchanged = [cairnFiles, restic]
      .filter((t) => t?.unchangedSeconds !== undefined)
      .map(
        (t) =>
          `${t!.tool} ${t!.unchangedSeconds!.toFixed(2)} s (${((t!.unchangedSeconds! / t!.firstSeconds) * 100).toFixed(1)}% of its first)`,
      );
    if (unchanged.length > 0) out.push(`  unchanged re-backup of the stopped data directory: ${unchanged.join('; ')} (aim ≤ 5%)`);
    if (cairnFiles && restic?.secondAdded)
      out.push(
        `  second backup, cairn / restic (same stopped data directory): ${(cairnFiles.secondAdded / restic.secondAdded).toFixed(2)}×`,
      );
  }
  out.push(
    "  MB = 10^6 bytes; first/second MB: repository growth on disk (compressed, encrypted); second raw: the tool's own figure before compression (cairn rawBytesAdded, restic data_added, pgbackrest info's delta); page files / other raw: cairn's new data pieces in the second snapshot, before compression, in page files and in other files; changed pages: the stopped data directory compared page by page (the engines read the running server a little earlier)",
  );
  return out.join('\n');
}
