import { AlreadyExistsError, CairnError } from '../core/errors.ts';
import type { PieceIndex } from '../core/piece-index.ts';
import { PieceReader } from '../core/piece-reader.ts';
import { Repository, type InitOptions, type Who } from '../core/repository.ts';
import { shortId, type Snapshot } from '../core/snapshot.ts';
import type { Storage } from '../core/storage.ts';
import { decodeTree } from '../core/tree.ts';
import { TreeAncestors } from '../core/tree-walk.ts';
import { DEFAULT_LEASE_MS, type Lease } from '../core/locks.ts';
import type { ProgressListener } from '../progress/progress.ts';
import { Translator, format1Refusal, isPageFile } from './copy-translator.ts';
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
