import { Worker } from 'node:worker_threads';
import { CairnError } from '../core/errors.ts';

/**
 * A few worker threads running one program, each request answered by one reply with the
 * request's id (the restore's small-file writers and frame openers).
 *
 * The program is plain JavaScript in a string, so it runs the same from the sources, the bundled
 * CLI and the single executable; it takes Node's modules from `process.getBuiltinModule`, which
 * works whether Node evaluates it as a script or as a module (it does the latter when the process
 * was started with --input-type=module). A request goes to the least busy thread. A thread holds the
 * process open only while it has requests out, so a pool nobody closes never keeps the CLI from
 * exiting, and an awaited reply is never cut off. A thread that stops fails what it had in flight
 * and every later request with one clear error.
 */
/** A pool thread stopped, failed outside a request, or the pool was closed: nothing to do with the data a request held. */
export class ThreadStoppedError extends CairnError {
  constructor(message: string, options: { hint?: string; cause?: unknown } = {}) {
    super('Cairn.Failure', message, options);
    this.name = 'ThreadStoppedError';
  }
}

interface Slot {
  worker: Worker;
  inFlight: number;
}

export interface ThreadPoolOptions {
  source: string;
  count: number;
  /** What a thread is, for the error when one stops: "a restore writer thread". */
  what: string;
  hint: string;
  /** Sent to each thread before any request (keys it needs). */
  init?: unknown;
}

export class ThreadPool<Reply extends { id: number }> {
  private readonly options: ThreadPoolOptions;
  private slots: Slot[] | undefined;
  private readonly pending = new Map<number, { slot: Slot; resolve: (reply: Reply) => void; reject: (error: Error) => void }>();
  private nextId = 0;
  private broken: Error | undefined;

  constructor(options: ThreadPoolOptions) {
    this.options = { ...options, count: Math.max(1, options.count) };
  }

  /** Sends `message` (given an `id`) with `transfer` moved, not copied; resolves with the thread's reply. */
  request(message: Record<string, unknown>, transfer: ArrayBuffer[] = []): Promise<Reply> {
    if (this.broken) return Promise.reject(this.broken);
    const slot = this.leastBusy();
    const id = this.nextId++;
    const done = new Promise<Reply>((resolve, reject) => this.pending.set(id, { slot, resolve, reject }));
    if (slot.inFlight++ === 0) slot.worker.ref();
    slot.worker.postMessage({ ...message, id }, transfer);
    return done;
  }

  /** Stops the threads; a request still out, and any later one, fails with ThreadStoppedError. */
  async close(): Promise<void> {
    const slots = this.slots ?? [];
    this.slots = undefined;
    this.broken ??= new ThreadStoppedError(`${this.options.what} was stopped: the command no longer needed it`);
    for (const waiting of this.pending.values()) waiting.reject(this.broken);
    this.pending.clear();
    await Promise.all(slots.map((slot) => slot.worker.terminate()));
  }

  private leastBusy(): Slot {
    this.slots ??= Array.from({ length: this.options.count }, () => this.start());
    let best = this.slots[0] as Slot;
    for (const slot of this.slots) if (slot.inFlight < best.inFlight) best = slot;
    return best;
  }

  private start(): Slot {
    const worker = new Worker(this.options.source, { eval: true });
    worker.unref();
    if (this.options.init !== undefined) worker.postMessage(this.options.init);
    const slot: Slot = { worker, inFlight: 0 };
    worker.on('message', (reply: Reply) => {
      const waiting = this.pending.get(reply.id);
      if (!waiting) return;
      this.pending.delete(reply.id);
      if (--slot.inFlight === 0) worker.unref();
      waiting.resolve(reply);
    });
    const fail = (cause: unknown): void => {
      this.broken ??= new ThreadStoppedError(`${this.options.what} stopped: ${cause instanceof Error ? cause.message : String(cause)}`, {
        hint: this.options.hint,
        cause,
      });
      for (const [id, waiting] of this.pending) {
        if (waiting.slot !== slot) continue;
        this.pending.delete(id);
        waiting.reject(this.broken);
      }
    };
    worker.on('error', fail);
    worker.on('exit', (code) => {
      if (this.slots?.includes(slot)) fail(new Error(`exit code ${code}`));
    });
    return slot;
  }
}
