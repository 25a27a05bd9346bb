import { AlreadyExistsError, CairnError, NotFoundError } from '../../agent/core/errors.ts';
import type { DeletableStorage, ObjectInfo, PutOptions } from '../../agent/core/storage.ts';
import { checkRange, shortRangeError } from '../../agent/storage/ranges.ts';

interface StoredObject {
  data: Buffer;
  modified: number;
}

export interface MemoryStorageOptions {
  /** Shown in messages; `memory://test` unless given. */
  location?: string;
  /** The storage's clock for `modified` (milliseconds since the epoch); Date.now unless given. */
  now?: () => number;
}

/**
 * An in-memory storage for tests that keeps the whole Storage contract
 * (agent/core/storage.ts), so code tested on it behaves as on a real backend:
 * create-if-absent is atomic (checked and set in one synchronous step, and
 * `atomicCreate` is true); a resolved put is seen by every later call; objects
 * are copied in and out, so a caller changing its buffer later changes nothing
 * stored (no partial or torn reads); ranges are exact or fail; missing objects
 * are NotFoundError; listings stream with sizes and modification times.
 *
 * Every request yields to the event loop once, as a real backend's would, and
 * `inFlight`/`maxInFlight` count overlapping requests (tests of concurrency caps).
 */
export class MemoryStorage implements DeletableStorage {
  readonly location: string;
  readonly atomicCreate = true;
  inFlight = 0;
  maxInFlight = 0;
  private readonly stored = new Map<string, StoredObject>();
  private readonly now: () => number;

  constructor(options: MemoryStorageOptions = {}) {
    this.location = options.location ?? 'memory://test';
    this.now = options.now ?? Date.now;
  }

  /** The stored objects by key (a read-only view, for assertions). */
  get objects(): ReadonlyMap<string, Buffer> {
    return new Map([...this.stored].map(([key, object]) => [key, object.data]));
  }

  get(key: string): Promise<Buffer> {
    return this.request(key, () => Buffer.from(this.existing(key).data));
  }

  getRange(key: string, offset: number, length: number): Promise<Buffer> {
    return this.request(key, () => {
      checkRange(key, offset, length);
      const { data } = this.existing(key);
      const slice = data.subarray(offset, offset + length);
      if (slice.length !== length) throw shortRangeError(this.location, key, offset, length, slice.length);
      return Buffer.from(slice);
    });
  }

  put(key: string, data: Buffer, options: PutOptions = {}): Promise<void> {
    // Copied now: the caller may reuse its buffer as soon as put returns.
    const copy = Buffer.from(data);
    return this.request(key, () => {
      if (options.ifAbsent === true && this.stored.has(key)) throw new AlreadyExistsError(key);
      this.stored.set(key, { data: copy, modified: Math.floor(this.now()) });
    });
  }

  stat(key: string): Promise<ObjectInfo | undefined> {
    return this.request(key, () => {
      const object = this.stored.get(key);
      return object && { key, size: object.data.length, modified: object.modified };
    });
  }

  async *list(prefix: string): AsyncIterable<ObjectInfo> {
    if (prefix.startsWith('/')) throw new CairnError('Cairn.Usage', `invalid list prefix ${JSON.stringify(prefix)}`);
    // A snapshot of the keys, like a paged listing: objects added meanwhile may or may not appear; none twice.
    for (const key of [...this.stored.keys()]) {
      if (!key.startsWith(prefix)) continue;
      const info = await this.stat(key);
      if (info) yield info;
    }
  }

  delete(key: string): Promise<void> {
    return this.request(key, () => void this.stored.delete(key));
  }

  private existing(key: string): StoredObject {
    const object = this.stored.get(key);
    if (!object) throw new NotFoundError(key);
    return object;
  }

  /** Runs one request after a turn of the event loop, counting overlap; the work itself is synchronous, hence atomic. */
  private async request<T>(key: string, work: () => T): Promise<T> {
    checkKey(key);
    this.inFlight++;
    this.maxInFlight = Math.max(this.maxInFlight, this.inFlight);
    try {
      await new Promise((resolve) => setImmediate(resolve));
      return work();
    } finally {
      this.inFlight--;
    }
  }
}

/** The keys every backend refuses (empty, absolute, dot segments), refused here too so tests cannot rely on them. */
function checkKey(key: string): void {
  if (
    key === '' ||
    key.startsWith('/') ||
    key.endsWith('/') ||
    key.split('/').some((part) => part === '.' || part === '..' || part === '')
  ) {
    throw new CairnError('Cairn.Usage', `invalid object key ${JSON.stringify(key)}`);
  }
}
