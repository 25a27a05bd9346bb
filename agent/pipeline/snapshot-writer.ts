import type { Readable } from 'node:stream';
import { CairnError } from '../core/errors.ts';
import { ID_BYTES } from '../core/crypto.ts';
import { PieceType } from '../core/pack.ts';
import type { PieceReader } from '../core/piece-reader.ts';
import type { Repository } from '../core/repository.ts';
import { encodeTree, type Tree, type TreeEntry } from '../core/tree.ts';
import { chunkStream, type Chunking } from './chunker.ts';
import type { PackWriter } from './pack-writer.ts';

/** Files with more pieces than this keep their piece list in `list` pieces instead of the tree. */
export const INLINE_PIECES = 1024;
/** Piece ids per `list` piece (512 KiB of ids). */
export const LIST_PIECES = 16384;

/** What a file entry records of its content. */
export type FileContent = Pick<TreeEntry, 'size' | 'content' | 'contentLists'>;

export interface SnapshotWriterOptions {
  chunking: Chunking;
  signal?: AbortSignal | undefined;
  inlinePieces?: number | undefined;
  listPieces?: number | undefined;
  /** Called after each data piece is stored, with the path it belongs to (for counts and progress). */
  onPiece?: ((rel: string, bytes: number) => void) | undefined;
}

/**
 * The snapshot-writing core that every producer shares (the files engine's
 * filesystem walk and the database engines' sink): a byte stream becomes a
 * file's pieces (with its piece list inline or in `list` pieces), a directory
 * becomes a `tree` piece. Where the bytes come from is the caller's business.
 */
export class SnapshotWriter {
  private readonly repo: Repository;
  private readonly writer: PackWriter;
  private readonly options: SnapshotWriterOptions;
  private readonly inlinePieces: number;
  private readonly listPieces: number;

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

  /** Stores a byte stream as one file's content, cut by the repository's chunking. */
  async storeStream(data: Readable | AsyncIterable<Buffer>, rel: string): Promise<FileContent> {
    return this.storeContent(chunkStream(streamReader(data), this.options.chunking), rel);
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

/** Reads every piece id of a file entry back, streaming `list` pieces one at a time. */
export async function* contentIds(entry: TreeEntry, reader: PieceReader): AsyncGenerator<Buffer> {
  if (entry.content) {
    for (const id of entry.content) yield Buffer.from(id, 'hex');
    return;
  }
  for (const listId of entry.contentLists ?? []) {
    const list = await reader.read(Buffer.from(listId, 'hex'));
    if (list.length % ID_BYTES !== 0) throw new CairnError('Cairn.Damaged', `content list ${listId} has a bad length`);
    for (let at = 0; at < list.length; at += ID_BYTES) yield list.subarray(at, at + ID_BYTES);
  }
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
