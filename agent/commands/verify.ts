import { randomInt } from 'node:crypto';
import { mapLimit } from '../core/concurrency.ts';
import { readDamage, writeDamageMarkers, type FoundDamage, type KnownDamage } from '../core/damage.ts';
import { CairnError, NotFoundError, errorMessage } from '../core/errors.ts';
import { contentSlices } from '../core/file-content.ts';
import { LogArchive, fileObjectKey, type ArchivedLog } from '../core/log-archive.ts';
import { PACKS_PREFIX, idFromKey, packKey } from '../core/layout.ts';
import { packDataKey, packSaltFromHeader, type IndexEntry } from '../core/pack.ts';
import type { PieceIndex } from '../core/piece-index.ts';
import { PieceReader, frameProblem } from '../core/piece-reader.ts';
import type { Repository, Who } from '../core/repository.ts';
import { record, underLock, operationContext } from './operation.ts';
import { ExtentTotal, contentListsOf, extentProblem, pageHashCountProblem, pageHashProblem } from './page-file-checks.ts';
import { decodeTree, type TreeEntry } from '../core/tree.ts';
import { TreeAncestors } from '../core/tree-walk.ts';
import { TOOL } from '../core/version.ts';
import type { ProgressListener } from '../progress/progress.ts';

export interface VerifyOptions {
  /** Fraction of packs whose data is read and checked: 0 (structure only) to 1 (--read-data). */
  readData: number;
  concurrency: number;
  progress: ProgressListener;
  who: Who;
  leaseMs?: number | undefined;
  lockWaitMs?: number | undefined;
  /** --no-lock: no lease, no history event (a repository this host cannot write). */
  noLock?: boolean | undefined;
  /** Cancellation: reads that fail because of it are not damage, and nothing is recorded as verified. */
  signal?: AbortSignal | undefined;
  /**
   * Write damage markers (core/damage.ts) for damage found that no marker names yet: `cairn verify`
   * and the orchestrated verify do; `check` does not.
   */
  markDamage?: boolean | undefined;
}

export interface VerifyReport {
  ok: boolean;
  snapshots: number;
  packs: number;
  packsRead: number;
  piecesChecked: number;
  bytesRead: number;
  problems: Array<{ object: string; problem: string }>;
  affected: Array<{ snapshot: string; path: string; problem: string }>;
  /** Damaged locations a marker names whose pieces are also stored elsewhere, intact: known, no longer a problem. */
  known: Array<{ object: string; problem: string }>;
  /** The damage markers this verify wrote (`damage/<id>`). */
  markers: string[];
}

/**
 * Structure: every index file and manifest opens, every pack the index names
 * exists and is long enough, every tree reads and every piece a snapshot uses
 * is indexed; a page file's extents lie inside their pieces and add up to its
 * size, and its page-hash lists hold one hash per page (from the index's piece
 * lengths). With data: packs are read whole, each frame authenticated and
 * each piece's keyed hash recomputed, and each page file's pages (a share of
 * the page files with a subset) re-hashed against its stored page hashes.
 * Damage is mapped back to the snapshots
 * and files it affects. A piece is damaged only when every location the index
 * gives it is; what is definitely damaged (missing, truncated, failing
 * authentication — not a storage outage) is recorded in damage markers.
 */
export async function verify(repo: Repository, options: VerifyOptions): Promise<VerifyReport> {
  const ctx = operationContext(repo, options);
  return underLock(ctx, 'verify', false, async () => {
    const known = await readDamage(repo, (message) => options.progress.warn(message));
    const { report, found } = await verifyLocked(repo, options, known);
    options.signal?.throwIfAborted();
    if (options.markDamage) {
      report.markers = await writeDamageMarkers(repo, found, { who: options.who, tool: TOOL, source: 'verify' });
      for (const name of report.markers) options.progress.warn(`recorded the damage found in ${name}`);
    }
    await record(ctx, 'verify.finished', {
      readData: options.readData,
      ok: report.ok,
      snapshots: report.snapshots,
      packsRead: report.packsRead,
      problems: report.problems.length,
      affected: report.affected.slice(0, 100),
      markers: report.markers,
    });
    return report;
  });
}

/** One damaged location set: a pack (or a frame of it) and the pieces it should hold. */
interface LocationProblem {
  object: string;
  why: string;
  packId: string;
  pieces: string[];
  /** Missing, truncated or failing authentication: damage for sure, recorded in a marker. A storage outage is not. */
  definite: boolean;
}

