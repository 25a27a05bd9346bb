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
  restore(options: Options, source: SnapshotSource, ctx: EngineContext & { target: RestoreTarget }): Promise<void>;
}

export type EngineMetadata = Record<string, unknown>;

export interface EngineContext {
  progress: ProgressListener;
  signal?: AbortSignal | undefined;
  env: NodeJS.ProcessEnv;
  /** A private directory for the named exceptions that need local files (etcd snapshots, pg_restore --jobs). */
  tempDir: string;
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

/** What an engine reads back at restore: the snapshot's files, and the metadata it recorded. */
export interface SnapshotSource {
  metadata: EngineMetadata;
  list(): Promise<Array<{ path: string; size: number }>>;
  open(path: string): Readable;
  /** Writes the whole snapshot into a directory (physical engines restore files as they were). */
  restoreTo(directory: string): Promise<void>;
}
