import { Semaphore, mapLimit } from '../core/concurrency.ts';
import { ID_BYTES } from '../core/crypto.ts';
import { AlreadyExistsError, CairnError } from '../core/errors.ts';
import { PieceType, type PieceTypeId } from '../core/pack.ts';
import { EXTENT_BYTES, decodeExtents, encodeExtent } from '../core/page-file.ts';
import type { PieceIndex } from '../core/piece-index.ts';
import { PieceReader } from '../core/piece-reader.ts';
import { Repository, type InitOptions, type Who } from '../core/repository.ts';
import { shortId, type Snapshot } from '../core/snapshot.ts';
import type { Storage } from '../core/storage.ts';
import { encodeTree, decodeTree, type TreeEntry } from '../core/tree.ts';
import { TreeAncestors } from '../core/tree-walk.ts';
import { DEFAULT_LEASE_MS, type Lease } from '../core/locks.ts';
import { PackWriter } from '../pipeline/pack-writer.ts';
import type { ProgressListener } from '../progress/progress.ts';
import { IdMap } from './id-map.ts';
import { selectSnapshots } from './snapshot-selector.ts';
import { failureDetails, record, underLock, operationContext, type OperationContext } from './operation.ts';

export interface CopyOptions {
  /** Snapshot refs (ids, prefixes, "latest"); empty: every snapshot (after the filters). */
  snapshots: string[];
  /** Only snapshots of these hosts (any of them); empty: every host. */
  hosts: string[];
  /** Only snapshots carrying at least one of these tags; empty: any. */
  tags: string[];
  who: Who;
  concurrency: number;
  progress: ProgressListener;
  signal?: AbortSignal | undefined;
  leaseMs?: number | undefined;
  lockWaitMs?: number | undefined;
  /**
   * Index files are written every this many uploaded pieces (and after each
   * snapshot), so a copy killed mid-way reuses what it uploaded. Default 2048.
   */
  indexEvery?: number | undefined;
}

export interface CopyReport {
  /** Snapshots the selection named. */
  selected: number;
  copied: string[];
  /** Already in the target (same snapshot id): not read, not written. */
  skipped: string[];
  /** Pieces read from the source (each at most once per run). */
  piecesRead: number;
  /** Plaintext bytes read from the source. */
  bytesRead: number;
  /** Pieces the target already had (an earlier copy, an interrupted one, or its own backups). */
  piecesReused: number;
  piecesUploaded: number;
  /** Plaintext bytes of the uploaded pieces. */
  rawBytesUploaded: number;
  /** Stored (compressed, encrypted) bytes uploaded in packs. */
  bytesUploaded: number;
  packsWritten: number;
  durationMs: number;
}

/**
 * Copies snapshots into another repository (docs/copy.md). Piece ids are
 * HMACs under each repository's own id key, so every piece is re-identified
 * with the target's key and re-encrypted under its keys, and the trees,
 * content lists and extent lists that name pieces are rewritten with the new
 * ids (page files: Translator.pageFile; a format-1 target, which cannot hold
 * them, is refused before anything is written). Manifests
 * keep their snapshot id: a snapshot already in the target is skipped, so a
 * second copy reads and writes nothing. Order per snapshot is the backup's:
 * packs, then index files, then the manifest last (create-if-absent); a copy
 * killed at any point leaves no partial snapshot, and the pieces in packs it
 * had indexed are not uploaded again by the next run.
 *
 * Locks: shared on the source (like restore) and shared on the target (like
 * backup); the target lease is checked before each manifest is committed.
 */
