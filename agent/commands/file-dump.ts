import type { Writable } from 'node:stream';
import { CairnError, DamagedError } from '../core/errors.ts';
import { shortId, type Snapshot } from '../core/snapshot.ts';
import { contentIds } from '../pipeline/snapshot-writer.ts';
import type { SnapshotBrowser } from './snapshot-browser.ts';

/** Pieces fetched ahead of the writer: a few frames, whatever the file size. */
const DUMP_READ_AHEAD = 4;

/**
 * Writes one file's bytes to `out` in order, reading only that file's pieces
 * (and its content lists), a few pieces ahead, and waiting for `out` to drain
 * whenever it says so: memory stays bounded however slow the reader of `out`.
 */
export async function dump(
  browser: SnapshotBrowser,
  snapshot: Snapshot,
  path: string,
  out: Writable,
  signal?: AbortSignal,
): Promise<{ path: string; bytes: number }> {
  const { path: found, entry } = await browser.lookup(snapshot, path);
  if (entry.type === 'dir') {
    throw new CairnError('Cairn.Usage', `${found || '/'} is a directory in snapshot ${shortId(snapshot.id)}; dump writes one file`, {
      hint: `list it with \`cairn ls ${shortId(snapshot.id)} ${found || '/'}\`, or restore it with \`cairn restore ${shortId(snapshot.id)} --include ${found || '/'} --target DIR\``,
    });
  }
  if (entry.type === 'symlink') {
    throw new CairnError(
      'Cairn.Usage',
      `${found} is a symlink to ${JSON.stringify(entry.target ?? '')} in snapshot ${shortId(snapshot.id)}; dump does not follow links`,
      { hint: 'dump the file it points to' },
    );
  }
  let failure: Error | undefined;
  const onError = (error: Error): void => {
    failure ??= error;
  };
  out.on('error', onError);
  const ahead: Array<Promise<Buffer>> = [];
  let bytes = 0;
  const writeNext = async (): Promise<void> => {
    const data = await (ahead.shift() as Promise<Buffer>);
    signal?.throwIfAborted();
    if (failure) throw failure;
    bytes += data.length;
    if (!out.write(data)) await drained(out);
  };
  try {
    for await (const id of contentIds(entry, browser.reader)) {
      const data = browser.reader.read(id);
      data.catch(() => undefined);
      ahead.push(data);
      if (ahead.length >= DUMP_READ_AHEAD) await writeNext();
    }
    while (ahead.length > 0) await writeNext();
  } finally {
    out.off('error', onError);
    for (const pending of ahead) pending.catch(() => undefined);
  }
  if (failure) throw failure;
  if (entry.size !== undefined && entry.size !== bytes)
    throw new DamagedError(`${found}: read ${bytes} bytes, the snapshot records ${entry.size}`);
  return { path: found, bytes };
}

function drained(out: Writable): Promise<void> {
  return new Promise((resolve, reject) => {
    const finish = (error?: Error): void => {
      out.off('drain', onDrain);
      out.off('error', onError);
      out.off('close', onClose);
      if (error) reject(error);
      else resolve();
    };
    const onDrain = (): void => finish();
    const onError = (error: Error): void => finish(error);
    const onClose = (): void => finish(new CairnError('Cairn.Failure', 'the output was closed before the whole file was written'));
    out.on('drain', onDrain);
    out.on('error', onError);
    out.on('close', onClose);
  });
}
