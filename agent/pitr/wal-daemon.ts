// Over 400 lines as one unit: the WalDaemon class's push and fetch paths share its request
// loop, its in-flight and prefetch maps and its idle timer; split apart they would pass that
// state back and forth.
import { randomBytes } from 'node:crypto';
import { chmod, copyFile, lstat, mkdir, readdir, readFile, rename, rm, stat, unlink, writeFile } from 'node:fs/promises';
import { createServer, type Server, type Socket } from 'node:net';
import { basename, dirname, join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Semaphore } from '../core/concurrency.ts';
import { CairnError, errorMessage, NotFoundError } from '../core/errors.ts';
import { CONFIG_KEY } from '../core/layout.ts';
import type { LogArchive, LogFileRecord, PushOutcome } from '../core/log-archive.ts';
import { parseWalName, walName } from '../core/log-chain.ts';
import {
  classifyWalFile,
  describeWalFile,
  findPgWaldump,
  requireWalFileName,
  summarizeSegment,
  type TransactionSummary,
} from './wal-metadata.ts';
import {
  decodeRequest,
  encodeLine,
  MAX_LINE,
  ProtocolError,
  type DaemonStatus,
  type WalRequest,
  type WalResponse,
  type WireError,
} from './wal-protocol.ts';
import { acquireStartLock, DaemonLog } from './wal-daemon-start.ts';
import { ensureSpoolDir, type SpoolPaths } from './wal-spool.ts';
import { stageDirProblem, writeDurably } from './wal-stage.ts';

/**
 * The long-running half of wal-push / wal-fetch: it opens the repository
 * once (one scrypt or KMS call for its whole life) and serves the thin
 * clients over an owner-only Unix socket in the spool directory.
 *
 * Push, like pgBackRest's archive-async: a request for one segment also
 * uploads the other segments PostgreSQL has marked ready
 * (pg_wal/archive_status/*.ready), a few at a time, one record batch per
 * group, so when PostgreSQL asks for the next one it is already stored and
 * the answer is immediate. An answer is sent only once the file and its
 * record are durably stored: PostgreSQL may then delete the segment.
 *
 * Fetch: after serving a segment it fetches the next few into the spool
 * (authenticated on the way, as every sealed object is) and serves later
 * requests from there; prefetched files nobody asks for are dropped. When
 * the request names the restore's staging directory (wal-stage.ts), the next
 * few go there instead, each written whole before it gets its name, and
 * restore_command takes them with `mv`: the daemon sees a staged file
 * disappear (it polls) and stages further ahead.
 *
 * One daemon per repository and stream: starting takes a lock file in the
 * spool, checks that no daemon answers on the socket, then binds it. A daemon
 * that finds its socket replaced (a start that raced past a stale lock) stops
 * once idle, so clients only ever reach one. It stops after an idle time, on
 * a stop request and on SIGTERM, removing its socket and pid file (the
 * start lock and the daemon's log file are in wal-daemon-start.ts).
 */

export interface WalDaemonOptions {
  spool: SpoolPaths;
  stream: string;
  /** Printable repository location, for the log and status. */
  repository: string;
  /** Opens the repository (unwraps the master key): called once, under the start lock. */
  openArchive: () => Promise<LogArchive>;
  idleMs: number;
  env: NodeJS.ProcessEnv;
  host: string;
  /** Aborted on SIGTERM: stop now (in-flight storage requests are cancelled by the same signal). */
  signal: AbortSignal;
  uploadConcurrency?: number;
  /** Ready segments taken ahead of PostgreSQL's requests at most. */
  lookahead?: number;
  prefetch?: number;
}

export type DaemonOutcome = 'already-running' | 'stopped';

