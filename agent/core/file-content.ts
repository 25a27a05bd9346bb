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

/**
 * The file's bytes in order, one slice at a time. A page file's pieces are kept
 * in a small cache of recent pieces (extents interleave a parent's piece with
 * runs of changed pages), and its slices must add up to its size.
 */
export async function* contentBytes(entry: TreeEntry, reader: PieceReader): AsyncGenerator<Buffer> {
  const recent: Array<{ id: Buffer; data: Buffer }> = [];
  let total = 0;
  for await (const slice of contentSlices(entry, reader)) {
    let piece: Buffer;
    if (slice.length === undefined) piece = await reader.read(slice.id);
    else {
      // Least recently used goes first, as the writer's RestoreReadCost assumes when it bounds re-reads.
      const at = recent.findIndex((r) => r.id.equals(slice.id));
      const hit = at >= 0 ? recent.splice(at, 1)[0] : undefined;
      piece = hit ? hit.data : await reader.read(slice.id);
      recent.unshift(hit ?? { id: Buffer.from(slice.id), data: piece });
      if (recent.length > CONTENT_CACHE_PIECES) recent.pop();
    }
    const bytes = sliceOf(piece, slice);
    total += bytes.length;
    yield bytes;
  }
  if (entry.extentLists && total !== entry.size)
    throw new DamagedError(`the extents of ${entry.name} add up to ${total} bytes, not its ${entry.size ?? 0}`);
}
