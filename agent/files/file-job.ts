import type { TreeEntry } from '../core/tree.ts';

/** One fetched (or being fetched) piece of a file, in file order. */
export interface PieceItem {
  kind: 'piece';
  rel: string;
  id: Buffer;
  length: number;
  data: Promise<Buffer>;
}

/** The pieces of one file, handed from the tree walk to that file's writer as they are fetched. */
export class FileJob {
  /** The path shown in messages. */
  readonly rel: string;
  /** The path's bytes under the target, as a latin1 string (one character per byte). */
  readonly key: string;
  readonly entry: TreeEntry;
  /** For the first file of a hard-link group: resolved with its path once created. */
  created: PromiseWithResolvers<Buffer> | undefined;
  /** For the other files of the group: the first file's path. */
  linkTo: Promise<Buffer> | undefined;
  private readonly queue: PieceItem[] = [];
  private closed = false;
  private error: Error | undefined;
  private waiter: (() => void) | undefined;
  private settled = false;
  /** Whether a lane feeds this file's pieces (file-lanes.ts), not the tree walk. */
  fedByLane = false;

  constructor(rel: string, key: string, entry: TreeEntry) {
    this.rel = rel;
    this.key = key;
    this.entry = entry;
  }

  /** Queues a piece for the writer; false when the writer is done with this file (the piece is dropped, its bytes the caller's to release). */
  push(item: PieceItem): boolean {
    if (this.settled) {
      item.data.catch(() => undefined);
      return false;
    }
    this.queue.push(item);
    this.notify();
    return true;
  }

  close(): void {
    this.closed = true;
    this.notify();
  }

  fail(error: Error): void {
    this.error ??= error;
    this.close();
  }

  /** The next piece, or undefined at the end of the file; throws what the walk reported for this file. */
  async next(): Promise<PieceItem | undefined> {
    for (;;) {
      const item = this.queue.shift();
      if (item) return item;
      if (this.error) throw this.error;
      if (this.closed) return undefined;
      await new Promise<void>((resolve) => (this.waiter = resolve));
    }
  }

  /** After a failure: let go of pieces still queued. */
  drain(release: (bytes: number) => void): void {
    for (const item of this.queue.splice(0)) {
      item.data.catch(() => undefined);
      release(item.length);
    }
  }

  settle(): void {
    this.settled = true;
  }

  private notify(): void {
    const waiter = this.waiter;
    this.waiter = undefined;
    waiter?.();
  }
}
