/**
 * The one interface every storage backend implements (file://, s3://, gs://).
 *
 * What a backend must guarantee — the repository's correctness rests on these:
 *
 * - Atomic objects: a reader sees either no object or the whole object as it
 *   was written, never a prefix. An interrupted `put` leaves no object under
 *   the key (a temporary name, a multipart upload or a resumable session that
 *   is never completed is not an object).
 * - Durable on success: when `put` resolves, the object survives a crash of
 *   this process and of the host (fsync on disks; the service's ack on clouds).
 * - Read-after-write: once `put` resolved, `get`, `stat` and `list` on any
 *   client see the object (S3 and GCS are strongly consistent; NFS needs
 *   close-to-open consistency, which the file backend's fsync+rename gives).
 * - Create-if-absent: `put(key, data, { ifAbsent: true })` fails with
 *   AlreadyExistsError when the key exists. Backends that can do this
 *   atomically (S3 `If-None-Match: *`, GCS `ifGenerationMatch=0`, link(2)
 *   on a local disk) set `atomicCreate`; the others check-then-write and say
 *   so, and callers that depend on exclusivity read that flag.
 * - No partial reads: `get` returns the whole object or throws; `getRange`
 *   returns exactly `length` bytes or throws.
 * - Missing objects throw NotFoundError, never an empty buffer; every other
 *   failure (access denied, missing bucket, network) throws a CairnError with
 *   code `Cairn.Storage` whose message names the backend and the key, after
 *   the backend's own retries for transient faults (throttling, 5xx, resets).
 * - `list(prefix)` yields every key under the prefix exactly once, in no
 *   promised order, streaming (never the whole listing in memory), with keys
 *   relative to the repository root.
 * - Modification times come from the storage's clock: `list` and `stat` give
 *   each object's `modified` (see ObjectInfo), which the storage sets when the
 *   object's current content is stored. A writer cannot choose it, so a
 *   reader can judge a record's age (a lease's) without trusting the
 *   writer's clock. A backend that cannot learn it fails the call with
 *   Cairn.Storage rather than inventing a time.
 *
 * Deleting is not part of Storage: only garbage collection and the
 * control plane hold a DeletableStorage (hosts cannot destroy backups).
 */
export interface Storage {
  /** A printable location with no credentials in it, for messages and logs. */
  readonly location: string;
  /** True when `put(..., { ifAbsent: true })` is atomic on this backend. */
  readonly atomicCreate: boolean;
  /**
   * Set when objects pass through a transform (a storage hook, docs/storage-hooks.md):
   * the repository config records it, and `list` sizes are then of the stored
   * bytes, not of the objects `get` returns (offsets cannot be checked against them).
   */
  readonly transform?: 'hook' | undefined;

  get(key: string): Promise<Buffer>;
  getRange(key: string, offset: number, length: number): Promise<Buffer>;
  put(key: string, data: Buffer, options?: PutOptions): Promise<void>;
  /** Size and modification time of the object, or undefined when it does not exist. */
  stat(key: string): Promise<ObjectInfo | undefined>;
  list(prefix: string): AsyncIterable<ObjectInfo>;
}

export interface PutOptions {
  ifAbsent?: boolean;
}

export interface ObjectInfo {
  key: string;
  size: number;
  /**
   * When the object's current content was stored, by the storage's clock, in
   * whole milliseconds since the Unix epoch (UTC) — a number, not a Date, so it
   * compares and subtracts directly. Precision is the backend's: S3 keeps whole
   * seconds, GCS milliseconds, a local disk its mtime (the writing host's clock,
   * or the NFS server's). Stable: listing or stat-ing an unchanged object again
   * gives the same value; a put without ifAbsent over it sets a new one.
   */
  modified: number;
}

export interface DeletableStorage extends Storage {
  /** Removes the object; removing a missing object is not an error. */
  delete(key: string): Promise<void>;
}
