import { randomBytes } from 'node:crypto';
import { readDamage, withoutMarkedLocations } from '../core/damage.ts';
import { GcGuard } from '../core/gc-backup-guard.ts';
import { DEFAULT_LEASE_MS } from '../core/locks.ts';
import { CairnError, errorMessage } from '../core/errors.ts';
import { PieceType } from '../core/pack.ts';
import { PieceIndex } from '../core/piece-index.ts';
import { PACKS_PREFIX, idFromKey } from '../core/layout.ts';
import { PieceReader } from '../core/piece-reader.ts';
import type { Repository } from '../core/repository.ts';
import type { Snapshot } from '../core/snapshot.ts';
import { decodeTree, encodeTree, type TreeEntry } from '../core/tree.ts';
import { TreeAncestors } from '../core/tree-walk.ts';
import { PackWriter } from '../pipeline/pack-writer.ts';
import { contentSlices } from '../core/file-content.ts';
import { ExtentTotal, contentListsOf, extentProblem, pageHashCountProblem, pageHashProblem } from './page-file-checks.ts';
import { failureDetails, operationContext, record, underLock } from './operation.ts';
import type { RepairOptions } from './repair-index.ts';
import { selectSnapshotList } from './snapshot-selector.ts';

/** The tag every manifest written by `repair snapshots` carries. */
export const REPAIRED_TAG = 'repaired';

export interface RepairSnapshotsOptions extends RepairOptions {
  /** Snapshot ids, unique prefixes or "latest"; empty: every snapshot. */
  refs: string[];
  /** Also read every data piece and recompute its id (otherwise a piece counts as present when the index names it). */
  readData: boolean;
}

export interface RemovedEntry {
  path: string;
  problem: string;
}

export interface SnapshotRepair {
  id: string;
  /**
   * `intact`: nothing to remove; `repaired`: a new manifest without the damaged entries (`newId`);
   * `already-repaired`: a repaired manifest of it exists (`newId`); `unrepairable`: its root tree cannot be read.
   */
  status: 'intact' | 'repaired' | 'already-repaired' | 'unrepairable';
  newId?: string | undefined;
  removed: RemovedEntry[];
  /**
   * Page files kept whole without their page hashes: their data reads back, only the hashes
   * (which serve the next backup's comparison, never a restore) are missing, short or wrong.
   * The next backup stores such a file whole once.
   */
  hashesDropped: RemovedEntry[];
  problem?: string | undefined;
}

export interface RepairSnapshotsReport {
  dryRun: boolean;
  snapshots: SnapshotRepair[];
  /** Manifests that cannot be read at all: nothing of them can be repaired here (`cairn forget` them). */
  unreadable: Array<{ id: string; error: string }>;
}

interface TreeFix {
  /** The tree's id after the repair (the same when nothing below it changed); undefined: unreadable. */
  id: string | undefined;
  problem?: string;
  removed: RemovedEntry[];
  hashesDropped: RemovedEntry[];
}

/** What is wrong with a file entry: its data (it is left out), or only its page hashes (they are left out). */
interface FileFix {
  drop?: string;
  dropHashes?: string;
}

/**
 * `cairn repair snapshots`, after restic's: for each snapshot whose files
 * cannot all be read back — a piece the index does not hold (lost with a
 * pack, dropped by `repair packs`, or held only where a damage marker says
 * it is bad), a content, extent or page-hash list or directory that
 * cannot be read, a page file whose extents do not fit it, with `readData` a
 * piece that fails its id — writes a new manifest whose trees leave those
 * entries out (a page file whose data is whole but whose page hashes are
 * missing, miscounted or, with `readData`, wrong is kept without them), tagged `repaired` and naming
 * the snapshot it was made from in `original`. The damaged original stays
 * (listed, restorable for what it still holds) until it is forgotten: this
 * command deletes nothing, so it runs with a host's create-only rights. The
 * new trees go into new packs first, the manifests last, under the exclusive
 * lock so no garbage collection runs meanwhile. A snapshot already repaired
 * (a `repaired` manifest names it) is not repaired twice.
 */
