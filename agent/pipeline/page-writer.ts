import { ID_BYTES } from '../core/crypto.ts';
import { CONTENT_CACHE_PIECES } from '../core/file-content.ts';
import { PieceType } from '../core/pack.ts';
import {
  EXTENT_BYTES,
  EXTENTS_PER_LIST,
  HASHES_PER_LIST,
  MAX_READ_AMPLIFICATION,
  PAGE_HASH_BYTES,
  RUN_BYTES,
  checkHashList,
  decodeExtents,
  encodeExtent,
  type Extent,
} from '../core/page-file.ts';
import type { PieceIndex } from '../core/piece-index.ts';
import type { PieceReader } from '../core/piece-reader.ts';
import type { Repository } from '../core/repository.ts';
import type { TreeEntry } from '../core/tree.ts';
import type { PackWriter } from './pack-writer.ts';

/** What a page file's entry records of its content. */
export type PageContent = Required<Pick<TreeEntry, 'size' | 'pageSize' | 'extentLists' | 'pageHashes'>>;

export interface PageWriterDeps {
  repo: Repository;
  writer: PackWriter;
  index: PieceIndex;
  /** Reads the parent's extent and page-hash lists (never its data). */
  reader: PieceReader;
  signal?: AbortSignal | undefined;
  onPiece?: ((rel: string, bytes: number) => void) | undefined;
}

/** Where the parent snapshot kept one page, and its hash. */
interface ParentPage {
  hash: Buffer;
  id: Buffer;
  offset: number;
  length: number;
}

/**
 * Stores one page file (core/page-file.ts). Pages are read in order and hashed;
 * a page whose hash equals the parent's page at the same index, and whose bytes
 * the parent kept in one piece the repository still holds, is pointed at there;
 * every other page joins the current run of changed pages, stored as one piece
 * when the run ends or reaches RUN_BYTES. Memory is a run, one list of each kind
 * and the parent's lists one at a time: it does not grow with the file.
 *
 * Read amplification is bounded as the file is read: the writer counts what a
 * restore would read (restoreReadCost, the same model as the restorer's cache of
 * recent pieces), and once that passes MAX_READ_AMPLIFICATION times the bytes
 * so far (plus the cache's worth), it stops pointing at the parent and stores
 * the rest of the file as fresh runs. A stream needs no second read, and a
 * restore stays fast however long the chain of incrementals behind a snapshot.
 * A parent that passed the bound itself is not pointed at (passesReadBound).
 */
export async function storePageFile(
  deps: PageWriterDeps,
  read: (buffer: Buffer) => Promise<number>,
  rel: string,
  pageSize: number,
  previous: TreeEntry | undefined,
): Promise<PageContent> {
  const candidate = previous?.pageSize === pageSize && previous.extentLists && previous.pageHashes ? previous : undefined;
  const parent = candidate && !(await passesReadBound(candidate, deps, pageSize)) ? candidate : undefined;
  const out = new ListOutput(deps);
  let parentPages = parent ? parentPagesOf(parent, deps.reader, pageSize) : undefined;
  const cost = new RestoreReadCost();
  // The current run of changed pages: while it lies whole in the block just read, it is only its place
  // there (runStart; its pages follow one another, since an unchanged page ends the run); it is copied
  // into `run` before the block is read over. A first backup (every page changed) copies no page.
  const run = Buffer.allocUnsafe(Math.max(RUN_BYTES, pageSize));
  let runStart = -1;
  let runLength = 0;
  let size = 0;

  // Read in blocks of whole pages (one system call per block, not per page), then page by page.
  const block = Buffer.allocUnsafe(Math.max(1, Math.floor(READ_BYTES / pageSize)) * pageSize);
  const flushRun = async (): Promise<void> => {
    if (runLength === 0) return;
    const data = runStart >= 0 ? block.subarray(runStart, runStart + runLength) : run.subarray(0, runLength);
    const id = deps.repo.pieceId(data);
    // The writer copies the bytes before its first await (PackWriter.add): `run` and the block are free again once it returns.
    await deps.writer.add(id, PieceType.data, data);
    cost.visit(id, runLength);
    await out.extent({ id, offset: 0, length: runLength });
    runStart = -1;
    runLength = 0;
  };
  /** Moves a run that lies in the block into `run`. */
  const detachRun = (): void => {
    if (runStart < 0) return;
    block.copy(run, 0, runStart, runStart + runLength);
    runStart = -1;
  };

  for (let filled = block.length; filled === block.length;) {
    deps.signal?.throwIfAborted();
    detachRun();
    filled = await readFull(read, block);
    for (let at = 0; at < filled; at += pageSize) {
      const bytes = block.subarray(at, Math.min(at + pageSize, filled));
      const length = bytes.length;
      const hash = deps.repo.pieceId(bytes).subarray(0, PAGE_HASH_BYTES);
      await out.hash(hash);
      const was = parentPages ? await nextOrUndefined(parentPages) : undefined;
      const stored = was && was.length === length && was.hash.equals(hash) ? deps.index.get(was.id) : undefined;
      if (was && stored) {
        await flushRun();
        cost.visit(was.id, stored.length);
        await out.extent({ id: was.id, offset: was.offset, length });
      } else {
        if (runLength === 0) runStart = at;
        else if (runStart < 0) bytes.copy(run, runLength);
        runLength += length;
        if (runLength + pageSize > run.length) await flushRun();
      }
      size += length;
      if (parentPages && overReadBound(cost, size)) {
        // Too fragmented: the rest of the file is stored afresh.
        await parentPages.return(undefined);
        parentPages = undefined;
      }
    }
    if (filled > 0) deps.onPiece?.(rel, filled);
  }
  await flushRun();
  if (parentPages) await parentPages.return(undefined);
  return { size, pageSize, ...(await out.finish()) };
}