interface FileProblem {
  path: string;
  problem: string;
  definite: boolean;
}

function isDefinite(error: unknown): boolean {
  return (
    error instanceof NotFoundError || (error instanceof CairnError && error.code === 'Cairn.Damaged') || !(error instanceof CairnError)
  );
}

async function verifyLocked(
  repo: Repository,
  options: VerifyOptions,
  known: KnownDamage,
): Promise<{ report: VerifyReport; found: FoundDamage }> {
  const report: VerifyReport = {
    ok: true,
    snapshots: 0,
    packs: 0,
    packsRead: 0,
    piecesChecked: 0,
    bytesRead: 0,
    problems: [],
    affected: [],
    known: [],
    markers: [],
  };
  const found: FoundDamage = { packs: [], snapshots: [] };
  const problem = (object: string, text: string): void => {
    report.problems.push({ object, problem: text });
  };
  let index: PieceIndex;
  try {
    index = await repo.loadIndex(options.concurrency * 2);
  } catch (error) {
    problem('index', errorMessage(error));
    report.ok = false;
    return { report, found };
  }
  for (const u of index.unreadable) problem(u.name, `cannot be read: ${u.error}`);
  if (index.unreadable.length > 0) report.ok = false;
  const packSizes = new Map<string, number>();
  for await (const object of repo.storage.list(PACKS_PREFIX)) {
    const id = idFromKey(object.key, PACKS_PREFIX);
    if (id) packSizes.set(id, object.size);
  }
  // Every location of every piece (the index may give a piece several), grouped by pack.
  const byPack = new Map<string, IndexEntry[]>();
  const locationCount = new Map<string, number>();
  for (const entry of index.entries()) {
    const list = byPack.get(entry.packId);
    if (list) list.push(entry);
    else byPack.set(entry.packId, [entry]);
    const hex = entry.id.toString('hex');
    locationCount.set(hex, (locationCount.get(hex) ?? 0) + 1);
  }
  report.packs = byPack.size;
  const locationProblems: LocationProblem[] = [];
  const located = (packId: string, entries: IndexEntry[], object: string, why: string, definite: boolean): void => {
    locationProblems.push({ object, why, packId, pieces: entries.map((e) => e.id.toString('hex')), definite });
  };
  for (const [packId, entries] of byPack) {
    const size = packSizes.get(packId);
    // Behind a storage hook listed sizes are of the stored bytes: only reading the pack can tell.
    const why =
      size === undefined
        ? `pack ${packId} is missing`
        : !repo.storage.transform && entries.some((e) => e.frameOffset + e.frameLength > size)
          ? `pack ${packId} is truncated`
          : undefined;
    if (why) located(packId, entries, packKey(packId), why, true);
  }

  if (options.readData > 0) {
    const candidates = [...byPack.keys()].filter((id) => packSizes.has(id) && !locationProblems.some((p) => p.packId === id));
    const chosen = options.readData >= 1 ? candidates : candidates.filter(() => randomInt(1_000_000) < options.readData * 1_000_000);
    const reader = new PieceReader(repo, index);
    let done = 0;
    await mapLimit(chosen, options.concurrency, async (packId) => {
      const entries = byPack.get(packId) ?? [];
      let data: Buffer;
      try {
        data = await repo.storage.get(packKey(packId));
      } catch (error) {
        options.signal?.throwIfAborted();
        located(packId, entries, packKey(packId), `pack ${packId} cannot be read: ${errorMessage(error)}`, error instanceof NotFoundError);
        return;
      }
      report.bytesRead += data.length;
      let key: Buffer | undefined;
      let headerProblem = '';
      try {
        key = packDataKey(repo.masterKey(), packSaltFromHeader(data, packId));
      } catch (error) {
        headerProblem = errorMessage(error);
      }
      const frames = new Map<number, IndexEntry[]>();
      for (const e of entries) {
        const list = frames.get(e.frameOffset);
        if (list) list.push(e);
        else frames.set(e.frameOffset, [e]);
      }
      // A few frames of the pack at a time: decompression runs on libuv's pool, memory stays bounded.
      await mapLimit(frames, 4, async ([offset, pieces]) => {
        const first = pieces[0] as IndexEntry;
        try {
          if (!key) throw new Error(`pack header is damaged: ${headerProblem}`);
          const plain = await reader.decode(first, data.subarray(offset, offset + first.frameLength), key);
          for (const e of pieces) {
            // The reader's own check (the slot found by offset: a scan of the ids per piece was quadratic in a frame of many).
            if (reader.pieceProblem(plain, e.id, e)) throw new Error(`piece ${e.id.toString('hex')} does not match its id`);
            report.piecesChecked++;
          }
        } catch (error) {
          located(packId, pieces, packKey(packId), frameProblem(packId, offset, error), true);
        }
      });
      report.packsRead++;
      options.progress.progress({ phase: 'verify', files: ++done, bytes: report.bytesRead, totalFiles: chosen.length });
    });
  }

  // A piece is damaged when every one of its locations is; a marked location whose piece is intact elsewhere is known.
  const badLocations = new Map<string, number>();
  for (const p of locationProblems) for (const piece of p.pieces) badLocations.set(piece, (badLocations.get(piece) ?? 0) + 1);
  const intactElsewhere = (piece: string): boolean => (badLocations.get(piece) ?? 0) < (locationCount.get(piece) ?? 0);
  const bad = new Map<string, string>(); // piece id (hex) → problem
  const definiteBad = new Set<string>();
  for (const p of locationProblems) {
    const settled = p.pieces.every((piece) => known.isMarked(piece, p.packId) && intactElsewhere(piece));
    if (settled && p.pieces.length > 0) {
      report.known.push({ object: p.object, problem: `${p.why} (known: a damage marker names it; its pieces are intact elsewhere)` });
      continue;
    }
    problem(p.object, p.why);
    for (const piece of p.pieces) {
      if (intactElsewhere(piece)) continue;
      bad.set(piece, p.why);
      if (p.definite) definiteBad.add(piece);
    }
    const unmarked = p.pieces.filter((piece) => !known.isMarked(piece, p.packId));
    if (p.definite && unmarked.length > 0) found.packs.push({ pack: p.packId, pieces: unmarked, problem: p.why });
  }

  const { snapshots, unreadable } = await repo.listSnapshots(options.concurrency * 2);
  report.snapshots = snapshots.length + unreadable.length;
  for (const u of unreadable) problem(`snapshots/${u.id}`, u.error);
  const reader = new PieceReader(repo, index);
  // Per tree, the damaged paths below it (relative): trees shared by snapshots are walked once.
  // A tree is remembered only once walked, so `ancestors` stops a crafted loop (or absurd depth),
  // which is reported like any other damage, at the directory that closes it.
  const memo = new Map<string, FileProblem[]>();
  // With data, page files' pages re-hashed (a share of them with a subset): once per distinct content.
  const pageChecks = new Map<string, Promise<{ problem: string; definite: boolean } | undefined>>();
  const pageCheck = (entry: TreeEntry): Promise<{ problem: string; definite: boolean } | undefined> | undefined => {
    if (options.readData <= 0 || !entry.extentLists || !entry.pageHashes) return undefined;
    const key = JSON.stringify([entry.size, entry.pageSize, entry.extentLists, entry.pageHashes]);
    let check = pageChecks.get(key);
    if (!check) {
      check =
        options.readData >= 1 || Math.random() < options.readData
          ? pageHashProblem(repo, entry, reader).then(
              (problem) => (problem === undefined ? undefined : { problem, definite: true }),
              (error: unknown) => {
                options.signal?.throwIfAborted();
                return { problem: errorMessage(error), definite: isDefinite(error) };
              },
            )
          : Promise.resolve(undefined);
      pageChecks.set(key, check);
    }
    return check;
  };
  const walk = async (treeId: string, ancestors: TreeAncestors, rel: string): Promise<FileProblem[]> => {
    const cached = memo.get(treeId);
    if (cached) return cached;
    const damagedPaths: FileProblem[] = [];
    let here: TreeAncestors;
    try {
      here = ancestors.enter(treeId, rel);
    } catch (error) {
      damagedPaths.push({ path: '.', problem: errorMessage(error), definite: true });
      return damagedPaths;
    }
    const unindexed = !index.has(Buffer.from(treeId, 'hex'));
    const treeProblem = bad.get(treeId) ?? (unindexed ? `tree ${treeId} is not indexed` : undefined);
    let entries;
    try {
      if (treeProblem) throw new Error(treeProblem);
      entries = decodeTree(await reader.read(Buffer.from(treeId, 'hex')), treeId).entries;
    } catch (error) {
      options.signal?.throwIfAborted();
      const definite = treeProblem ? unindexed || definiteBad.has(treeId) : isDefinite(error);
      damagedPaths.push({ path: '.', problem: `directory unreadable: ${errorMessage(error)}`, definite });
      memo.set(treeId, damagedPaths);
      return damagedPaths;
    }
    for (const entry of entries) {
      if (entry.type === 'dir' && entry.subtree) {
        for (const below of await walk(entry.subtree, here, rel === '' ? entry.name : `${rel}/${entry.name}`))
          damagedPaths.push({ ...below, path: below.path === '.' ? entry.name : `${entry.name}/${below.path}` });
      } else if (entry.type === 'file') {
        const why = (await fileProblem(entry, reader, index, bad, definiteBad)) ?? (await pageCheck(entry));
        if (why) damagedPaths.push({ path: entry.name, ...why });
      }
    }
    memo.set(treeId, damagedPaths);
    return damagedPaths;
  };
  for (const snapshot of snapshots) {
    let definite = false;
    for (const f of await walk(snapshot.tree, TreeAncestors.none, '')) {
      report.affected.push({ snapshot: snapshot.id, path: f.path, problem: f.problem });
      definite ||= f.definite;
    }
    if (definite && !known.named(snapshot)) found.snapshots.push(snapshot.id);
  }
  await verifyLogs(repo, options, problem);
  report.ok = report.problems.length === 0 && report.affected.length === 0;
  return { report, found };
}

