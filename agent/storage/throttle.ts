import { CairnError } from '../core/errors.ts';
import { CONFIG_KEY, HISTORY_PREFIX, KEYS_PREFIX, LOCKS_PREFIX } from '../core/layout.ts';
import type { DeletableStorage, ObjectInfo, PutOptions } from '../core/storage.ts';

/** Time, injectable so the bucket can be tested without waiting. */
export interface Clock {
  now(): number;
  sleep(ms: number, signal?: AbortSignal): Promise<void>;
}

export const realClock: Clock = {
  now: () => performance.now(),
  sleep: (ms, signal) =>
    new Promise((resolve, reject) => {
      if (signal?.aborted) return reject(cancelled(signal));
      const onAbort = (): void => {
        clearTimeout(timer);
        reject(cancelled(signal as AbortSignal));
      };
      const timer = setTimeout(() => {
        signal?.removeEventListener('abort', onAbort);
        resolve();
      }, ms);
      signal?.addEventListener('abort', onAbort, { once: true });
    }),
};

function cancelled(signal: AbortSignal): Error {
  return signal.reason instanceof Error ? signal.reason : new CairnError('Cairn.Cancelled', 'cancelled; nothing was committed');
}

/**
 * A token bucket shared by every transfer of the process. Tokens (bytes) refill
 * at `rate` per second up to `burst`; a transfer takes its whole size at once
 * and may drive the bucket into debt, which the next takers wait out. So the
 * long-run rate holds whatever the object sizes, and concurrent transfers
 * queue fairly in the order they asked.
 */
export class TokenBucket {
  readonly rate: number;
  readonly burst: number;
  private readonly clock: Clock;
  private tokens: number;
  private last: number;

  constructor(bytesPerSecond: number, options: { burst?: number; clock?: Clock } = {}) {
    if (!(bytesPerSecond > 0)) throw new CairnError('Cairn.Usage', `a rate limit must be positive, got ${bytesPerSecond}`);
    this.rate = bytesPerSecond;
    // One second's worth, at least 64 KiB: small control objects pass without waiting.
    this.burst = options.burst ?? Math.max(64 << 10, bytesPerSecond);
    this.clock = options.clock ?? realClock;
    this.tokens = this.burst;
    this.last = this.clock.now();
  }

  /** Takes `bytes` now and returns how many milliseconds the caller must wait before using them. */
  reserve(bytes: number): number {
    const now = this.clock.now();
    this.tokens = Math.min(this.burst, this.tokens + ((now - this.last) * this.rate) / 1000);
    this.last = now;
    this.tokens -= bytes;
    return this.tokens >= 0 ? 0 : (-this.tokens / this.rate) * 1000;
  }

  async take(bytes: number, signal?: AbortSignal): Promise<void> {
    const wait = this.reserve(bytes);
    if (wait > 0) await this.clock.sleep(wait, signal);
  }
}

/** Caps how many requests run at once; waiters are served first come, first served. */
export class Semaphore {
  private free: number;
  private readonly waiters: Array<() => void> = [];

  constructor(slots: number) {
    this.free = slots;
  }

  async run<T>(fn: () => Promise<T>): Promise<T> {
    if (this.free > 0) this.free--;
    else await new Promise<void>((resolve) => this.waiters.push(resolve));
    try {
      return await fn();
    } finally {
      const next = this.waiters.shift();
      if (next) next();
      else this.free++;
    }
  }
}

export interface TransferOptions {
  /** Bytes per second written to the backend, shared by all uploads of the process. */
  uploadBytesPerSecond?: number | undefined;
  /** Bytes per second read from the backend. */
  downloadBytesPerSecond?: number | undefined;
  /** Storage requests in flight at once (independent of compression concurrency). */
  maxTransfers?: number | undefined;
  /** Once aborted, data requests fail with Cairn.Cancelled and throttle waits end. */
  signal?: AbortSignal | undefined;
  clock?: Clock;
}

/**
 * Every transfer of the CLI passes here (agent/cli/context.ts): bandwidth
 * limits on the stored bytes, a cap on concurrent requests, and cancellation.
 * Control objects (config, keys, locks, history) bypass all three: they are
 * tiny, and a lock refresh or the release record written after Ctrl-C must
 * never wait behind data transfers or be refused.
 */
export class TransferStorage implements DeletableStorage {
  readonly location: string;
  readonly atomicCreate: boolean;
  private readonly inner: DeletableStorage;
  private readonly upload: TokenBucket | undefined;
  private readonly download: TokenBucket | undefined;
  private readonly slots: Semaphore | undefined;
  private readonly signal: AbortSignal | undefined;

  constructor(inner: DeletableStorage, options: TransferOptions) {
    this.inner = inner;
    this.location = inner.location;
    this.atomicCreate = inner.atomicCreate;
    this.upload = options.uploadBytesPerSecond ? new TokenBucket(options.uploadBytesPerSecond, { clock: options.clock }) : undefined;
    this.download = options.downloadBytesPerSecond ? new TokenBucket(options.downloadBytesPerSecond, { clock: options.clock }) : undefined;
    this.slots = options.maxTransfers ? new Semaphore(options.maxTransfers) : undefined;
    this.signal = options.signal;
  }

  get transform(): 'hook' | undefined {
    return this.inner.transform;
  }

  get(key: string): Promise<Buffer> {
    return this.transfer(key, async (limited) => {
      const data = await this.inner.get(key);
      if (limited) await this.download?.take(data.length, this.signal);
      return data;
    });
  }

  getRange(key: string, offset: number, length: number): Promise<Buffer> {
    return this.transfer(key, async (limited) => {
      if (limited) await this.download?.take(length, this.signal);
      return this.inner.getRange(key, offset, length);
    });
  }

  put(key: string, data: Buffer, options?: PutOptions): Promise<void> {
    return this.transfer(key, async (limited) => {
      if (limited) {
        await this.upload?.take(data.length, this.signal);
        this.signal?.throwIfAborted();
      }
      await this.inner.put(key, data, options);
    });
  }

  stat(key: string): Promise<ObjectInfo | undefined> {
    return this.transfer(key, () => this.inner.stat(key));
  }

  async *list(prefix: string): AsyncIterable<ObjectInfo> {
    if (!isControl(prefix)) this.signal?.throwIfAborted();
    yield* this.inner.list(prefix);
  }

  delete(key: string): Promise<void> {
    return this.transfer(key, () => this.inner.delete(key));
  }

  /** Runs a request: control objects at once; data under the transfer cap, and not at all once cancelled. */
  private async transfer<T>(key: string, fn: (limited: boolean) => Promise<T>): Promise<T> {
    if (isControl(key)) return fn(false);
    this.signal?.throwIfAborted();
    if (!this.slots) return fn(true);
    return this.slots.run(async () => {
      this.signal?.throwIfAborted();
      return fn(true);
    });
  }
}

function isControl(key: string): boolean {
  return key === CONFIG_KEY || key.startsWith(LOCKS_PREFIX) || key.startsWith(HISTORY_PREFIX) || key.startsWith(KEYS_PREFIX);
}

/** "2.5" (MB/s, 1 MB = 10^6 bytes) → bytes per second. */
export function parseMBps(text: string, what: string): number {
  const n = Number(text);
  if (!Number.isFinite(n) || n <= 0)
    throw new CairnError('Cairn.Usage', `invalid ${what} ${JSON.stringify(text)}`, {
      hint: 'give megabytes per second (1 MB = 1,000,000 bytes), e.g. 10 or 0.5',
    });
  return Math.round(n * 1_000_000);
}