function overReadBound(cost: RestoreReadCost, bytes: number): boolean {
  return cost.bytes > MAX_READ_AMPLIFICATION * bytes + RESTORE_CACHE_PIECES * RUN_BYTES;
}

/**
 * Whether a restore of the parent passes the read bound somewhere along the file,
 * counted page by page as the writer counts (the first page of each extent costs
 * its piece unless cached; the rest of the extent is a hit). A parent that passed
 * it (it tripped the bound itself, or was crafted or copied so) is not pointed at:
 * its early pages would trip the bound again at about the same place at every
 * backup and store the rest of the file afresh each time. Storing the file whole
 * once starts the chain over. Reads the parent's extent lists only.
 */
async function passesReadBound(parent: TreeEntry, deps: PageWriterDeps, pageSize: number): Promise<boolean> {
  const cost = new RestoreReadCost();
  let size = 0;
  for await (const extent of parentExtents(parent, deps.reader)) {
    deps.signal?.throwIfAborted();
    cost.visit(extent.id, deps.index.get(extent.id)?.length ?? extent.length);
    if (overReadBound(cost, size + Math.min(pageSize, extent.length))) return true;
    size += extent.length;
  }
  return false;
}

/** Bytes read from the file at a time (whole pages). */
const READ_BYTES = 1 << 20;

/** Pieces a restore keeps of one page file, most recent first (core/file-content.ts). */
const RESTORE_CACHE_PIECES = CONTENT_CACHE_PIECES;

/**
 * What a restore of a page file reads: a piece costs its length each time it is
 * needed and not among the RESTORE_CACHE_PIECES most recently read.
 */
export class RestoreReadCost {
  bytes = 0;
  private readonly recent: Buffer[] = [];

  visit(id: Buffer, length: number): void {
    const at = this.recent.findIndex((r) => r.equals(id));
    if (at >= 0) {
      if (at > 0) this.recent.unshift(...this.recent.splice(at, 1));
      return;
    }
    this.bytes += length;
    this.recent.unshift(Buffer.from(id));
    if (this.recent.length > RESTORE_CACHE_PIECES) this.recent.pop();
  }
}

async function readFull(read: (buffer: Buffer) => Promise<number>, into: Buffer): Promise<number> {
  let filled = 0;
  while (filled < into.length) {
    const n = await read(into.subarray(filled));
    if (n === 0) break;
    filled += n;
  }
  return filled;
}

async function nextOrUndefined<T>(it: AsyncGenerator<T>): Promise<T | undefined> {
  const next = await it.next();
  return next.done ? undefined : next.value;
}

