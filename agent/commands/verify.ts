import { randomInt } from 'node:crypto';
import { mapLimit } from '../core/concurrency.ts';
import { errorMessage } from '../core/errors.ts';
import { LogArchive, fileObjectKey, type ArchivedLog } from '../core/log-archive.ts';
import { PACKS_PREFIX, idFromKey, packKey } from '../core/layout.ts';
import { packDataKey, packSaltFromHeader, type IndexEntry } from '../core/pack.ts';
import type { PieceIndex } from '../core/piece-index.ts';
import { PieceReader } from '../core/piece-reader.ts';
import type { Repository, Who } from '../core/repository.ts';
import { record, underLock, operationContext } from './operation.ts';
import { decodeTree } from '../core/tree.ts';
import { TreeAncestors } from '../core/tree-walk.ts';
import { contentIds } from '../pipeline/snapshot-writer.ts';
import type { ProgressListener } from '../progress/progress.ts';

export interface VerifyOptions {
  /** Fraction of packs whose data is read and checked: 0 (structure only) to 1 (--read-data). */
  readData: number;
  concurrency: number;
  progress: ProgressListener;
  who: Who;
  leaseMs?: number | undefined;
  lockWaitMs?: number | undefined;
  /** Cancellation: reads that fail because of it are not damage, and nothing is recorded as verified. */
  signal?: AbortSignal | undefined;
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
}

/**
 * Structure: every index file and manifest opens, every pack the index names
 * exists and is long enough, every tree reads and every piece a snapshot uses
 * is indexed. With data: packs are read whole, each frame authenticated and
 * each piece's keyed hash recomputed. Damage is mapped back to the snapshots
 * and files it affects.
 */
export async function verify(repo: Repository, options: VerifyOptions): Promise<VerifyReport> {
  const ctx = operationContext(repo, options);
  return underLock(ctx, 'verify', false, async () => {
    const report = await verifyLocked(repo, options);
    options.signal?.throwIfAborted();
    await record(ctx, 'verify.finished', {
      readData: options.readData,
      ok: report.ok,
      snapshots: report.snapshots,
      packsRead: report.packsRead,
      problems: report.problems.length,
      affected: report.affected.slice(0, 100),
    });
    return report;
  });
}

