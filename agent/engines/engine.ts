import type { Readable } from 'node:stream';
import type { EngineSpec } from '../core/engine-options/spec.ts';
import type { ProgressListener } from '../progress/progress.ts';

/**
 * One extension point per database kind. An engine checks its prerequisites
 * (binary, version, server reachable, privileges) and fails with an error that
 * names the fix; produces the data as streams or files for the chunk pipeline;
 * records the consistency point (binlog position, LSN, revision) as metadata;
 * and turns a snapshot back into something the database can use. Engines take
 * options, never argv, and never see the repository: the sink hides it.
 * Its pure part (name, options schema, flags, capabilities) is its spec in
 * core/engine-options/<engine>.ts, which the engine carries as `spec`.
 */
export interface Engine<Options = Record<string, unknown>> {
  /** The spec's name. */
  readonly name: string;
  readonly description: string;
  /** The options schema, flags and capabilities (core/engine-options/<engine>.ts). */
  readonly spec: EngineSpec;
  /** What the engine needs on the host, for `cairn engines`. */
  readonly requires: readonly string[];
  parseOptions(raw: Record<string, unknown>): Options;
  check(options: Options, ctx: EngineContext): Promise<void>;
  backup(options: Options, sink: SnapshotSink, ctx: EngineContext): Promise<EngineMetadata>;
  restore(options: Options, source: SnapshotSource, ctx: RestoreContext): Promise<void>;
  /**
   * A restore drill (`cairn drill`, the orchestrated `agent drill`): brings the
   * snapshot back inside `ctx.tempDir` only, proves it with the engine's own
   * tools and reports one DrillCheck per step. Absent: the engine cannot be
   * drilled (its spec's capabilities.drill is false).
   *
   * What a drill must never do, whatever the snapshot or the host holds: take
   * the engine's options (it gets none: no host, port, socket, user, password
   * or endpoint of the production server), read the caller's client settings
   * (PG*, MYSQL_*, ETCD*, ~/.my.cnf, pg_service.conf), or connect to any server
   * it did not start itself. A server it needs is started privately
   * (private-mariadb.ts, private-postgres.ts, private-etcd.ts) on a data
   * directory under `ctx.tempDir`, reachable only through a socket in a
   * private directory (or a loopback port it chose), and stopped before the
   * drill returns or throws, also when `ctx.signal` aborts.
   *
   * A check that finds damage is returned with `ok: false` (the drill goes on
   * with the checks that still make sense); a drill throws only when it cannot
   * go on (a tool missing, a private server that does not start, cancel).
   */
  drill?(source: SnapshotSource, ctx: DrillContext): Promise<DrillCheck[]>;
  /**
   * The programs the drill runs, checked before anything is restored: a drill
   * on a host without them is refused with an error naming the package
   * (drill-tools.ts, missingDrillTools).
   */
  readonly drillTools?: readonly DrillTool[];
}

/** What a drill is given: no engine options, on purpose (see Engine.drill). */
export interface DrillContext {
  progress: ProgressListener;
  signal?: AbortSignal | undefined;
  /**
   * The caller's environment. Run a private server's tools with
   * drillEnvironment(env) (drill-tools.ts): it drops the variables that point
   * database clients at a server (PGHOST, PGSERVICE, MYSQL_HOST, ETCDCTL_*…).
   */
  env: NodeJS.ProcessEnv;
  /**
   * The drill's own scratch directory, empty but for the caller's record of
   * whose it is (commands/drill-scratch.ts), on a file system the caller
   * checked has room (restored data, private data directories, sockets all go
   * here). The caller removes it afterwards, also on failure and cancel (and
   * the next drill, after a SIGKILL); mode
   * 0711, so a server running as its own user can reach a subdirectory the
   * drill gives it.
   */
  tempDir: string;
  /** `--thorough`: the slower, deeper variant of each check (mariadb-check --extended, pg_amcheck --heapallindexed). */
  thorough: boolean;
}

/** One step of a drill, as reported per check (text and --json) and recorded in the `drill` history event. */
export interface DrillCheck {
  /** Short and stable: 'restore', 'load dump', 'mariadb-check', 'row counts', 'pg_amcheck'. */
  name: string;
  /** `restore`: bringing the data back (counted in the restore duration); `check`: proving it. */
  phase: 'restore' | 'check';
  /** False when the check was skipped (then `found` says why, and `ok` says whether that is acceptable). */
  ran: boolean;
  ok: boolean;
  /** One line: what it found ('12 tables OK', 'table shop.orders: corrupt'), or why it did not run. */
  found: string;
  /** Structured findings for --json and history (row counts per table, the damaged tables). */
  details?: Record<string, unknown> | undefined;
  durationMs: number;
}

/** A program a drill needs: the first of `names` found on PATH or in `dirs`; `package` is what to install (Debian). */
export interface DrillTool {
  names: readonly string[];
  /** Directories searched besides PATH (mariadbd is in /usr/sbin; PostgreSQL's server in /usr/lib/postgresql/<major>/bin: write `*` for the major). */
  dirs?: readonly string[] | undefined;
  package: string;
}

export type EngineMetadata = Record<string, unknown>;

export interface EngineContext {
  progress: ProgressListener;
  signal?: AbortSignal | undefined;
  env: NodeJS.ProcessEnv;
  /** A private directory for the named exceptions that need local files (etcd snapshots, pg_restore --jobs). */
  tempDir: string;
}

export interface RestoreContext extends EngineContext {
  target: RestoreTarget;
  /**
   * Moves the files an engine held back (RestoreToOptions.partial) into place, after a flush to disk
   * (engine-helpers.ts placeLast): the engine's last call. A point-in-time restore puts it off until
   * the log replay is done or set up (the replay's server runs without them, or is not started).
   */
  placeLast(directory: string, paths: readonly string[]): Promise<void>;
}

export interface RestoreTarget {
  /** Directory to restore into (physical engines, files). */
  directory?: string | undefined;
  /** Database name to restore into, when the engine can rename (logical engines). */
  database?: string | undefined;
}

/** Where an engine puts what it backs up: files of the snapshot, by path, in any order. */
export interface SnapshotSink {
  /** Stores a stream as a file of the snapshot (a dump on stdout, a file of a tar stream). */
  addStream(path: string, data: Readable | AsyncIterable<Buffer>, meta?: FileMeta): Promise<void>;
  addDirectory(path: string, meta?: FileMeta): Promise<void>;
  addSymlink(path: string, target: string, meta?: FileMeta): Promise<void>;
}

export interface FileMeta {
  mode?: number;
  mtimeMs?: number;
  uid?: number;
  gid?: number;
}

/** What a file an engine holds back (RestoreToOptions.partial) is named until the engine's last step. */
export const PARTIAL_SUFFIX = '.cairn-restoring';

export interface RestoreToOptions {
  /**
   * Files (paths in the snapshot) written under their name plus PARTIAL_SUFFIX, for the engine to
   * move into place as its very last step (engine-helpers.ts placeLast): a file the server cannot
   * start without, so that a restore stopped anywhere before its end — killed, failed, out of
   * space — leaves a directory the server refuses rather than one it starts with files missing.
   */
  partial?: readonly string[];
}

/** What an engine reads back at restore: the snapshot's files, and the metadata it recorded. */
export interface SnapshotSource {
  metadata: EngineMetadata;
  list(): Promise<Array<{ path: string; size: number }>>;
  open(path: string): Readable;
  /** Writes the whole snapshot into a directory (physical engines restore files as they were). */
  restoreTo(directory: string, options?: RestoreToOptions): Promise<void>;
}
