// The checks verify and repair make on a page file (core/page-file.ts): its lists,
// its extents against the pieces they name, and with data its page hashes.
import { DamagedError } from '../core/errors.ts';
import { contentBytes, type ContentSlice } from '../core/file-content.ts';
import { PAGE_HASH_BYTES, checkHashList } from '../core/page-file.ts';
import type { PieceIndex } from '../core/piece-index.ts';
import type { PieceReader } from '../core/piece-reader.ts';
import type { Repository } from '../core/repository.ts';
import type { TreeEntry } from '../core/tree.ts';

/**
 * The `list` pieces a file entry names, by kind: content lists (ids of whole
 * pieces), and for a page file (core/page-file.ts) its extent lists and page-hash
 * lists. A reader that checks that a file's lists exist checks every kind.
 */
export function contentListsOf(entry: TreeEntry): Array<{ what: string; ids: readonly string[] }> {
  return [
    { what: 'content list', ids: entry.contentLists ?? [] },
    { what: 'extent list', ids: entry.extentLists ?? [] },
    { what: 'page hash list', ids: entry.pageHashes ?? [] },
  ];
}

/**
 * A page file's page hashes, counted without reading them (the index knows each
 * list's length): ceil(size / pageSize) of 16 bytes each, and a page size to go
 * with them. Undefined when right (or the entry has none).
 */
export function pageHashCountProblem(entry: TreeEntry, index: PieceIndex): string | undefined {
  if (!entry.pageHashes) return undefined;
  if (!entry.extentLists) return 'page hashes on a file that is not a page file (no extent lists)';
  if (entry.pageSize === undefined) return 'page hashes without a page size';
  let bytes = 0;
  for (const listId of entry.pageHashes) {
    const length = index.get(Buffer.from(listId, 'hex'))?.length;
    if (length === undefined) return `page hash list ${listId} is missing`;
    if (length === 0 || length % PAGE_HASH_BYTES !== 0) return `page hash list ${listId} has a bad length (${length} bytes)`;
    bytes += length;
  }
  const pages = Math.ceil((entry.size ?? 0) / entry.pageSize);
  const hashes = bytes / PAGE_HASH_BYTES;
  return hashes === pages
    ? undefined
    : `the page hash lists hold ${hashes} hashes for ${pages} pages (${entry.size ?? 0} bytes of ${entry.pageSize}-byte pages)`;
}

/** An extent that reaches past the piece it names (whose length the index knows); undefined when inside or a whole piece. */
export function extentProblem(slice: ContentSlice, index: PieceIndex): string | undefined {
  if (slice.length === undefined) return undefined;
  const length = index.get(slice.id)?.length;
  if (length === undefined || slice.offset + slice.length <= length) return undefined;
  return `an extent names bytes ${slice.offset}-${slice.offset + slice.length} of piece ${slice.id.toString('hex')}, which has ${length}`;
}

/** The sum of a page file's extents, which must be its size. */
export class ExtentTotal {
  private readonly entry: TreeEntry;
  private total = 0;

  constructor(entry: TreeEntry) {
    this.entry = entry;
  }

  add(slice: ContentSlice): void {
    if (slice.length !== undefined) this.total += slice.length;
  }

  problem(): string | undefined {
    if (!this.entry.extentLists || this.total === (this.entry.size ?? 0)) return undefined;
    return `the extents add up to ${this.total} bytes, not the file's ${this.entry.size ?? 0}`;
  }
}

/**
 * With data: a page file's bytes (its slices in order; core/file-content.ts checks
 * every extent against its piece and their sum against the size) cut into pages
 * of `pageSize`, each re-hashed (the first 16 bytes of its keyed id) and compared
 * with the stored page hash at its index. A stored hash that lies would make the
 * next backup point at the parent's bytes for a page that changed, so a mismatch
 * is damage. Undefined when every page matches (or the file has no page hashes).
 */
export async function pageHashProblem(repo: Repository, entry: TreeEntry, reader: PieceReader): Promise<string | undefined> {
  const pageSize = entry.pageSize;
  if (!entry.extentLists || !entry.pageHashes || pageSize === undefined) return undefined;
  const stored = storedPageHashes(entry.pageHashes, reader);
  const page = Buffer.allocUnsafe(pageSize);
  let filled = 0;
  let pageNo = 0;
  let mismatches = 0;
  let first = '';
  const compare = async (bytes: Buffer): Promise<void> => {
    const next = await stored.next();
    if (next.done) throw new DamagedError(`the page hash lists end before page ${pageNo}`);
    if (!repo.pieceId(bytes).subarray(0, PAGE_HASH_BYTES).equals(next.value)) {
      if (mismatches++ === 0) first = `page ${pageNo} (bytes ${pageNo * pageSize}-${pageNo * pageSize + bytes.length})`;
    }
    pageNo++;
  };
  try {
    for await (const bytes of contentBytes(entry, reader)) {
      for (let at = 0; at < bytes.length;) {
        const n = bytes.copy(page, filled, at);
        filled += n;
        at += n;
        if (filled === pageSize) {
          await compare(page);
          filled = 0;
        }
      }
    }
    if (filled > 0) await compare(page.subarray(0, filled));
    if (!(await stored.next()).done) throw new DamagedError(`the page hash lists hold more hashes than the file's ${pageNo} pages`);
  } finally {
    await stored.return(undefined);
  }
  if (mismatches === 0) return undefined;
  return `${mismatches} of ${pageNo} pages do not match their stored page hash, the first ${first}`;
}

async function* storedPageHashes(lists: readonly string[], reader: PieceReader): AsyncGenerator<Buffer> {
  for (const listId of lists) {
    const list = await reader.read(Buffer.from(listId, 'hex'));
    checkHashList(list, listId);
    for (let at = 0; at < list.length; at += PAGE_HASH_BYTES) yield list.subarray(at, at + PAGE_HASH_BYTES);
  }
}
