// The piece-by-piece half of `cairn copy` (commands/copy.ts): reading source
// pieces, re-identifying them under the target's key, rewriting the trees and
// lists that name them, and page files' extent and hash lists.
import { Semaphore, mapLimit } from '../core/concurrency.ts';
import { ID_BYTES } from '../core/crypto.ts';
import { CairnError } from '../core/errors.ts';
import { PieceType, type PieceTypeId } from '../core/pack.ts';
import { EXTENT_BYTES, decodeExtents, encodeExtent } from '../core/page-file.ts';
import type { PieceIndex } from '../core/piece-index.ts';
import { PieceReader } from '../core/piece-reader.ts';
import type { Repository } from '../core/repository.ts';
import { shortId } from '../core/snapshot.ts';
import { encodeTree, decodeTree, type TreeEntry } from '../core/tree.ts';
import { TreeAncestors } from '../core/tree-walk.ts';
import { PackWriter } from '../pipeline/pack-writer.ts';
import type { CopyOptions, CopyReport } from './copy.ts';
import { IdMap } from './id-map.ts';

export function isPageFile(entry: TreeEntry): boolean {
  return entry.extentLists !== undefined || entry.pageHashes !== undefined;
}

export function format1Refusal(target: Repository, path: string, snapshotId?: string): CairnError {
  return new CairnError(
    'Cairn.Usage',
    `${snapshotId === undefined ? 'a snapshot' : `snapshot ${shortId(snapshotId)}`} holds page files (${JSON.stringify(path)}, a database file stored page by page), which the target repository cannot hold: it is repository format ${target.config.version}, and page files need format 2; nothing was copied`,
    {
      hint: 'copy into a format-2 repository: a new one (`cairn copy --to-init` with a new --to-repo, or `cairn init`) is format 2 (docs/copy.md, "Page files")',
    },
  );
}

/**
 * Maps source pieces to target pieces: reads a piece from the source, ids it
 * with the target's key, and hands it to the target's pack writer (which
 * skips what the target has). Trees and lists are rewritten bottom-up, since
 * their bytes name other pieces. Each source piece is read at most once a run.
 */
export class Translator {
  private readonly source: Repository;
  private readonly target: Repository;
  private readonly reader: PieceReader;
  private readonly writer: PackWriter;
  private readonly options: CopyOptions;
  private readonly report: CopyReport;
  private readonly memo = new IdMap();
  /** Whether the two repositories' id keys give the same ids (then page hashes carry over as they are). */
  private readonly sameIds: boolean;
  /** The pack writer takes one piece at a time; reads and hashing run in parallel. */
  private readonly adding = new Semaphore(1);
  private files = 0;
  private lastReport = 0;

  constructor(
    source: Repository,
    target: Repository,
    sourceIndex: PieceIndex,
    targetIndex: PieceIndex,
    options: CopyOptions,
    report: CopyReport,
  ) {
    this.source = source;
    this.target = target;
    this.options = options;
    this.report = report;
    this.reader = new PieceReader(source, sourceIndex, { cacheFrames: Math.max(8, options.concurrency * 2) });
    const probe = Buffer.from('cairn copy: do page hashes carry over?', 'utf8');
    this.sameIds = source.pieceId(probe).equals(target.pieceId(probe));
    this.writer = new PackWriter(target, targetIndex, {
      compression: target.config.compression,
      concurrency: options.concurrency,
      indexEvery: options.indexEvery ?? 2048,
    });
  }

  async flush(): Promise<void> {
    await this.writer.flush();
    this.syncStats();
  }

  /**
   * The target id of a source tree, after every piece below it is in the target.
   * A tree is remembered only once copied, so `ancestors` stops a crafted loop
   * (or absurd depth) with Cairn.Damaged before anything of the snapshot is committed.
   */
  async tree(sourceId: Buffer, ancestors = TreeAncestors.none, rel = ''): Promise<Buffer> {
    const known = this.memo.get(sourceId);
    if (known) return known;
    const here = ancestors.enter(sourceId.toString('hex'), rel);
    this.options.signal?.throwIfAborted();
    const tree = decodeTree(await this.read(sourceId), sourceId.toString('hex'));
    const entries: TreeEntry[] = [];
    for (const entry of tree.entries) {
      const out: TreeEntry = { ...entry };
      if (entry.subtree)
        out.subtree = (await this.tree(Buffer.from(entry.subtree, 'hex'), here, rel === '' ? entry.name : `${rel}/${entry.name}`)).toString(
          'hex',
        );
      if (entry.content)
        out.content = (await this.pieces(entry.content.map((id) => Buffer.from(id, 'hex')))).map((id) => id.toString('hex'));
      if (entry.contentLists) {
        const lists: string[] = [];
        for (const listId of entry.contentLists) lists.push((await this.list(Buffer.from(listId, 'hex'))).toString('hex'));
        out.contentLists = lists;
      }
      if (isPageFile(entry)) await this.pageFile(entry, out, rel === '' ? entry.name : `${rel}/${entry.name}`);
      if (entry.type === 'file') this.files++;
      entries.push(out);
      this.progress();
    }
    return this.store(sourceId, PieceType.tree, encodeTree({ version: tree.version, entries }));
  }

