import type { Readable } from 'node:stream';
import { ID_BYTES } from '../core/crypto.ts';
import { PieceType } from '../core/pack.ts';
import { contentSlices } from '../core/file-content.ts';
import { MIN_PAGE_FILE, detectPageSize } from '../core/page-file.ts';
import type { PieceIndex } from '../core/piece-index.ts';
import type { PieceReader } from '../core/piece-reader.ts';
import type { Repository } from '../core/repository.ts';
import { encodeTree, type Tree, type TreeEntry } from '../core/tree.ts';
import { chunkStream, type Chunking } from './chunker.ts';
import type { PackWriter } from './pack-writer.ts';
import { storePageFile } from './page-writer.ts';

/** Files with more pieces than this keep their piece list in `list` pieces instead of the tree. */
export const INLINE_PIECES = 1024;
/** Piece ids per `list` piece (512 KiB of ids). */
export const LIST_PIECES = 16384;

/** What a file entry records of its content. */
export type FileContent = Pick<TreeEntry, 'size' | 'content' | 'contentLists' | 'pageSize' | 'extentLists' | 'pageHashes'>;

/** The content fields of an entry, to carry an unchanged file's content into a new entry. */
export function contentOf(entry: TreeEntry): FileContent {
  const { size, content, contentLists, pageSize, extentLists, pageHashes } = entry;
  return { size, content, contentLists, pageSize, extentLists, pageHashes };
}

/** The pieces an entry's content hangs from (its data or its lists), for a quick "still stored?" check. */
export function contentRoots(entry: TreeEntry): string[] {
  return [...(entry.content ?? []), ...(entry.contentLists ?? []), ...(entry.extentLists ?? []), ...(entry.pageHashes ?? [])];
}

export interface SnapshotWriterOptions {
  chunking: Chunking;
  signal?: AbortSignal | undefined;
  inlinePieces?: number | undefined;
  listPieces?: number | undefined;
  /** Called after each data piece is stored, with the path it belongs to (for counts and progress). */
  onPiece?: ((rel: string, bytes: number) => void) | undefined;
  /**
   * Set in a format-2 repository: database files are stored as page files
   * (core/page-file.ts), compared page by page with their parent's entry.
   */
  pages?: { index: PieceIndex; reader: PieceReader } | undefined;
}

/**
 * The snapshot-writing core that every producer shares (the files engine's
 * filesystem walk and the database engines' sink): a byte stream becomes a
 * file's pieces (with its piece list inline or in `list` pieces), a directory
 * becomes a `tree` piece. Where the bytes come from is the caller's business.
 */
/** Head buffers kept for reuse: one per file read at once (the walk reads a few large files side by side). */
const MAX_SPARE_HEADS = 8;

export class SnapshotWriter {
  private readonly repo: Repository;
  private readonly writer: PackWriter;
  private readonly options: SnapshotWriterOptions;
  private readonly inlinePieces: number;
  private readonly listPieces: number;
  /** Head buffers of files finished, for the next files (storeRead). */
  private readonly heads: Buffer[] = [];

  constructor(repo: Repository, writer: PackWriter, options: SnapshotWriterOptions) {
    this.repo = repo;
    this.writer = writer;
    this.options = options;
    this.inlinePieces = options.inlinePieces ?? INLINE_PIECES;
    this.listPieces = options.listPieces ?? LIST_PIECES;
  }

  get chunking(): Chunking {
    return this.options.chunking;
  }

  /** Stores a byte stream as one file's content (previous: the parent snapshot's entry at the same path). */
  async storeStream(data: Readable | AsyncIterable<Buffer>, rel: string, previous?: TreeEntry): Promise<FileContent> {
    return this.storeRead(streamReader(data), rel, previous);
  }

  /**
   * Stores what `read` yields as one file's content: a page file when the
   * repository allows them and the first MIN_PAGE_FILE bytes start with a
   * database page header (or the parent stored this path as a page file), else
   * cut by the repository's chunking.
   */
  async storeRead(read: (buffer: Buffer) => Promise<number>, rel: string, previous?: TreeEntry): Promise<FileContent> {
    const pages = this.options.pages;
    if (!pages) return this.storeContent(chunkStream(read, this.options.chunking), rel);
    // Reused from file to file: the engines stream ~1,000 files per PostgreSQL cluster through
    // here, and a fresh 256 KiB each was ~250 MiB of garbage per backup (external memory, which
    // makes V8 collect the whole heap). Nothing keeps a view of it: prefixedReader copies out of it.
    const head = this.heads.pop() ?? Buffer.allocUnsafe(MIN_PAGE_FILE);
    try {
      return await this.storeHeaded(head, read, rel, previous, pages);
    } finally {
      if (this.heads.length < MAX_SPARE_HEADS) this.heads.push(head);
    }
  }