export async function copy(source: Repository, target: Repository, options: CopyOptions): Promise<CopyReport> {
  if (source.id === target.id) {
    throw new CairnError('Cairn.Usage', `the source and the target are the same repository (${source.id.slice(0, 8)})`, {
      hint: 'give --to-repo another repository',
    });
  }
  const sourceCtx = operationContext(source, options);
  const targetCtx = operationContext(target, options);
  return underLock(sourceCtx, 'copy', false, async () => {
    // Refused (like a copy into itself) before the target is touched: no lock, no history, no pack.
    const checked = source.pageFiles && !target.pageFiles ? await refuseFormat1Target(source, target, options) : undefined;
    return underLock(targetCtx, 'copy', false, async (targetLease) => {
      const started = Date.now();
      try {
        const report = await copyLocked(source, target, options, targetLease, targetCtx, checked);
        const summary = { ...report, copied: report.copied.length, skipped: report.skipped.length };
        await record(targetCtx, 'copy.finished', {
          from: source.storage.location,
          sourceRepository: source.id,
          ...summary,
          snapshotIds: report.copied,
        });
        await record(sourceCtx, 'copy.finished', {
          to: target.storage.location,
          targetRepository: target.id,
          ...summary,
          snapshotIds: report.copied,
        });
        return report;
      } catch (error) {
        const details = {
          from: source.storage.location,
          to: target.storage.location,
          durationMs: Date.now() - started,
          ...failureDetails(error),
        };
        await record(targetCtx, 'copy.failed', details);
        await record(sourceCtx, 'copy.failed', details);
        throw error;
      }
    });
  });
}

/** The snapshots and source index a copy into a format-1 target was checked with, reused by the copy itself. */
interface CheckedSelection {
  selected: Snapshot[];
  sourceIndex: PieceIndex;
}

/**
 * A format-1 repository cannot hold page files (core/page-file.ts): its
 * readers know tree version 1 only, and a cairn that old would refuse the
 * copied trees (or, were they let in, its prune could not count their pieces).
 * So before anything is written, every tree of the snapshots to copy is read
 * (trees only, no data), and the copy is refused at the first page file.
 */
async function refuseFormat1Target(source: Repository, target: Repository, options: CopyOptions): Promise<CheckedSelection> {
  const selected = await snapshotsToCopy(source, options);
  const present = new Set(await target.listSnapshotIds());
  const sourceIndex = await source.loadIndex(options.concurrency * 2);
  const reader = new PieceReader(source, sourceIndex);
  const clean = new Set<string>(); // trees walked whole without a page file
  const firstPageFile = async (treeId: string, ancestors: TreeAncestors, rel: string): Promise<string | undefined> => {
    if (clean.has(treeId)) return undefined;
    const here = ancestors.enter(treeId, rel);
    options.signal?.throwIfAborted();
    for (const entry of decodeTree(await reader.read(Buffer.from(treeId, 'hex')), treeId).entries) {
      const path = rel === '' ? entry.name : `${rel}/${entry.name}`;
      if (isPageFile(entry)) return path;
      const below = entry.subtree ? await firstPageFile(entry.subtree, here, path) : undefined;
      if (below !== undefined) return below;
    }
    clean.add(treeId);
    return undefined;
  };
  for (const snapshot of selected) {
    if (present.has(snapshot.id)) continue;
    const path = await firstPageFile(snapshot.tree, TreeAncestors.none, '');
    if (path !== undefined) throw format1Refusal(target, path, snapshot.id);
  }
  return { selected, sourceIndex };
}

function isPageFile(entry: TreeEntry): boolean {
  return entry.extentLists !== undefined || entry.pageHashes !== undefined;
}

function format1Refusal(target: Repository, path: string, snapshotId?: string): CairnError {
  return new CairnError(
    'Cairn.Usage',
    `${snapshotId === undefined ? 'a snapshot' : `snapshot ${shortId(snapshotId)}`} holds page files (${JSON.stringify(path)}, a database file stored page by page), which the target repository cannot hold: it is repository format ${target.config.version}, and page files need format 2; nothing was copied`,
    {
      hint: 'copy into a format-2 repository: a new one (`cairn copy --to-init` with a new --to-repo, or `cairn init`) is format 2 (docs/copy.md, "Page files")',
    },
  );
}