/**
 * The log archive: every record must name a file that exists (a missing one is
 * also a gap in `pitr status`); with data, the files of the same share as the
 * packs are read, authenticated and compared with their recorded hash.
 */
async function verifyLogs(repo: Repository, options: VerifyOptions, problem: (object: string, text: string) => void): Promise<void> {
  for (const stream of await LogArchive.streams(repo)) {
    const log = new LogArchive(repo, stream);
    let archive: ArchivedLog;
    try {
      archive = await log.read(options.concurrency * 2);
    } catch (error) {
      problem(`logs/${stream}`, errorMessage(error));
      continue;
    }
    for (const missing of archive.missing)
      problem(
        fileObjectKey(stream, missing.key),
        `archived log file ${missing.name} is missing (a gap for point-in-time recovery: see \`cairn pitr status\`)`,
      );
    if (options.readData <= 0) continue;
    const sample = archive.records.filter(() => options.readData >= 1 || Math.random() < options.readData);
    await mapLimit(sample, options.concurrency, async (record) => {
      options.signal?.throwIfAborted();
      try {
        const data = await log.getFile(record.key);
        if (data.length !== record.size || log.hash(data) !== record.hash)
          problem(fileObjectKey(stream, record.key), `archived log file ${record.name} does not match its record (size or hash)`);
      } catch (error) {
        options.signal?.throwIfAborted();
        problem(fileObjectKey(stream, record.key), errorMessage(error));
      }
    });
  }
}