export async function repairSnapshots(repo: Repository, options: RepairSnapshotsOptions): Promise<RepairSnapshotsReport> {
  const ctx = operationContext(repo, options);
  return underLock(ctx, 'repair-snapshots', !options.dryRun, async (lease) => {
    try {
      const { snapshots: all, unreadable } = await repo.listSnapshots(options.concurrency * 2);
      const targets = options.refs.length > 0 ? await selectSnapshotList(repo, options.refs) : all;
      let index: PieceIndex;
      try {
        index = await repo.loadIndex(options.concurrency * 2);
      } catch (error) {
        throw new CairnError('Cairn.Damaged', `the index cannot be read: ${errorMessage(error)}`, {
          hint: 'run `cairn repair index` first, then `cairn repair snapshots`',
          cause: error,
        });
      }
      // Two-phase GC (core/gc-backup-guard.ts): the generations and index files as they are now, so a
      // collection that marks the new trees (or replaces the index) before the manifests are written
      // fails the repair instead of leaving a manifest over deleted pieces. Given an empty index: a
      // doomed piece must not make a file look missing here (it may have been uploaded again elsewhere).
      const gcGuard = await GcGuard.begin(repo, new PieceIndex(), (m) => options.progress.warn(m));
      // A location a damage marker names (verify found it bad) counts as missing, like one in a pack that is gone.
      index = withoutMarkedLocations(await withoutMissingPacks(index, repo), await readDamage(repo, (m) => options.progress.warn(m))).index;
      const repairer = new SnapshotRepairer(repo, index, options);
      const results: Array<{ snapshot: Snapshot; repair: SnapshotRepair; tree?: string }> = [];
      for (const snapshot of targets) {
        options.signal?.throwIfAborted();
        const existing = all.find((s) => s.original === snapshot.id && s.tags.includes(REPAIRED_TAG));
        const fix = await repairer.fix(snapshot.tree, TreeAncestors.none, '');
        if (fix.id === undefined) {
          results.push({
            snapshot,
            repair: { id: snapshot.id, status: 'unrepairable', removed: [], hashesDropped: [], problem: fix.problem },
          });
        } else if (fix.removed.length === 0 && fix.hashesDropped.length === 0) {
          results.push({ snapshot, repair: { id: snapshot.id, status: 'intact', removed: [], hashesDropped: [] } });
        } else if (existing) {
          const { removed, hashesDropped } = fix;
          results.push({ snapshot, repair: { id: snapshot.id, status: 'already-repaired', newId: existing.id, removed, hashesDropped } });
        } else {
          const { removed, hashesDropped } = fix;
          results.push({ snapshot, repair: { id: snapshot.id, status: 'repaired', removed, hashesDropped }, tree: fix.id });
        }
      }
      if (!options.dryRun) {
        await repairer.flush();
        const committing = results.filter((r) => r.tree !== undefined);
        if (committing.length > 0) {
          const reader = new PieceReader(repo, await repo.loadIndex(options.concurrency * 2));
          for (const r of committing) await gcGuard.beforeCommit(r.tree as string, reader);
        }
        // Commit only with a live lease, asked of the storage (as a backup commits).
        await lease.confirmHeld((options.leaseMs ?? DEFAULT_LEASE_MS) / 4);
        for (const r of results) {
          if (r.tree === undefined) continue;
          const next: Snapshot = {
            ...r.snapshot,
            id: randomBytes(32).toString('hex'),
            tree: r.tree,
            tags: [...new Set([...r.snapshot.tags, REPAIRED_TAG])].sort(),
            original: r.snapshot.id,
          };
          await repo.saveSnapshot(next);
          r.repair.newId = next.id;
        }
        const repaired = results.filter((r) => r.repair.status === 'repaired');
        if (repaired.length > 0)
          await record(ctx, 'repair.snapshots', {
            repaired: repaired.map((r) => ({
              id: r.repair.id,
              newId: r.repair.newId,
              removed: r.repair.removed.length,
              hashesDropped: r.repair.hashesDropped.length,
            })),
          });
      }
      return { dryRun: options.dryRun, snapshots: results.map((r) => r.repair), unreadable };
    } catch (error) {
      if (!options.dryRun) await record(ctx, 'repair.snapshots.failed', failureDetails(error));
      throw error;
    }
  });
}