  private async storeHeaded(
    head: Buffer,
    read: (buffer: Buffer) => Promise<number>,
    rel: string,
    previous: TreeEntry | undefined,
    pages: NonNullable<SnapshotWriterOptions['pages']>,
  ): Promise<FileContent> {
    let filled = 0;
    while (filled < head.length) {
      const n = await read(head.subarray(filled));
      if (n === 0) break;
      filled += n;
    }
    const rest = prefixedReader(head.subarray(0, filled), read);
    const pageSize = filled < MIN_PAGE_FILE ? undefined : (detectPageSize(head) ?? (previous?.extentLists ? previous.pageSize : undefined));
    if (pageSize === undefined) return this.storeContent(chunkStream(rest, this.options.chunking), rel);
    return storePageFile(
      {
        repo: this.repo,
        writer: this.writer,
        index: pages.index,
        reader: pages.reader,
        signal: this.options.signal,
        onPiece: this.options.onPiece,
      },
      rest,
      rel,
      pageSize,
      previous,
    );
  }

  /** Stores a file's pieces; the piece list goes inline, or into `list` pieces when it is long. */
  async storeContent(pieces: AsyncIterable<Buffer>, rel: string): Promise<FileContent> {
    const lists: string[] = [];
    let ids = Buffer.allocUnsafe(ID_BYTES * 4);
    let count = 0;
    let size = 0;
    for await (const piece of pieces) {
      this.options.signal?.throwIfAborted();
      const id = this.repo.pieceId(piece);
      await this.writer.add(id, PieceType.data, piece);
      size += piece.length;
      if (count === this.listPieces) {
        lists.push(await this.storeList(ids, count));
        count = 0;
      }
      if ((count + 1) * ID_BYTES > ids.length) {
        const grown = Buffer.allocUnsafe(Math.min(ids.length * 2, ID_BYTES * this.listPieces));
        ids.copy(grown, 0, 0, count * ID_BYTES);
        ids = grown;
      }
      id.copy(ids, count * ID_BYTES);
      count++;
      this.options.onPiece?.(rel, piece.length);
    }
    if (lists.length === 0 && count <= this.inlinePieces) {
      const content: string[] = [];
      for (let i = 0; i < count; i++) content.push(ids.toString('hex', i * ID_BYTES, (i + 1) * ID_BYTES));
      return { size, content };
    }
    if (count > 0) lists.push(await this.storeList(ids, count));
    return { size, contentLists: lists };
  }

  private async storeList(ids: Buffer, count: number): Promise<string> {
    const data = Buffer.from(ids.subarray(0, count * ID_BYTES));
    const id = this.repo.pieceId(data);
    await this.writer.add(id, PieceType.list, data);
    return id.toString('hex');
  }

  /** Stores one directory; its entries must already be in name order (compareEntries). */
  async storeTree(tree: Tree): Promise<string> {
    const data = encodeTree(tree);
    const id = this.repo.pieceId(data);
    await this.writer.add(id, PieceType.tree, data);
    return id.toString('hex');
  }
}

/** What a producer that hands over files by path (an engine's sink) needs of the writer. */
export type TreeStore = Pick<SnapshotWriter, 'storeStream' | 'storeTree'>;

/** Reads every data piece id of a file entry back in file order, streaming its lists (core/file-content.ts). */
export async function* contentIds(entry: TreeEntry, reader: PieceReader): AsyncGenerator<Buffer> {
  for await (const slice of contentSlices(entry, reader)) yield slice.id;
}

/** A reader that gives `head` first, then what `read` gives. */
function prefixedReader(head: Buffer, read: (buffer: Buffer) => Promise<number>): (buffer: Buffer) => Promise<number> {
  let at = 0;
  return async (buffer: Buffer): Promise<number> => {
    if (at < head.length) {
      const n = head.copy(buffer, 0, at);
      at += n;
      return n;
    }
    return read(buffer);
  };
}

/** Adapts a byte stream to the chunker's read(buffer) → bytes interface. */
export function streamReader(data: Readable | AsyncIterable<Buffer>): (buffer: Buffer) => Promise<number> {
  const iterator = (data as AsyncIterable<Buffer | string>)[Symbol.asyncIterator]();
  let pending: Buffer = Buffer.alloc(0);
  let done = false;
  return async (buffer: Buffer): Promise<number> => {
    let filled = 0;
    while (filled < buffer.length) {
      if (pending.length === 0) {
        if (done) break;
        const next = await iterator.next();
        if (next.done) {
          done = true;
          break;
        }
        pending = typeof next.value === 'string' ? Buffer.from(next.value) : next.value;
        continue;
      }
      const n = pending.copy(buffer, filled);
      pending = pending.subarray(n);
      filled += n;
      // Return what we have rather than waiting on a slow producer once something is there.
      if (filled > 0 && pending.length === 0) break;
    }
    return filled;
  };
}