/** Runs the daemon until it stops. 'already-running': another daemon serves this repository and stream; this one did nothing. */
export async function runWalDaemon(options: WalDaemonOptions): Promise<DaemonOutcome> {
  // Everything the daemon creates (socket, pid file, prefetched WAL) is for this user only.
  process.umask(0o077);
  await ensureSpoolDir(options.spool.dir);
  const log = await DaemonLog.open(options.spool.log);
  // The client reads our stdout only until we are up; later writes must not kill us.
  process.stdout.on('error', () => undefined);
  const lock = await acquireStartLock(options.spool, options.signal);
  if (lock === 'running') {
    log.info('another daemon already serves this repository and stream; exiting');
    await log.close();
    return 'already-running';
  }
  let daemon: WalDaemon;
  try {
    const archive = await options.openArchive();
    log.info(`repository ${options.repository} opened (master key unwrapped), stream ${options.stream}, pid ${process.pid}`);
    daemon = new WalDaemon(options, archive, log);
    await daemon.listen();
  } catch (error) {
    log.error(`could not start: ${errorMessage(error)}`);
    await log.close();
    throw error;
  } finally {
    await lock.release();
  }
  const reason = await daemon.served;
  log.info(`stopped (${reason})`);
  await log.close();
  return 'stopped';
}

interface PushItem {
  name: string;
  path: string;
  /** Read (and hashed) already: the segment PostgreSQL asked for. */
  data?: Buffer;
  hash?: string;
}

interface Group {
  /** Settles when the item's file and record are stored. */
  outcomes: Map<string, Promise<PushOutcome>>;
}

class WalDaemon {
  readonly served: Promise<string>;
  private readonly options: WalDaemonOptions;
  private readonly archive: LogArchive;
  private readonly log: DaemonLog;
  private readonly server: Server;
  private finish: (reason: string) => void = () => undefined;
  private socketInode = 0;
  private readonly startedAt = new Date().toISOString();
  private active = 0;
  private lastActivity = Date.now();
  private stopping = false;
  private readonly background = new Set<Promise<unknown>>();
  private readonly counters = { requests: 0, pushed: 0, fetched: 0, servedFromPrefetch: 0, takenFromStage: 0 };
  /** Files archived and recorded by this daemon: name → content hash. */
  private readonly done = new Map<string, string>();
  private readonly inflight = new Map<string, Promise<PushOutcome>>();
  /** name → the spool file holding it, or undefined when it was not archived when asked. */
  private readonly prefetched = new Map<string, Promise<string | undefined>>();
  private readonly prefetchSlots: Semaphore;
  /** The restore's staging directory the prefetched segments go to, when one was named and is fit (wal-stage.ts). */
  private stage: string | undefined;
  private readonly stageRefused = new Set<string>();
  /** name → its whole file in the staging directory, until restore_command takes it or the daemon drops it. */
  private readonly staged = new Map<string, string>();
  private stageTimer: NodeJS.Timeout | undefined;
  private polling: Promise<void> | undefined;
  private walSize = 16 << 20;
  private waldump: Promise<string | undefined> | undefined;
  private waldumpWarned = false;
  private timer: NodeJS.Timeout | undefined;

  constructor(options: WalDaemonOptions, archive: LogArchive, log: DaemonLog) {
    this.options = options;
    this.archive = archive;
    this.log = log;
    this.prefetchSlots = new Semaphore(options.uploadConcurrency ?? 4);
    this.server = createServer((socket) => this.onConnection(socket));
    this.served = new Promise((resolve) => (this.finish = resolve));
  }