/**
 * Rewrites trees without their damaged entries. Trees shared by snapshots are
 * repaired once (memo by id); a tree is remembered only once walked, and the
 * ancestors guard stops a crafted loop, which is reported as an unreadable
 * directory. Storage failures are thrown: only damage removes an entry.
 */
class SnapshotRepairer {
  private readonly repo: Repository;
  private readonly index: PieceIndex;
  private readonly reader: PieceReader;
  private readonly writer: PackWriter;
  private readonly options: RepairSnapshotsOptions;
  private readonly memo = new Map<string, TreeFix>();
  /** Data pieces already read with readData: piece id → problem ('' when good). */
  private readonly checked = new Map<string, string>();

  constructor(repo: Repository, index: PieceIndex, options: RepairSnapshotsOptions) {
    this.repo = repo;
    this.index = index;
    this.reader = new PieceReader(repo, index);
    this.writer = new PackWriter(repo, index, { compression: repo.config.compression, concurrency: options.concurrency });
    this.options = options;
  }

  async flush(): Promise<void> {
    await this.writer.flush();
  }

  async fix(treeId: string, ancestors: TreeAncestors, rel: string): Promise<TreeFix> {
    const cached = this.memo.get(treeId);
    if (cached) return cached;
    let here: TreeAncestors;
    try {
      here = ancestors.enter(treeId, rel);
    } catch (error) {
      return { id: undefined, problem: errorMessage(error), removed: [], hashesDropped: [] };
    }
    let tree;
    try {
      const id = Buffer.from(treeId, 'hex');
      if (!this.index.has(id)) throw new CairnError('Cairn.Damaged', `tree ${treeId} is not indexed`);
      tree = decodeTree(await this.reader.read(id), treeId);
    } catch (error) {
      if (!isDamage(error)) throw error;
      const unreadable: TreeFix = {
        id: undefined,
        problem: `directory unreadable: ${errorMessage(error)}`,
        removed: [],
        hashesDropped: [],
      };
      this.memo.set(treeId, unreadable);
      return unreadable;
    }
    const entries: TreeEntry[] = [];
    const removed: RemovedEntry[] = [];
    const hashesDropped: RemovedEntry[] = [];
    for (const entry of tree.entries) {
      if (entry.type === 'dir' && entry.subtree) {
        const below = await this.fix(entry.subtree, here, rel === '' ? entry.name : `${rel}/${entry.name}`);
        if (below.id === undefined) {
          removed.push({ path: entry.name, problem: below.problem ?? 'directory unreadable' });
          continue;
        }
        for (const r of below.removed) removed.push({ path: `${entry.name}/${r.path}`, problem: r.problem });
        for (const r of below.hashesDropped) hashesDropped.push({ path: `${entry.name}/${r.path}`, problem: r.problem });
        entries.push(below.id === entry.subtree ? entry : { ...entry, subtree: below.id });
      } else if (entry.type === 'file') {
        const why = await this.fileProblem(entry);
        if (why.drop) removed.push({ path: entry.name, problem: why.drop });
        else if (why.dropHashes) {
          hashesDropped.push({ path: entry.name, problem: why.dropHashes });
          const kept: TreeEntry = { ...entry };
          delete kept.pageHashes;
          entries.push(kept);
        } else entries.push(entry);
      } else {
        entries.push(entry);
      }
    }
    let fixed: TreeFix = { id: treeId, removed, hashesDropped };
    if (removed.length > 0 || hashesDropped.length > 0) {
      const bytes = encodeTree({ ...tree, entries });
      const id = this.repo.pieceId(bytes);
      if (!this.options.dryRun) await this.writer.add(id, PieceType.tree, bytes);
      fixed = { id: id.toString('hex'), removed, hashesDropped };
    }
    this.memo.set(treeId, fixed);
    return fixed;
  }

