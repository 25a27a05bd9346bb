/** Runs `fn` over items with at most `limit` calls in flight; rejects on the first failure after the others settle. */
export async function mapLimit<T>(items: Iterable<T>, limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  const iterator = items[Symbol.iterator]();
  let failure: { error: unknown } | undefined;
  const worker = async (): Promise<void> => {
    for (let next = iterator.next(); !next.done && !failure; next = iterator.next()) {
      try {
        await fn(next.value);
      } catch (error) {
        failure ??= { error };
      }
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, limit) }, worker));
  if (failure) throw failure.error;
}

/** A counting semaphore: bounds work in flight (and so memory) in the pipeline. */
export class Semaphore {
  private available: number;
  private readonly waiters: Array<() => void> = [];

  constructor(permits: number) {
    this.available = permits;
  }

  async acquire(): Promise<void> {
    if (this.available > 0) {
      this.available--;
      return;
    }
    await new Promise<void>((resolve) => this.waiters.push(resolve));
  }

  release(): void {
    const next = this.waiters.shift();
    if (next) next();
    else this.available++;
  }
}

/**
 * Bounds the bytes of work in flight: `run(bytes, fn)` starts when what runs leaves room for
 * `bytes` (or nothing runs: a job larger than the budget runs alone). First come, first served.
 */
export class ByteBudget {
  private inFlight = 0;
  private readonly waiters: Array<{ bytes: number; start: () => void }> = [];
  private readonly limit: number;

  constructor(limit: number) {
    this.limit = limit;
  }

  async run<T>(bytes: number, fn: () => Promise<T>): Promise<T> {
    if (this.waiters.length === 0 && this.fits(bytes)) this.inFlight += bytes;
    else await new Promise<void>((start) => this.waiters.push({ bytes, start }));
    try {
      return await fn();
    } finally {
      this.inFlight -= bytes;
      for (let next = this.waiters[0]; next && this.fits(next.bytes); next = this.waiters[0]) {
        this.waiters.shift();
        this.inFlight += next.bytes;
        next.start();
      }
    }
  }

  private fits(bytes: number): boolean {
    return this.inFlight === 0 || this.inFlight + bytes <= this.limit;
  }
}