  /**
   * A page file (core/page-file.ts): its extent lists rewritten with the
   * target's ids of the pieces they name (offsets and lengths stay: pieces are
   * copied whole). Page hashes are keyed hashes under the source's id key, which
   * the target's next backup could not match: unless both keys give the same
   * ids, they are left out (`pageHashes` is optional), and the first backup into
   * the target stores that file whole once, then page by page again.
   */
  private async pageFile(entry: TreeEntry, out: TreeEntry, path: string): Promise<void> {
    // Checked before the copy began (refuseFormat1Target); met here only in a format-1 source's crafted tree.
    if (!this.target.pageFiles) throw format1Refusal(this.target, path);
    const lists: string[] = [];
    for (const listId of entry.extentLists ?? []) lists.push((await this.extentList(Buffer.from(listId, 'hex'))).toString('hex'));
    if (lists.length > 0) out.extentLists = lists;
    if (entry.pageHashes && this.sameIds) {
      const hashes: string[] = [];
      for (const listId of entry.pageHashes) {
        const id = Buffer.from(listId, 'hex');
        hashes.push((this.memo.get(id) ?? (await this.store(id, PieceType.list, await this.read(id)))).toString('hex'));
      }
      out.pageHashes = hashes;
    } else {
      delete out.pageHashes;
    }
  }

  /** A `list` piece of 40-byte extents, rewritten with the target's ids (each distinct piece read once). */
  private async extentList(sourceId: Buffer): Promise<Buffer> {
    const known = this.memo.get(sourceId);
    if (known) return known;
    const data = await this.read(sourceId);
    const extents = [...decodeExtents(data, sourceId.toString('hex'))];
    const distinct = new Map<string, Buffer>();
    for (const extent of extents) distinct.set(extent.id.toString('hex'), Buffer.from(extent.id));
    const sourceIds = [...distinct.values()];
    const targetIds = new Map<string, Buffer>();
    (await this.pieces(sourceIds)).forEach((id, i) => targetIds.set((sourceIds[i] as Buffer).toString('hex'), id));
    const rewritten = Buffer.allocUnsafe(extents.length * EXTENT_BYTES);
    extents.forEach((extent, i) => {
      const id = targetIds.get(extent.id.toString('hex')) as Buffer;
      encodeExtent({ id, offset: extent.offset, length: extent.length }, rewritten, i * EXTENT_BYTES);
    });
    return this.store(sourceId, PieceType.list, rewritten);
  }

  /** A `list` piece: a run of 32-byte data piece ids, rewritten with the target's ids. */
  private async list(sourceId: Buffer): Promise<Buffer> {
    const known = this.memo.get(sourceId);
    if (known) return known;
    const data = await this.read(sourceId);
    const ids: Buffer[] = [];
    for (let at = 0; at + ID_BYTES <= data.length; at += ID_BYTES) ids.push(Buffer.from(data.subarray(at, at + ID_BYTES)));
    const mapped = await this.pieces(ids);
    return this.store(sourceId, PieceType.list, Buffer.concat(mapped));
  }

  /** Data pieces, in order; read (and uploaded) `concurrency` at a time. */
  private async pieces(ids: Buffer[]): Promise<Buffer[]> {
    const out = new Array<Buffer>(ids.length);
    await mapLimit(ids.keys(), Math.max(1, this.options.concurrency), async (i) => {
      this.options.signal?.throwIfAborted();
      const id = ids[i] as Buffer;
      out[i] = this.memo.get(id) ?? (await this.store(id, PieceType.data, await this.read(id)));
      this.progress();
    });
    return out;
  }

  private async read(sourceId: Buffer): Promise<Buffer> {
    const data = await this.reader.read(sourceId);
    this.report.piecesRead++;
    this.report.bytesRead += data.length;
    return data;
  }

  private async store(sourceId: Buffer, type: PieceTypeId, data: Buffer): Promise<Buffer> {
    const id = this.target.pieceId(data);
    await this.adding.acquire();
    try {
      if (!(await this.writer.add(id, type, data))) this.report.piecesReused++;
    } finally {
      this.adding.release();
    }
    this.memo.set(sourceId, id);
    return id;
  }

  private syncStats(): void {
    const s = this.writer.stats;
    this.report.piecesUploaded = s.piecesAdded;
    this.report.rawBytesUploaded = s.rawBytesAdded;
    this.report.bytesUploaded = s.bytesAdded;
    this.report.packsWritten = s.packsWritten;
  }

  private progress(): void {
    const now = Date.now();
    if (now - this.lastReport < 200) return;
    this.lastReport = now;
    this.syncStats();
    this.options.progress.progress({
      phase: 'copy',
      files: this.files,
      bytes: this.report.bytesRead,
      bytesAdded: this.report.bytesUploaded,
    });
  }
}