  /**
   * What is wrong with a file entry. `drop`: its content cannot be read back
   * whole (a content or extent list or a piece missing, an extent outside its
   * piece, extents not adding up to the size, with readData a piece failing its
   * id). `dropHashes`: a page file (core/page-file.ts) whose data is whole but
   * whose page hashes are missing, of the wrong count, or (readData) do not match
   * its pages: the hashes serve only the next backup, which would wrongly point
   * at the parent's bytes for a page whose stored hash lies, so they are left
   * out and the file is kept.
   */
  private async fileProblem(entry: TreeEntry): Promise<FileFix> {
    for (const { what, ids } of contentListsOf(entry)) {
      if (what === 'page hash list') continue;
      for (const listId of ids) if (!this.index.has(Buffer.from(listId, 'hex'))) return { drop: `${what} ${listId} is missing` };
    }
    try {
      const extents = new ExtentTotal(entry);
      for await (const slice of contentSlices(entry, this.reader)) {
        const id = slice.id;
        const hex = id.toString('hex');
        if (!this.index.has(id)) return { drop: `piece ${hex} is missing` };
        const outside = extentProblem(slice, this.index);
        if (outside) return { drop: outside };
        extents.add(slice);
        if (this.options.readData) {
          let why = this.checked.get(hex);
          if (why === undefined) {
            why = await this.readPiece(id);
            this.checked.set(hex, why);
          }
          if (why) return { drop: why };
        }
      }
      const total = extents.problem();
      if (total) return { drop: total };
    } catch (error) {
      if (!isDamage(error)) throw error;
      return { drop: errorMessage(error) };
    }
    return this.pageHashFix(entry);
  }

  /** A page file's page hashes checked, once its data is known to be whole. */
  private async pageHashFix(entry: TreeEntry): Promise<FileFix> {
    if (entry.pageHashes === undefined) return {};
    const counted = pageHashCountProblem(entry, this.index);
    if (counted) return { dropHashes: counted };
    if (!this.options.readData) return {};
    try {
      const mismatch = await pageHashProblem(this.repo, entry, this.reader);
      return mismatch ? { dropHashes: mismatch } : {};
    } catch (error) {
      if (!isDamage(error)) throw error;
      return { dropHashes: errorMessage(error) };
    }
  }

  private async readPiece(id: Buffer): Promise<string> {
    try {
      const bytes = await this.reader.read(id);
      return this.repo.pieceId(bytes).equals(id) ? '' : `piece ${id.toString('hex')} does not match its id`;
    } catch (error) {
      if (!isDamage(error)) throw error;
      return errorMessage(error);
    }
  }
}

/**
 * The index without the locations in packs that are gone: a piece whose every
 * pack is missing is missing too, found without reading any data (a pack lost
 * before `repair packs` ran).
 */
async function withoutMissingPacks(index: PieceIndex, repo: Repository): Promise<PieceIndex> {
  const present = new Set<string>();
  for await (const object of repo.storage.list(PACKS_PREFIX)) {
    const id = idFromKey(object.key, PACKS_PREFIX);
    if (id) present.add(id);
  }
  if (index.packs.every((packId) => present.has(packId))) return index;
  const kept = new PieceIndex();
  for (const entry of index.entries()) if (present.has(entry.packId)) kept.add(entry);
  return kept;
}

function isDamage(error: unknown): boolean {
  return error instanceof CairnError && (error.code === 'Cairn.Damaged' || error.code === 'Cairn.NotFound');
}