async function verifyLocked(repo: Repository, options: VerifyOptions): Promise<VerifyReport> {
  const report: VerifyReport = {
    ok: true,
    snapshots: 0,
    packs: 0,
    packsRead: 0,
    piecesChecked: 0,
    bytesRead: 0,
    problems: [],
    affected: [],
  };
  const problem = (object: string, text: string): void => {
    report.problems.push({ object, problem: text });
  };
  let index: PieceIndex;
  try {
    index = await repo.loadIndex(options.concurrency * 2);
  } catch (error) {
    problem('index', errorMessage(error));
    report.ok = false;
    return report;
  }
  const packSizes = new Map<string, number>();
  for await (const object of repo.storage.list(PACKS_PREFIX)) {
    const id = idFromKey(object.key, PACKS_PREFIX);
    if (id) packSizes.set(id, object.size);
  }
  const byPack = new Map<string, IndexEntry[]>();
  for (const entry of index.entries()) {
    const list = byPack.get(entry.packId);
    if (list) list.push(entry);
    else byPack.set(entry.packId, [entry]);
  }
  report.packs = byPack.size;
  const bad = new Map<string, string>(); // piece id (hex) → problem
  for (const [packId, entries] of byPack) {
    const size = packSizes.get(packId);
    // Behind a storage hook listed sizes are of the stored bytes: only reading the pack can tell.
    const why =
      size === undefined
        ? `pack ${packId} is missing`
        : !repo.storage.transform && entries.some((e) => e.frameOffset + e.frameLength > size)
          ? `pack ${packId} is truncated`
          : undefined;
    if (why) {
      problem(packKey(packId), why);
      for (const e of entries) bad.set(e.id.toString('hex'), why);
    }
  }

  if (options.readData > 0) {
    const candidates = [...byPack.keys()].filter((id) => packSizes.has(id));
    const chosen = options.readData >= 1 ? candidates : candidates.filter(() => randomInt(1_000_000) < options.readData * 1_000_000);
    const reader = new PieceReader(repo, index);
    let done = 0;
    await mapLimit(chosen, options.concurrency, async (packId) => {
      const entries = byPack.get(packId) ?? [];
      let data: Buffer;
      try {
        data = await repo.storage.get(packKey(packId));
      } catch (error) {
        const why = `pack ${packId} cannot be read: ${errorMessage(error)}`;
        problem(packKey(packId), why);
        for (const e of entries) bad.set(e.id.toString('hex'), why);
        return;
      }
      report.bytesRead += data.length;
      let key: Buffer | undefined;
      try {
        key = packDataKey(repo.masterKey(), packSaltFromHeader(data, packId));
      } catch (error) {
        problem(packKey(packId), errorMessage(error));
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
          if (!key) throw new Error('pack header is damaged');
          const plain = await reader.decode(first, data.subarray(offset, offset + first.frameLength), key);
          for (const e of pieces) {
            const slot = plain.ids.findIndex((id) => id.equals(e.id));
            const bytes = plain.data.subarray(e.offsetInFrame, e.offsetInFrame + e.length);
            if (slot < 0 || plain.offsets[slot] !== e.offsetInFrame || !repo.pieceId(bytes).equals(e.id)) {
              throw new Error(`piece ${e.id.toString('hex')} does not match its id`);
            }
            report.piecesChecked++;
          }
        } catch (error) {
          const why = `pack ${packId} frame @${offset}: ${errorMessage(error)}`;
          problem(packKey(packId), why);
          for (const e of pieces) bad.set(e.id.toString('hex'), why);
        }
      });
      report.packsRead++;
      options.progress.progress({ phase: 'verify', files: ++done, bytes: report.bytesRead, totalFiles: chosen.length });
    });
  }

  const { snapshots, unreadable } = await repo.listSnapshots(options.concurrency * 2);
  report.snapshots = snapshots.length + unreadable.length;
  for (const u of unreadable) problem(`snapshots/${u.id}`, u.error);
  const reader = new PieceReader(repo, index);
  // Per tree, the damaged paths below it (relative): trees shared by snapshots are walked once.
  // A tree is remembered only once walked, so `ancestors` stops a crafted loop (or absurd depth),
  // which is reported like any other damage, at the directory that closes it.
  const memo = new Map<string, Array<{ path: string; problem: string }>>();
  const walk = async (treeId: string, ancestors: TreeAncestors, rel: string): Promise<Array<{ path: string; problem: string }>> => {
    const cached = memo.get(treeId);
    if (cached) return cached;
    const found: Array<{ path: string; problem: string }> = [];
    let here: TreeAncestors;
    try {
      here = ancestors.enter(treeId, rel);
    } catch (error) {
      found.push({ path: '.', problem: errorMessage(error) });
      return found;
    }
    const treeProblem = bad.get(treeId) ?? (index.has(Buffer.from(treeId, 'hex')) ? undefined : `tree ${treeId} is not indexed`);
    let entries;
    try {
      if (treeProblem) throw new Error(treeProblem);
      entries = decodeTree(await reader.read(Buffer.from(treeId, 'hex')), treeId).entries;
    } catch (error) {
      found.push({ path: '.', problem: `directory unreadable: ${errorMessage(error)}` });
      memo.set(treeId, found);
      return found;
    }
    for (const entry of entries) {
      if (entry.type === 'dir' && entry.subtree) {
        for (const below of await walk(entry.subtree, here, rel === '' ? entry.name : `${rel}/${entry.name}`))
          found.push({ path: below.path === '.' ? entry.name : `${entry.name}/${below.path}`, problem: below.problem });
      } else if (entry.type === 'file') {
        const why = await fileProblem(entry, reader, index, bad);
        if (why) found.push({ path: entry.name, problem: why });
      }
    }
    memo.set(treeId, found);
    return found;
  };
  for (const snapshot of snapshots) {
    for (const f of await walk(snapshot.tree, TreeAncestors.none, ''))
      report.affected.push({ snapshot: snapshot.id, path: f.path, problem: f.problem });
  }
  await verifyLogs(repo, options, problem);
  report.ok = report.problems.length === 0 && report.affected.length === 0;
  return report;
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
  entry: import('../core/tree.ts').TreeEntry,
  reader: PieceReader,
  index: PieceIndex,
  bad: Map<string, string>,
): Promise<string | undefined> {
  for (const listId of entry.contentLists ?? []) {
    const why = bad.get(listId) ?? (index.has(Buffer.from(listId, 'hex')) ? undefined : `content list ${listId} is missing`);
    if (why) return why;
  }
  try {
    for await (const id of contentIds(entry, reader)) {
      const hex = id.toString('hex');
      const why = bad.get(hex) ?? (index.has(id) ? undefined : `piece ${hex} is missing`);
      if (why) return why;
    }
  } catch (error) {
    return errorMessage(error);
  }
  return undefined;
}