  async listen(): Promise<void> {
    const { spool } = this.options;
    await unlink(spool.socket).catch(() => undefined);
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(spool.socket, () => {
        this.server.off('error', reject);
        resolve();
      });
    });
    await chmod(spool.socket, 0o600);
    this.socketInode = (await stat(spool.socket)).ino;
    await rm(spool.prefetch, { recursive: true, force: true });
    await mkdir(spool.prefetch, { mode: 0o700 });
    const pidTmp = `${spool.pid}.${process.pid}.tmp`;
    await writeFile(pidTmp, `${process.pid}\n`, { mode: 0o600 });
    await rename(pidTmp, spool.pid);
    this.options.signal.addEventListener('abort', () => void this.stop('SIGTERM'), { once: true });
    this.timer = setInterval(() => void this.tick(), Math.max(50, Math.min(1000, this.options.idleMs / 4)));
    this.log.info(`listening on ${spool.socket}; stops after ${Math.round(this.options.idleMs / 1000)} s idle`);
  }

  private async tick(): Promise<void> {
    if (this.stopping) return;
    const busy = this.active > 0 || this.background.size > 0;
    const inode = (await stat(this.options.spool.socket).catch(() => undefined))?.ino;
    if (inode !== this.socketInode) {
      // Another daemon took the socket over: no client can reach us any more.
      if (!busy) void this.stop('socket taken over by another daemon');
      return;
    }
    if (!busy && Date.now() - this.lastActivity >= this.options.idleMs) void this.stop('idle');
  }

  private onConnection(socket: Socket): void {
    let buffer = '';
    let handled = false;
    socket.on('error', () => undefined);
    socket.on('data', (chunk: Buffer) => {
      if (handled) return;
      buffer += chunk.toString();
      const end = buffer.indexOf('\n');
      if (end < 0 && buffer.length <= MAX_LINE) return;
      handled = true;
      void this.answer(end < 0 ? buffer : buffer.slice(0, end)).then((response) => socket.end(encodeLine(response)));
    });
  }

  private async answer(line: string): Promise<WalResponse> {
    let request: WalRequest;
    try {
      request = decodeRequest(line);
    } catch (error) {
      return {
        ok: false,
        error: {
          code: 'Cairn.Usage',
          message: `bad request to the WAL daemon: ${error instanceof ProtocolError ? error.message : errorMessage(error)}`,
        },
      };
    }
    if (this.stopping && request.op !== 'status')
      return {
        ok: false,
        error: {
          code: 'Cairn.Cancelled',
          message: 'the WAL daemon is stopping',
          hint: 'try again: a new daemon starts on demand',
          retry: true,
        },
      };
    this.active++;
    this.counters.requests++;
    try {
      return await this.dispatch(request);
    } catch (error) {
      const wire = toWire(error);
      this.log.error(`${request.op} failed: ${wire.message}`);
      return { ok: false, error: wire };
    } finally {
      this.active--;
      this.lastActivity = Date.now();
    }
  }

  private async dispatch(request: WalRequest): Promise<WalResponse> {
    switch (request.op) {
      case 'push':
        return { ok: true, op: 'push', outcome: await this.push(request.path, request.dataDir) };
      case 'fetch': {
        const source = await this.fetch(request.name, request.dest, request.stage);
        return { ok: true, op: 'fetch', found: source !== undefined, source };
      }
      case 'status':
        return { ok: true, op: 'status', status: await this.status() };
      case 'stop':
        setImmediate(() => void this.stop('stop requested'));
        return { ok: true, op: 'stop' };
    }
  }

  private async status(): Promise<DaemonStatus> {
    await this.pollStage();
    const prefetched: string[] = [];
    for (const [name, file] of this.prefetched) if (await settledValue(file)) prefetched.push(name);
    return {
      pid: process.pid,
      repository: this.options.repository,
      stream: this.options.stream,
      startedAt: this.startedAt,
      ...this.counters,
      stageDir: this.stage,
      prefetched: prefetched.sort(),
    };
  }

  // ------------------------------------------------------------ push

  private async push(path: string, dataDir: string): Promise<PushOutcome> {
    const name = basename(path);
    requireWalFileName(name);
    const data = await readFile(path).catch((cause: unknown) => {
      throw new CairnError('Cairn.Usage', `cannot read ${path}: ${errorMessage(cause)}`, {
        hint: "archive_command must pass %p, and run as the database server's user",
        cause,
      });
    });
    const hash = this.archive.hash(data);
    const pending = this.inflight.get(name);
    if (pending) await pending.catch(() => undefined);
    let outcome: PushOutcome;
    if (this.done.get(name) === hash) outcome = 'already-archived';
    else {
      const group = this.startGroup(dataDir, { name, path, data, hash });
      outcome = await (group.outcomes.get(name) as Promise<PushOutcome>);
    }
    this.counters.pushed++;
    this.readyAhead(dataDir, dirname(path));
    return outcome;
  }

  /** Starts a group for whatever else is ready, when nothing is being uploaded: keeps one group ahead of PostgreSQL. */
  private readyAhead(dataDir: string, walDir: string): void {
    if (this.inflight.size > 0 || this.stopping) return;
    const group = this.startGroup(dataDir, undefined, walDir);
    if (group.outcomes.size === 0) return;
    const all = Promise.allSettled(group.outcomes.values());
    this.background.add(all);
    void all.then(() => this.background.delete(all));
  }

  private startGroup(dataDir: string, first: PushItem | undefined, walDir = first ? dirname(first.path) : dataDir): Group {
    const items: PushItem[] = first ? [first] : [];
    const planned = new Map<string, { resolve: (o: PushOutcome) => void; reject: (e: unknown) => void }>();
    const outcomes = new Map<string, Promise<PushOutcome>>();
    const add = (item: PushItem): void => {
      const settled = Promise.withResolvers<PushOutcome>();
      settled.promise.catch(() => undefined);
      planned.set(item.name, settled);
      outcomes.set(item.name, settled.promise);
      this.inflight.set(item.name, settled.promise);
    };
    if (first) add(first);
    const work = (async () => {
      for (const name of await this.readyFiles(walDir)) {
        if (items.length >= (this.options.lookahead ?? 16)) break;
        if (this.done.has(name) || this.inflight.has(name) || planned.has(name)) continue;
        const item = { name, path: join(walDir, name) };
        items.push(item);
        add(item);
      }
      await this.runGroup(items, dataDir, planned);
    })();
    work.catch((error: unknown) => {
      for (const [name, p] of planned) {
        this.settle(name);
        p.reject(error);
      }
    });
    return { outcomes };
  }

  /** No longer in flight: done (or failed) before its waiters run, so they see it settled and can start the next group. */
  private settle(name: string): void {
    this.inflight.delete(name);
  }

  private async readyFiles(walDir: string): Promise<string[]> {
    const names = await readdir(join(walDir, 'archive_status')).catch(() => [] as string[]);
    return names
      .filter((n) => n.endsWith('.ready'))
      .map((n) => n.slice(0, -'.ready'.length))
      .filter((n) => classifyWalFile(n) !== undefined)
      .sort();
  }

  private async runGroup(
    items: PushItem[],
    dataDir: string,
    planned: Map<string, { resolve: (o: PushOutcome) => void; reject: (e: unknown) => void }>,
  ): Promise<void> {
    const records: LogFileRecord[] = [];
    const stored = new Map<string, { outcome: PushOutcome; hash: string }>();
    const slots = new Semaphore(this.options.uploadConcurrency ?? 4);
    await Promise.all(
      items.map(async (item) => {
        await slots.acquire();
        try {
          const data = item.data ?? (await readFile(item.path));
          const hash = item.hash ?? this.archive.hash(data);
          const [outcome, transactions] = await Promise.all([this.archive.putFile(item.name, data), this.transactions(item, dataDir)]);
          records.push(
            describeWalFile({
              name: item.name,
              size: data.length,
              hash,
              host: this.options.host,
              archivedAt: new Date().toISOString(),
              transactions,
            }),
          );
          stored.set(item.name, { outcome, hash });
        } catch (error) {
          this.settle(item.name);
          planned.get(item.name)?.reject(error);
          // A segment taken ahead fails again when PostgreSQL itself asks for it, and is reported then.
          if (!item.data) this.log.warn(`${item.name} not archived ahead: ${errorMessage(error)}`);
        } finally {
          slots.release();
        }
      }),
    );
    if (records.length === 0) return;
    await this.archive.writeRecords(records);
    for (const [name, { outcome, hash }] of stored) {
      this.done.set(name, hash);
      this.settle(name);
      planned.get(name)?.resolve(outcome);
      this.log.info(`${outcome === 'stored' ? 'archived' : 'already archived'} ${name}`);
    }
    // Bounded memory: only recent names can be asked for again.
    for (const name of this.done.keys()) {
      if (this.done.size <= 4096) break;
      this.done.delete(name);
    }
  }

  private async transactions(item: PushItem, dataDir: string): Promise<TransactionSummary | undefined> {
    if (classifyWalFile(item.name)?.kind !== 'wal') return undefined;
    this.waldump ??= readFile(join(dataDir, 'PG_VERSION'), 'utf8')
      .then(
        (v) => v.trim(),
        () => undefined,
      )
      .then((version) => findPgWaldump(this.options.env, version));
    const tool = await this.waldump;
    if (!tool) {
      if (!this.waldumpWarned)
        this.log.warn(
          'pg_waldump not found (pg_config --bindir, /usr/lib/postgresql/*/bin, PATH): archived WAL gets no commit times, so --to-time cannot use it; install the PostgreSQL server package',
        );
      this.waldumpWarned = true;
      return undefined;
    }
    const summary = await summarizeSegment(tool, item.path, this.options.env).catch((error: unknown) => ({
      firstEventTime: null,
      lastEventTime: null,
      error: errorMessage(error),
    }));
    if ('error' in summary && summary.error) this.log.warn(`pg_waldump could not read ${item.name}: ${summary.error}`);
    return summary;
  }

  // ------------------------------------------------------------ fetch

  private async fetch(name: string, dest: string, stage: string | undefined): Promise<'prefetch' | 'repository' | undefined> {
    requireWalFileName(name);
    if (stage !== undefined) await this.useStage(stage);
    // A prefetch on its way is nearly always the quicker source: wait for it rather than download twice.
    const spooled = await this.prefetched.get(name)?.catch(() => undefined);
    let size: number | undefined;
    let source: 'prefetch' | 'repository' = 'prefetch';
    if (spooled) {
      // Staged, yet asked for here: placed after restore_command looked for it. Moved, not copied.
      const inStage = this.staged.get(name) === spooled;
      if (inStage) this.staged.delete(name);
      try {
        size = inStage ? await moveFile(spooled, dest) : await placeAtomically(dest, (tmp) => copyFile(spooled, tmp));
        this.counters.servedFromPrefetch++;
      } catch (error) {
        // Dropped meanwhile: the repository still has it.
        if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
      }
    }
    if (size === undefined) {
      let data: Buffer;
      try {
        data = await this.archive.getFile(name);
      } catch (error) {
        if (!(error instanceof NotFoundError)) throw error;
        await this.repositoryStillThere(error);
        return undefined;
      }
      size = await placeAtomically(dest, (tmp) => writeFile(tmp, data, { mode: 0o600 }));
      source = 'repository';
    }
    if (classifyWalFile(name)?.kind === 'wal') this.walSize = size;
    this.counters.fetched++;
    this.prefetchAfter(name, size);
    return source;
  }

  /**
   * "Not archived" tells PostgreSQL to go on without the file (wal-fetch exits 1). A file storage
   * whose volume went away (an unmounted or lazily detached mount, a removed directory) also answers
   * "no such object", for every object: before saying a file was never archived, the repository's
   * config must still be there, else it is a storage failure (wal-fetch exits 200 and PostgreSQL stops).
   */
  private async repositoryStillThere(cause: unknown): Promise<void> {
    const config = await this.archive.repo.storage.stat(CONFIG_KEY).catch(() => undefined);
    if (config === undefined)
      throw new CairnError(
        'Cairn.Storage',
        `the repository ${this.archive.repo.storage.location} is not there any more (its config cannot be found): whether the file was archived cannot be told`,
        { hint: 'check that the repository is mounted or reachable; PostgreSQL stops until it is', cause },
      );
  }

  /** Keeps the next few segments of the same timeline in the spool; drops every other prefetched file. */
  private prefetchAfter(name: string, size: number): void {
    const position = classifyWalFile(name)?.kind === 'wal' ? parseWalName(name, size) : undefined;
    const wanted = new Set<string>();
    if (position)
      for (let i = 1; i <= (this.options.prefetch ?? 8); i++) wanted.add(walName(position.timeline, position.segment + i, size));
    for (const other of this.prefetched.keys()) if (!wanted.has(other)) this.drop(other);
    if (this.stopping) return;
    for (const next of wanted) {
      if (this.prefetched.has(next)) continue;
      const file = this.prefetchOne(next);
      this.prefetched.set(next, file);
      const done = file.then(
        async (path) => {
          // Dropped while it was on its way.
          if (path && this.prefetched.get(next) !== file) await unlink(path).catch(() => undefined);
          else if (path && dirname(path) !== this.options.spool.prefetch) this.staged.set(next, path);
        },
        () => undefined,
      );
      this.background.add(done);
      void done.finally(() => this.background.delete(done));
    }
  }

  private async prefetchOne(name: string): Promise<string | undefined> {
    await this.prefetchSlots.acquire();
    try {
      if (this.stopping) return undefined;
      const data = await this.archive.getFile(name);
      const stage = this.stage;
      if (this.stopping) return undefined;
      if (stage) {
        const path = join(stage, name);
        await writeDurably(path, data).catch((error: unknown) => {
          // Removed at the end of recovery (recovery_end_command).
          if ((error as NodeJS.ErrnoException).code === 'ENOENT') this.stageGone(stage);
          throw error;
        });
        return path;
      }
      const path = join(this.options.spool.prefetch, name);
      await placeAtomically(path, (tmp) => writeFile(tmp, data, { mode: 0o600 }));
      return path;
    } catch (error) {
      const gone = (error as NodeJS.ErrnoException).code === 'ENOENT' && this.stage === undefined;
      if (!(error instanceof NotFoundError) && !gone) this.log.warn(`prefetching ${name} failed: ${errorMessage(error)}`);
      return undefined;
    } finally {
      this.prefetchSlots.release();
    }
  }

  /** Forgets a prefetched file and removes it (once it is written, when it is on its way). */
  private drop(name: string): void {
    const file = this.prefetched.get(name);
    this.prefetched.delete(name);
    this.staged.delete(name);
    void settledValue(file).then(async (path) => {
      if (path) await unlink(path).catch(() => undefined);
    });
  }

  /** Stages into `dir` from now on, when it is fit; what was staged or spooled for another restore is dropped. */
  private async useStage(dir: string): Promise<void> {
    if (dir === this.stage || this.stageRefused.has(dir)) return;
    const problem = await stageDirProblem(dir);
    if (problem) {
      this.stageRefused.add(dir);
      // Gone: the end of recovery removed it, and PostgreSQL's last probes still name it.
      if (problem.endsWith('does not exist')) this.log.info(`not staging WAL for restore_command: ${problem}`);
      else this.log.warn(`not staging WAL for restore_command: ${problem}; every segment goes through wal-fetch`);
      return;
    }
    if (dir === this.stage) return;
    for (const name of [...this.prefetched.keys()]) this.drop(name);
    this.stage = dir;
    this.log.info(`staging the next segments in ${dir} for restore_command`);
    this.stageTimer ??= setInterval(() => void this.pollStage(), 50);
  }

  /** The staging directory was removed (the end of recovery): what it held is forgotten, not counted as taken. */
  private stageGone(dir: string): void {
    if (this.stage !== dir) return;
    this.stage = undefined;
    clearInterval(this.stageTimer);
    this.stageTimer = undefined;
    for (const name of [...this.staged.keys()]) {
      this.staged.delete(name);
      this.prefetched.delete(name);
    }
    this.log.info(`staging directory ${dir} removed; staging stopped`);
  }

  /** Notices the staged files restore_command took (gone from the staging directory) and stages further ahead. */
  private pollStage(): Promise<void> {
    this.polling ??= this.scanStage().finally(() => (this.polling = undefined));
    return this.polling;
  }

  private async scanStage(): Promise<void> {
    const dir = this.stage;
    if (!dir || this.stopping) return;
    const names = await readdir(dir).catch(() => undefined);
    if (!names) return this.stageGone(dir);
    const present = new Set(names);
    const taken: string[] = [];
    for (const [name, path] of [...this.staged]) {
      if (
        present.has(name) ||
        (await lstat(path).then(
          () => true,
          () => false,
        ))
      )
        continue;
      // Moved by a fetch meanwhile, or dropped: not taken by restore_command.
      if (this.staged.get(name) === path) taken.push(name);
    }
    if (taken.length === 0) return;
    // Emptied along with its directory at the end of recovery: nothing was taken.
    if (
      !(await lstat(dir).then(
        () => true,
        () => false,
      ))
    )
      return this.stageGone(dir);
    for (const name of taken) {
      if (!this.staged.has(name)) continue; // moved by a fetch while the directory was looked at
      this.counters.takenFromStage++;
      this.staged.delete(name);
      this.prefetched.delete(name);
    }
    this.lastActivity = Date.now();
    this.prefetchAfter(taken.sort().at(-1) as string, this.walSize);
  }

  // ------------------------------------------------------------ stop

  private async stop(reason: string): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    clearInterval(this.timer);
    clearInterval(this.stageTimer);
    this.log.info(`stopping: ${reason}`);
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
    // Uploads taken ahead finish (or fail, on SIGTERM); a client already connected gets its answer.
    const deadline = Date.now() + 30_000;
    while ((this.active > 0 || this.background.size > 0) && Date.now() < deadline) await sleep(20);
    const { spool } = this.options;
    if ((await stat(spool.socket).catch(() => undefined))?.ino === this.socketInode) await unlink(spool.socket).catch(() => undefined);
    if ((await readFile(spool.pid, 'utf8').catch(() => '')).trim() === String(process.pid)) await unlink(spool.pid).catch(() => undefined);
    await rm(spool.prefetch, { recursive: true, force: true });
    // The staging directory is the restore's (removed at the end of recovery); what the daemon put there goes with it.
    for (const path of this.staged.values()) await unlink(path).catch(() => undefined);
    this.finish(reason);
  }
}

