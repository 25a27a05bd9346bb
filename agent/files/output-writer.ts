import type { Writable } from 'node:stream';
import { CairnError } from '../core/errors.ts';

/**
 * Writes `dump`'s output (a file's bytes or a tar archive) to a stream that may
 * be slow or go away: each write waits for the stream to drain when it says so,
 * which bounds memory however slow its reader, and the first error the stream
 * reports (EPIPE: the reader closed the pipe) or its closing fails the next write
 * and `flush`, so an output cut short is never a success.
 */
export class OutputWriter {
  private readonly out: Writable;
  /** What was being written, for the message when the output closes early ("the whole file"). */
  private readonly what: string;
  private failure: Error | undefined;
  private readonly onError = (error: Error): void => {
    this.failure ??= this.closed(error);
  };

  constructor(out: Writable, what: string) {
    this.out = out;
    this.what = what;
    out.on('error', this.onError);
  }

  async write(data: Buffer): Promise<void> {
    this.throwIfFailed();
    if (data.length === 0) return;
    if (!this.out.write(data)) await this.drained();
    this.throwIfFailed();
  }

  /** Resolves once everything written has been handed on (so an error of the last write is seen), then stops listening. */
  async flush(): Promise<void> {
    try {
      this.throwIfFailed();
      await new Promise<void>((resolve, reject) => {
        this.out.write(Buffer.alloc(0), (error) => (error ? reject(this.failure ?? this.closed(error)) : resolve()));
      });
      this.throwIfFailed();
    } finally {
      this.release();
    }
  }

  /** Stops listening for the stream's errors (after a failure, or once flushed). */
  release(): void {
    this.out.off('error', this.onError);
  }

  private throwIfFailed(): void {
    if (this.failure) throw this.failure;
    if (this.out.destroyed || this.out.writableEnded) throw this.closed();
  }

  private closed(cause?: Error): CairnError {
    const why = cause ? ` (${cause.message})` : '';
    return new CairnError('Cairn.Failure', `the output failed before ${this.what} was written${why}`, {
      hint: 'what reads the output (a pipe, `head`, a full disk) stopped early: what it received is incomplete',
      ...(cause ? { cause } : {}),
    });
  }

  private drained(): Promise<void> {
    const out = this.out;
    return new Promise((resolve, reject) => {
      const finish = (error?: Error): void => {
        out.off('drain', onDrain);
        out.off('error', onError);
        out.off('close', onClose);
        if (error) reject(error);
        else resolve();
      };
      const onDrain = (): void => finish();
      const onError = (error: Error): void => finish(this.failure ?? this.closed(error));
      const onClose = (): void => finish(this.failure ?? this.closed());
      out.on('drain', onDrain);
      out.on('error', onError);
      out.on('close', onClose);
    });
  }
}
