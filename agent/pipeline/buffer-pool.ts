/**
 * Reusable large buffers. The pipeline moves data at disk speed; allocating a
 * fresh multi-MiB Buffer per frame and per pack leaves the garbage collector
 * behind and inflates RSS, so frames and packs are assembled in pooled buffers.
 * The number of buffers alive is bounded by the callers' semaphores.
 */
export class BufferPool {
  readonly size: number;
  private readonly free: Buffer[] = [];
  private readonly keep: number;

  constructor(size: number, keep: number) {
    this.size = size;
    this.keep = keep;
  }

  /** A buffer of at least `size` bytes (a dedicated one when more is needed than the pool's size). */
  acquire(atLeast = this.size): Buffer {
    if (atLeast > this.size) return Buffer.allocUnsafeSlow(atLeast);
    return this.free.pop() ?? Buffer.allocUnsafeSlow(this.size);
  }

  release(buffer: Buffer): void {
    if (buffer.length === this.size && this.free.length < this.keep) this.free.push(buffer);
  }
}