/** The value of a promise that has settled, without waiting for one that has not. */
async function settledValue<T>(promise: Promise<T | undefined> | undefined): Promise<T | undefined> {
  if (!promise) return undefined;
  return Promise.race([promise.catch(() => undefined), new Promise<undefined>((resolve) => setImmediate(() => resolve(undefined)))]);
}

/** Moves a staged file to restore_command's %p: a rename, or across file systems a copy through a temporary name. */
async function moveFile(from: string, to: string): Promise<number> {
  const { size } = await stat(from);
  try {
    await rename(from, to);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EXDEV') throw error;
    await placeAtomically(to, (tmp) => copyFile(from, tmp));
    await unlink(from).catch(() => undefined);
  }
  return size;
}

/** Writes through a temporary name beside the target, then renames: PostgreSQL never sees half a file. */
async function placeAtomically(path: string, write: (tmp: string) => Promise<void>): Promise<number> {
  const tmp = `${path}.cairn-${randomBytes(6).toString('hex')}.tmp`;
  try {
    await write(tmp);
    const { size } = await stat(tmp);
    await rename(tmp, path);
    return size;
  } catch (error) {
    await unlink(tmp).catch(() => undefined);
    throw error;
  }
}

function toWire(error: unknown): WireError {
  if (error instanceof CairnError) return { code: error.code, message: error.message, hint: error.hint };
  return { code: 'Cairn.Failure', message: errorMessage(error) };
}
