import { DamagedError } from '../core/errors.ts';
import { CONTENT_CACHE_PIECES, contentSlices, sliceOf } from '../core/file-content.ts';
import { detachSmall, type PieceReader } from '../core/piece-reader.ts';
import type { TreeEntry } from '../core/tree.ts';

/** One slice of a file, its read already started (or shared with a recent piece's). */
export interface SliceRead {
  id: Buffer;
  /** The slice's bytes once its piece is in; a slice past its piece's end rejects with DamagedError. */
  data: Promise<Buffer>;
  /**
   * What the read this slice started holds until the slice is written (PieceReader.readAhead); 0 when
   * the slice takes its bytes from a recent piece already read.
   */
  started: number;
  /** Bytes the slice yields (for an ordinary piece, the piece's indexed length). */
  length: number;
}

/**
 * The slices of a file entry in file order, each piece's read started as the
 * slice is reached (core/file-content.ts contentSlices): the readers that fetch
 * ahead of their writer (restore, dump) go through here.
 *
 * Ordinary content reads every piece as before. A page file's extents return to
 * recent pieces (a parent's big piece between short runs of changed pages), so
 * its pieces are kept, as promises, among the CONTENT_CACHE_PIECES most recently
 * used (least recently used dropped first: the model the backup bounds a
 * restore's reads by, pipeline/page-writer.ts RestoreReadCost); a slice of one of
 * them starts no read.
 */
export async function* sliceReads(entry: TreeEntry, reader: PieceReader): AsyncGenerator<SliceRead> {
  const recent: Array<{ id: Buffer; piece: Promise<Buffer> }> = [];
  let total = 0;
  for await (const slice of contentSlices(entry, reader)) {
    if (slice.length === undefined) {
      const { data, holds } = reader.readAhead(slice.id);
      data.catch(() => undefined);
      yield { id: slice.id, data, started: holds, length: reader.location(slice.id).length };
      continue;
    }
    // A page file's extents state their lengths: more than its size is damage before any of it is read.
    total += slice.length;
    if (total > (entry.size ?? 0)) throw pageSizeMismatch(entry, `more than ${entry.size ?? 0} bytes`);
    let started = 0;
    const at = recent.findIndex((r) => r.id.equals(slice.id));
    let cached = at >= 0 ? (recent.splice(at, 1)[0] as { id: Buffer; piece: Promise<Buffer> }) : undefined;
    if (!cached) {
      const { data, holds } = reader.readAhead(slice.id);
      started = holds;
      cached = { id: Buffer.from(slice.id), piece: data };
      cached.piece.catch(() => undefined);
    }
    recent.unshift(cached);
    if (recent.length > CONTENT_CACHE_PIECES) recent.pop();
    // A slice small beside the memory it lies in is copied out: a slice kept until its file is complete
    // (a small file's, small-file-writers.ts) would otherwise keep its whole piece, or frame, alive.
    const data = cached.piece.then((piece) => detachSmall(sliceOf(piece, slice)));
    data.catch(() => undefined);
    yield { id: cached.id, data, started, length: slice.length };
  }
  if (entry.extentLists && total !== entry.size) throw pageSizeMismatch(entry, `${total} bytes`);
}

function pageSizeMismatch(entry: TreeEntry, found: string): DamagedError {
  return new DamagedError(`the extents of page file ${entry.name} add up to ${found}, the snapshot records ${entry.size ?? 'no size'}`);
}

/** The bytes an entry's content adds up to, from its slices and the index (for an entry that records no size). */
export async function slicesSize(entry: TreeEntry, reader: PieceReader): Promise<number> {
  let size = 0;
  for await (const slice of contentSlices(entry, reader)) size += slice.length ?? reader.location(slice.id).length;
  return size;
}
