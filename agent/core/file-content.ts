import { ID_BYTES } from './crypto.ts';
import { DamagedError } from './errors.ts';
import { decodeExtents, extentSlice } from './page-file.ts';
import type { PieceReader } from './piece-reader.ts';
import type { TreeEntry } from './tree.ts';

/**
 * The one way to read a file entry's content, whichever layout it has: ordinary
 * content (`content`, or `contentLists` of piece ids; every piece whole) or a page
 * file (`extentLists`: slices of pieces; core/page-file.ts). Every reader that
 * rebuilds bytes or walks references goes through here, so a layout a reader does
 * not know cannot be skipped silently.
 */

/** A slice of one piece: `length` undefined means the whole piece. */
export interface ContentSlice {
  id: Buffer;
  offset: number;
  length: number | undefined;
}

/** The entry's slices in file order, `list` pieces read one at a time. */
export async function* contentSlices(entry: TreeEntry, reader: PieceReader): AsyncGenerator<ContentSlice> {
  if (entry.extentLists) {
    for (const listId of entry.extentLists) {
      const list = await reader.read(Buffer.from(listId, 'hex'));
      for (const extent of decodeExtents(list, listId)) yield extent;
    }
    return;
  }
  if (entry.content) {
    for (const id of entry.content) yield { id: Buffer.from(id, 'hex'), offset: 0, length: undefined };
    return;
  }
  for (const listId of entry.contentLists ?? []) {
    const list = await reader.read(Buffer.from(listId, 'hex'));
    if (list.length % ID_BYTES !== 0) throw new DamagedError(`content list ${listId} has a bad length`);
    for (let at = 0; at < list.length; at += ID_BYTES) yield { id: list.subarray(at, at + ID_BYTES), offset: 0, length: undefined };
  }
}

/** The bytes a slice names out of its piece (the whole piece for ordinary content). */
export function sliceOf(piece: Buffer, slice: ContentSlice): Buffer {
  return slice.length === undefined ? piece : extentSlice(piece, { id: slice.id, offset: slice.offset, length: slice.length });
}

/**
 * Every piece id the entry's content uses, data and lists alike (for reference
 * walks: a collector must count the lists too). Data ids repeat when extents
 * share a piece.
 */
export async function* contentPieces(entry: TreeEntry, reader: PieceReader): AsyncGenerator<Buffer> {
  for (const listId of [...(entry.contentLists ?? []), ...(entry.extentLists ?? []), ...(entry.pageHashes ?? [])])
    yield Buffer.from(listId, 'hex');
  for await (const slice of contentSlices(entry, reader)) yield slice.id;
}

/** Pieces a reader keeps of one file while rebuilding it: a page file's extents return to recent pieces. */
export const CONTENT_CACHE_PIECES = 8;

/** Pieces read ahead of the slice being yielded, and the bytes they may hold: their reads overlap. */
const CONTENT_AHEAD_PIECES = 8;
const CONTENT_AHEAD_BYTES = 8 << 20;

/**
 * The file's bytes in order, one slice at a time. A page file's pieces are kept
 * in a small cache of recent pieces (extents interleave a parent's piece with
 * runs of changed pages), and its slices must add up to its size. The pieces of
 * the next slices are read ahead (up to CONTENT_AHEAD_PIECES and _BYTES), so
 * frames are fetched and opened side by side, not one after the other.
 */
export async function* contentBytes(entry: TreeEntry, reader: PieceReader): AsyncGenerator<Buffer> {
  // Least recently used goes first, as the writer's RestoreReadCost assumes when it bounds re-reads: the
  // cache sees the slices in file order, as it did when each piece was read only when its slice came.
  const recent: Array<{ id: Buffer; data: Promise<Buffer> }> = [];
  const ahead: Array<{ slice: ContentSlice; data: Promise<Buffer>; holds: number }> = [];
  let aheadBytes = 0;
  const start = (slice: ContentSlice): void => {
    let data: Promise<Buffer> | undefined;
    let holds = 0;
    // Async, so a piece the index lacks rejects in its turn (readAhead throws at once); `holds` is set before it returns.
    const read = async (): Promise<Buffer> => {
      const started = reader.readAhead(slice.id);
      holds = started.holds;
      return started.data;
    };
    if (slice.length === undefined) data = read();
    else {
      const at = recent.findIndex((r) => r.id.equals(slice.id));
      const hit = at >= 0 ? recent.splice(at, 1)[0] : undefined;
      data = hit ? hit.data : read();
      recent.unshift(hit ?? { id: Buffer.from(slice.id), data });
      if (recent.length > CONTENT_CACHE_PIECES) recent.pop();
    }
    // Awaited in turn below; a failure before its turn must not count as unhandled meanwhile.
    data.catch(() => undefined);
    ahead.push({ slice, data, holds });
    aheadBytes += holds;
  };
  const next = async (): Promise<Buffer> => {
    const first = ahead.shift() as (typeof ahead)[number];
    aheadBytes -= first.holds;
    return sliceOf(await first.data, first.slice);
  };
  let total = 0;
  // A damaged list further on must not be reported before the slices ahead of it: they come out first.
  // (Only the slices' own failure waits; a piece's comes out in its turn.)
  let failure: { error: unknown } | undefined;
  const slices = contentSlices(entry, reader);
  try {
    for (;;) {
      let step: IteratorResult<ContentSlice>;
      try {
        step = await slices.next();
      } catch (error) {
        failure = { error };
        break;
      }
      if (step.done) break;
      start(step.value);
      while (ahead.length >= CONTENT_AHEAD_PIECES || (ahead.length > 1 && aheadBytes > CONTENT_AHEAD_BYTES)) {
        const bytes = await next();
        total += bytes.length;
        yield bytes;
      }
    }
  } finally {
    // The reader stopped early (or a piece failed): the lists' reading stops too.
    if (!failure) await slices.return(undefined);
  }
  while (ahead.length > 0) {
    const bytes = await next();
    total += bytes.length;
    yield bytes;
  }
  if (failure) throw failure.error;
  if (entry.extentLists && total !== entry.size)
    throw new DamagedError(`the extents of ${entry.name} add up to ${total} bytes, not its ${entry.size ?? 0}`);
}
