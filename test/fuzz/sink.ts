import type { Readable } from 'node:stream';
import type { SnapshotSink } from '../../agent/engines/engine.ts';

/**
 * A sink for the stream splitters' fuzzers: it reads every stream it is handed to
 * the end (as the real tree sink does) and records what arrived, so a splitter's
 * result can be checked against what it stored.
 */
export class CollectingSink implements SnapshotSink {
  readonly files = new Map<string, Buffer>();
  readonly dirs: string[] = [];
  readonly symlinks: string[] = [];

  async addStream(path: string, data: Readable | AsyncIterable<Buffer>): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const chunk of data as AsyncIterable<Buffer>) chunks.push(chunk);
    this.files.set(path, Buffer.concat([this.files.get(path) ?? Buffer.alloc(0), ...chunks]));
  }

  addDirectory(path: string): Promise<void> {
    this.dirs.push(path);
    return Promise.resolve();
  }

  addSymlink(path: string): Promise<void> {
    this.symlinks.push(path);
    return Promise.resolve();
  }
}

/** Cuts bytes into the chunks a pipe might deliver. */
export function chunked(data: Buffer, cuts: number[]): Buffer[] {
  const points = [...new Set(cuts.map((c) => (data.length === 0 ? 0 : c % data.length)))].sort((a, b) => a - b);
  const out: Buffer[] = [];
  let at = 0;
  for (const point of points) {
    if (point > at) out.push(data.subarray(at, point));
    at = Math.max(at, point);
  }
  if (at < data.length) out.push(data.subarray(at));
  return out;
}