async function copyLocked(
  source: Repository,
  target: Repository,
  options: CopyOptions,
  lease: Lease,
  targetCtx: OperationContext,
  checked: CheckedSelection | undefined,
): Promise<CopyReport> {
  const started = Date.now();
  const selected = checked?.selected ?? (await snapshotsToCopy(source, options));
  const present = new Set(await target.listSnapshotIds());
  const todo = selected.filter((s) => !present.has(s.id));
  const skipped = selected.filter((s) => present.has(s.id)).map((s) => s.id);
  const report: CopyReport = {
    selected: selected.length,
    copied: [],
    skipped,
    piecesRead: 0,
    bytesRead: 0,
    piecesReused: 0,
    piecesUploaded: 0,
    rawBytesUploaded: 0,
    bytesUploaded: 0,
    packsWritten: 0,
    durationMs: 0,
  };
  for (const id of skipped)
    options.progress.warn(`snapshot ${shortId(id)} is already in the target; skipped`, { snapshot: id, skipped: true });
  if (todo.length > 0) {
    const [sourceIndex, targetIndex] = await Promise.all([
      checked?.sourceIndex ?? source.loadIndex(options.concurrency * 2),
      target.loadIndex(options.concurrency * 2),
    ]);
    const translator = new Translator(source, target, sourceIndex, targetIndex, options, report);
    for (const snapshot of todo) {
      options.signal?.throwIfAborted();
      const tree = await translator.tree(Buffer.from(snapshot.tree, 'hex'));
      await translator.flush();
      options.signal?.throwIfAborted();
      // Commit only with a live lease on the target: a copy stalled past its lease may have had pieces pruned there.
      await lease.confirmHeld((options.leaseMs ?? DEFAULT_LEASE_MS) / 4);
      const copied: Snapshot = { ...snapshot, tree: tree.toString('hex') };
      try {
        await target.saveSnapshot(copied);
      } catch (error) {
        if (!(error instanceof AlreadyExistsError)) throw error;
        report.skipped.push(snapshot.id); // another copy committed it meanwhile
        continue;
      }
      report.copied.push(snapshot.id);
      await record(targetCtx, 'copy.committed', {
        snapshotId: snapshot.id,
        sourceRepository: source.id,
        time: snapshot.time,
        host: snapshot.host,
        paths: snapshot.paths,
      });
      options.progress.warn(`copied snapshot ${shortId(snapshot.id)} (${snapshot.host} ${snapshot.time})`, {
        snapshot: snapshot.id,
        copied: true,
      });
    }
  }
  report.durationMs = Date.now() - started;
  return report;
}

/** The snapshots to copy, oldest first: the named ones (or all), narrowed by host and tag (any of the tags). */
export function snapshotsToCopy(
  source: Repository,
  options: Pick<CopyOptions, 'snapshots' | 'hosts' | 'tags' | 'progress'>,
): Promise<Snapshot[]> {
  return selectSnapshots(source, { refs: options.snapshots, hosts: options.hosts, anyTags: options.tags }, (u) =>
    options.progress.warn(`snapshot ${u.id} cannot be read and is not copied: ${u.error}`, { snapshot: u.id }),
  );
}

/**
 * Maps source pieces to target pieces: reads a piece from the source, ids it
 * with the target's key, and hands it to the target's pack writer (which
 * skips what the target has). Trees and lists are rewritten bottom-up, since
 * their bytes name other pieces. Each source piece is read at most once a run.
 */
class Translator {
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

/**
 * Creates the target of `copy --to-init`: its own id and master key, the
 * source's chunker parameters and chunker key (sealed under the target's
 * master key, never the source's master key), so that data the copy brings
 * and later backups straight into the target are cut alike and dedupe.
 */
export async function initCopyTarget(
  storage: Storage,
  passphrase: string,
  source: Repository,
  who: Who,
  copyChunker = true,
): Promise<Repository> {
  const options: InitOptions = {
    packSize: source.config.packSize,
    compression: source.config.compression,
    ...(copyChunker ? { chunker: source.config.chunker, chunkerSeed: source.chunkerSeed() } : {}),
  };
  return Repository.init(storage, passphrase, who, options);
}