async function fileProblem(
  entry: TreeEntry,
  reader: PieceReader,
  index: PieceIndex,
  bad: Map<string, string>,
  definiteBad: ReadonlySet<string>,
): Promise<{ problem: string; definite: boolean } | undefined> {
  const check = (id: Buffer, what: string): { problem: string; definite: boolean } | undefined => {
    const hex = id.toString('hex');
    const why = bad.get(hex);
    if (why) return { problem: why, definite: definiteBad.has(hex) };
    return index.has(id) ? undefined : { problem: `${what} ${hex} is missing`, definite: true };
  };
  for (const { what, ids } of contentListsOf(entry)) {
    for (const listId of ids) {
      const why = check(Buffer.from(listId, 'hex'), what);
      if (why) return why;
    }
  }
  const hashes = pageHashCountProblem(entry, index);
  if (hashes) return { problem: hashes, definite: true };
  try {
    const extents = new ExtentTotal(entry);
    for await (const slice of contentSlices(entry, reader)) {
      const why = check(slice.id, 'piece');
      if (why) return why;
      const outside = extentProblem(slice, index);
      if (outside) return { problem: outside, definite: true };
      extents.add(slice);
    }
    const total = extents.problem();
    if (total) return { problem: total, definite: true };
  } catch (error) {
    return { problem: errorMessage(error), definite: isDefinite(error) };
  }
  return undefined;
}
