import type { Writable } from 'node:stream';
import { CairnError, DamagedError } from '../core/errors.ts';
import { shortId, type Snapshot } from '../core/snapshot.ts';
import { OutputWriter } from '../files/output-writer.ts';
import { dumpTar } from '../files/tar-dump.ts';
import { sliceReads } from '../files/slice-reads.ts';
import type { SnapshotBrowser } from './snapshot-browser.ts';

/** Slices fetched ahead of the writer: a few frames, whatever the file size. */
const DUMP_READ_AHEAD = 4;

/** The archive formats `dump` writes a directory as (restic's --archive; zip is not written). */
export const DUMP_ARCHIVES = ['tar'] as const;
export type DumpArchive = (typeof DUMP_ARCHIVES)[number];

export interface DumpResult {
  path: string;
  /** What was dumped: a file's bytes, or a directory as an archive. */
  kind: 'file' | 'archive';
  bytes: number;
}

/**
 * Writes what `path` is in the snapshot to `out`: a file's bytes, or a directory
 * (the snapshot root for `/`) as a tar archive of everything below it
 * (files/tar-dump.ts), unless `out` is a terminal. A symlink is refused: its target may
 * lie outside the snapshot.
 */
export async function dump(
  browser: SnapshotBrowser,
  snapshot: Snapshot,
  path: string,
  out: Writable,
  signal?: AbortSignal,
): Promise<DumpResult> {
  const { path: found, pathBytes, entry } = await browser.lookup(snapshot, path);
  if (entry.type === 'dir') {
    if ((out as { isTTY?: boolean }).isTTY === true) {
      // As restic: an archive on a terminal is noise at best, and control sequences at worst.
      throw new CairnError('Cairn.Usage', `${found || '/'} is a directory: dump writes it as a tar archive, and stdout is a terminal`, {
        hint: `redirect it: \`cairn dump ${shortId(snapshot.id)} ${found || '/'} > out.tar\`, or \`… | tar -x -C DIR\``,
      });
    }
    // The root's own entry is the directory the snapshot was taken of (`root`), when it recorded one.
    const meta = found === '' ? snapshot.root : entry;
    const { bytes } = await dumpTar(browser.reader, { path: pathBytes, meta, tree: entry.subtree }, out, signal);
    return { path: found || '/', kind: 'archive', bytes };
  }
  if (entry.type === 'symlink') {
    throw new CairnError(
      'Cairn.Usage',
      `${found} is a symlink to ${JSON.stringify(entry.target ?? '')} in snapshot ${shortId(snapshot.id)}; dump does not follow links`,
      { hint: 'dump the file it points to, or the directory holding the link (a tar archive keeps it as a link)' },
    );
  }
  const writer = new OutputWriter(out, 'the whole file');
  const ahead: Array<Promise<Buffer>> = [];
  let bytes = 0;
  const writeNext = async (): Promise<void> => {
    const data = await (ahead.shift() as Promise<Buffer>);
    signal?.throwIfAborted();
    bytes += data.length;
    await writer.write(data);
  };
  try {
    // Slices, not pieces: a page file is extents of pieces (files/slice-reads.ts), read ahead as ordinary files are.
    for await (const read of sliceReads(entry, browser.reader)) {
      ahead.push(read.data);
      if (ahead.length >= DUMP_READ_AHEAD) await writeNext();
    }
    while (ahead.length > 0) await writeNext();
    if (entry.size !== undefined && entry.size !== bytes)
      throw new DamagedError(`${found}: read ${bytes} bytes, the snapshot records ${entry.size}`);
    await writer.flush();
  } finally {
    writer.release();
  }
  return { path: found, kind: 'file', bytes };
}