/**
 * The parent's pages in order: each page's hash beside where its bytes lie. A
 * page the parent's extents do not hold in one piece (extents cut inside it) has
 * no location and counts as changed; the hashes and extents are read one list at
 * a time, so a big file's parent costs no more memory than a small one's.
 */
async function* parentPagesOf(parent: TreeEntry, reader: PieceReader, pageSize: number): AsyncGenerator<ParentPage> {
  const extents = parentExtents(parent, reader);
  let extent: Extent | undefined;
  let extentStart = 0;
  let fileOffset = 0;
  for (const listId of parent.pageHashes ?? []) {
    const list = await reader.read(Buffer.from(listId, 'hex'));
    checkHashList(list, listId);
    for (let at = 0; at < list.length; at += PAGE_HASH_BYTES) {
      while (extent === undefined || fileOffset >= extentStart + extent.length) {
        if (extent) extentStart += extent.length;
        const next = await extents.next();
        if (next.done) return;
        extent = next.value;
      }
      const inExtent = fileOffset - extentStart;
      const length = Math.min(pageSize, extent.length - inExtent);
      yield { hash: list.subarray(at, at + PAGE_HASH_BYTES), id: extent.id, offset: extent.offset + inExtent, length };
      fileOffset += pageSize;
    }
  }
}

async function* parentExtents(parent: TreeEntry, reader: PieceReader): AsyncGenerator<Extent> {
  for (const listId of parent.extentLists ?? []) {
    const list = await reader.read(Buffer.from(listId, 'hex'));
    for (const extent of decodeExtents(list, listId)) yield { ...extent, id: Buffer.from(extent.id) };
  }
}

/** Extents (merged where one continues the last) and page hashes, written out as `list` pieces as they fill. */
class ListOutput {
  private readonly deps: PageWriterDeps;
  private readonly extents = Buffer.allocUnsafe(EXTENTS_PER_LIST * EXTENT_BYTES);
  private extentCount = 0;
  private pending: Extent | undefined;
  private readonly hashes = Buffer.allocUnsafe(HASHES_PER_LIST * PAGE_HASH_BYTES);
  private hashCount = 0;
  private readonly extentLists: string[] = [];
  private readonly hashLists: string[] = [];

  constructor(deps: PageWriterDeps) {
    this.deps = deps;
  }

  async extent(extent: Extent): Promise<void> {
    const last = this.pending;
    if (last && last.id.equals(extent.id) && last.offset + last.length === extent.offset) {
      last.length += extent.length;
      return;
    }
    if (last) await this.writeExtent(last);
    this.pending = { id: Buffer.from(extent.id), offset: extent.offset, length: extent.length };
  }

  async hash(hash: Buffer): Promise<void> {
    hash.copy(this.hashes, this.hashCount * PAGE_HASH_BYTES);
    if (++this.hashCount === HASHES_PER_LIST) await this.flushHashes();
  }

  async finish(): Promise<Pick<PageContent, 'extentLists' | 'pageHashes'>> {
    if (this.pending) await this.writeExtent(this.pending);
    this.pending = undefined;
    if (this.extentCount > 0) this.extentLists.push(await this.storeList(this.extents.subarray(0, this.extentCount * EXTENT_BYTES)));
    await this.flushHashes();
    return { extentLists: this.extentLists, pageHashes: this.hashLists };
  }

  private async writeExtent(extent: Extent): Promise<void> {
    encodeExtent(extent, this.extents, this.extentCount * EXTENT_BYTES);
    if (++this.extentCount === EXTENTS_PER_LIST) {
      this.extentLists.push(await this.storeList(this.extents));
      this.extentCount = 0;
    }
  }

  private async flushHashes(): Promise<void> {
    if (this.hashCount === 0) return;
    this.hashLists.push(await this.storeList(this.hashes.subarray(0, this.hashCount * PAGE_HASH_BYTES)));
    this.hashCount = 0;
  }

  private async storeList(bytes: Buffer): Promise<string> {
    const data = Buffer.from(bytes);
    const id = this.deps.repo.pieceId(data);
    await this.deps.writer.add(id, PieceType.list, data);
    return id.toString('hex');
  }
}

/** Bytes of a page file's extent and hash records, for tests and sizing. */
export const RECORD_BYTES = { extent: EXTENT_BYTES, hash: PAGE_HASH_BYTES, id: ID_BYTES };
