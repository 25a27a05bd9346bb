import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { Repository } from '../../../agent/core/repository.ts';
import { PieceReader } from '../../../agent/core/piece-reader.ts';
import type { PieceIndex } from '../../../agent/core/piece-index.ts';
import { PieceType, type PieceTypeId } from '../../../agent/core/pack.ts';
import { CONTENT_CACHE_PIECES, contentBytes, contentSlices } from '../../../agent/core/file-content.ts';
import {
  EXTENT_BYTES,
  EXTENTS_PER_LIST,
  HASHES_PER_LIST,
  MAX_READ_AMPLIFICATION,
  PAGE_HASH_BYTES,
  RUN_BYTES,
} from '../../../agent/core/page-file.ts';
import type { TreeEntry } from '../../../agent/core/tree.ts';
import { PackWriter } from '../../../agent/pipeline/pack-writer.ts';
import { RestoreReadCost } from '../../../agent/pipeline/page-writer.ts';
import { SnapshotWriter } from '../../../agent/pipeline/snapshot-writer.ts';
import { MemoryStorage } from '../../helpers/memory-storage.ts';
import { PASSPHRASE } from '../../helpers/repo.ts';
import { Prng } from '../../bench/prng.ts';

/*
 * Page files through the library (SnapshotWriter with `pages`, a PackWriter,
 * PieceIndex and PieceReader over an in-memory repository): chains of backups of
 * a database-like file with page-level edits between them.
 *
 * What an incremental may add (docs/repository-format.md, "Bytes added by an
 * incremental"), checked on every generation:
 *
 *   new data bytes  =  bytes of the pages that differ from the parent's page at
 *                      the same index, stored in runs (minus runs the repository
 *                      already holds byte for byte), unless the read-amplification
 *                      fallback stored the rest of the file afresh;
 *   new list bytes  ≤  40 B × extents + 16 B × pages, in at most
 *                      ⌈extents / 16384⌉ + ⌈pages / 32768⌉ `list` pieces;
 *   extents         ≤  parent's extents + blocks of changed pages + run pieces;
 *
 * and what a restore reads (RestoreReadCost over the entry's extents, the
 * restorer's cache of 8 recent pieces) ≤ 2 × size + 8 MiB + 1 MiB (the documented
 * bound: the fallback starts at most one piece past 2 × size + 8 MiB).
 */

const MiB = 1 << 20;
const READ_BOUND_SLACK = CONTENT_CACHE_PIECES * RUN_BYTES + RUN_BYTES;

/** A page: random bytes, a header the detector knows when it is page 0 (PostgreSQL at 8 KiB, MariaDB full_crc32 at 16 KiB). */
function newPage(prng: Prng, pageSize: number): Buffer {
  const page = prng.bytes(pageSize);
  if (pageSize === 8192) {
    page.writeUInt16LE(64, 12);
    page.writeUInt16LE(4096, 14);
    page.writeUInt16LE(pageSize, 16);
    page.writeUInt16LE(pageSize | 4, 18);
  } else {
    page.writeUInt16BE(8, 24); // FIL_PAGE_TYPE_FSP_HDR
    page.writeUInt32BE(0x10 | 5, 54); // full_crc32, 512 << 5
    page.writeUInt16LE(0, 18); // not a PostgreSQL header by accident
  }
  return page;
}

type Edit =
  | { kind: 'rewrite'; count: number }
  | { kind: 'block'; count: number }
  | { kind: 'append'; count: number }
  | { kind: 'truncate'; count: number }
  | { kind: 'duplicate'; count: number }
  | { kind: 'copy'; count: number }
  | { kind: 'revert'; count: number }
  | { kind: 'shortTail' };

interface Scenario {
  pageSize: number;
  pages: number;
  seed: number;
  generations: Edit[][];
}

const MIN_PAGES = 32;

/** Applies one generation's edits to the last file; `history` holds every earlier generation's bytes. */
function applyEdits(history: Buffer[], edits: Edit[], prng: Prng, pageSize: number): Buffer {
  let file = Buffer.from(history[history.length - 1] as Buffer);
  const pages = (): number => Math.ceil(file.length / pageSize);
  const writeAt = (index: number, bytes: Buffer): void => {
    const at = index * pageSize;
    if (at + bytes.length > file.length) file = Buffer.concat([file.subarray(0, at), Buffer.alloc(at + bytes.length - at)]);
    bytes.copy(file, at);
  };
  for (const edit of edits) {
    const whole = Math.floor(file.length / pageSize);
    switch (edit.kind) {
      case 'rewrite':
        for (let k = 0; k < edit.count; k++) writeAt(prng.int(whole), newPage(prng, pageSize));
        break;
      case 'block': {
        const count = Math.min(edit.count, whole);
        const from = prng.int(whole - count + 1);
        for (let k = 0; k < count; k++) writeAt(from + k, newPage(prng, pageSize));
        break;
      }
      case 'append':
        file = Buffer.concat([file, ...Array.from({ length: edit.count }, () => newPage(prng, pageSize))]);
        break;
      case 'truncate':
        file = file.subarray(0, Math.max(MIN_PAGES, pages() - edit.count) * pageSize);
        break;
      case 'duplicate': {
        // The same new run at two places: the second is a run the repository already holds (unless edits merge it).
        const run = Buffer.concat(Array.from({ length: edit.count }, () => newPage(prng, pageSize)));
        if (whole < 2 * edit.count + 3) break;
        const a = 1 + prng.int(whole - 2 * edit.count - 2);
        const b = a + edit.count + 1 + prng.int(whole - a - 2 * edit.count - 1);
        writeAt(a, run);
        writeAt(b, run);
        break;
      }
      case 'copy': {
        // Pages copied from elsewhere in the file: changed at their index, though the bytes are stored elsewhere.
        const count = Math.min(edit.count, Math.floor(whole / 2));
        const from = prng.int(whole - count + 1);
        const to = prng.int(whole - count + 1);
        writeAt(to, Buffer.from(file.subarray(from * pageSize, (from + count) * pageSize)));
        break;
      }
      case 'revert': {
        // A range back to what it was two generations ago: a run earlier backups may already hold.
        const old = history[history.length - 2];
        if (!old) break;
        const span = Math.min(edit.count, Math.floor(old.length / pageSize), whole);
        const from = prng.int(Math.min(Math.floor(old.length / pageSize), whole) - span + 1);
        writeAt(from, Buffer.from(old.subarray(from * pageSize, (from + span) * pageSize)));
        break;
      }
      case 'shortTail':
        file = Buffer.concat([file.subarray(0, whole * pageSize), prng.bytes(1 + prng.int(pageSize - 1))]);
        break;
    }
  }
  return file;
}

interface Location {
  id: Buffer;
  offset: number;
  length: number;
}

/** Where the entry's extents put each page: a page cut across extents gets the part in the first. */
async function pageLocations(entry: TreeEntry, reader: PieceReader, pageSize: number): Promise<Location[]> {
  const extents: Array<Location & { start: number }> = [];
  let start = 0;
  for await (const slice of contentSlices(entry, reader)) {
    assert.ok(slice.length !== undefined, 'a page file has extents');
    extents.push({ id: Buffer.from(slice.id), offset: slice.offset, length: slice.length, start });
    start += slice.length;
  }
  const out: Location[] = [];
  let e = 0;
  for (let at = 0; at < start; at += pageSize) {
    while (at >= (extents[e] as { start: number; length: number }).start + (extents[e] as { length: number }).length) e++;
    const extent = extents[e] as Location & { start: number };
    const inside = at - extent.start;
    out.push({ id: extent.id, offset: extent.offset + inside, length: Math.min(pageSize, extent.length - inside) });
  }
  return out;
}

interface Expected {
  /** Each run the writer should store, in order. */
  runs: Buffer[];
  /** Bytes of the pages that differ from the parent's page at the same index. */
  changedBytes: number;
  /** Maximal blocks of consecutive differing pages. */
  changedBlocks: number;
  /** Whether the read-amplification bound made the writer store the rest afresh. */
  fallback: boolean;
  /** What a restore reads, as the writer counts it. */
  readCost: number;
  /** Whether the parent's own restore passed the bound, so the file was stored whole (no parent). */
  restarted: boolean;
}

/** Whether a restore of the parent, counted page by page, passes the read bound anywhere along the file. */
function parentPassesBound(index: PieceIndex, parent: { bytes: Buffer; locations: Location[] }, pageSize: number): boolean {
  const cost = new RestoreReadCost();
  let size = 0;
  for (let at = 0, i = 0; at < parent.bytes.length; at += pageSize, i++) {
    const location = parent.locations[i];
    if (location) cost.visit(location.id, (index.get(location.id) as { length: number }).length);
    size += Math.min(pageSize, parent.bytes.length - at);
    if (cost.bytes > MAX_READ_AMPLIFICATION * size + CONTENT_CACHE_PIECES * RUN_BYTES) return true;
  }
  return false;
}

/**
 * An independent model of the writer (docs/repository-format.md, "Writing"):
 * a page equal to the parent's page at its index, and whole inside one of the
 * parent's pieces, is pointed at; other pages make runs of at most RUN_BYTES;
 * past MAX_READ_AMPLIFICATION × bytes + the cache's worth of reads, the rest
 * is stored afresh.
 */
function expectRuns(
  repo: Repository,
  index: PieceIndex,
  file: Buffer,
  pageSize: number,
  given: { bytes: Buffer; locations: Location[] } | undefined,
): Expected {
  const restarted = given !== undefined && parentPassesBound(index, given, pageSize);
  const parent = restarted ? undefined : given;
  const cost = new RestoreReadCost();
  const runs: Buffer[] = [];
  let run: Buffer[] = [];
  let runLength = 0;
  const flush = (): void => {
    if (runLength === 0) return;
    const data = Buffer.concat(run);
    runs.push(data);
    cost.visit(repo.pieceId(data), data.length);
    run = [];
    runLength = 0;
  };
  let fallback = false;
  let size = 0;
  let changedBytes = 0;
  let changedBlocks = 0;
  let lastChanged = false;
  for (let at = 0, i = 0; at < file.length; at += pageSize, i++) {
    const page = file.subarray(at, at + pageSize);
    const was = parent && at < parent.bytes.length ? parent.bytes.subarray(at, at + pageSize) : undefined;
    const location = parent?.locations[i];
    const same = was !== undefined && was.equals(page) && location !== undefined && location.length === page.length;
    if (!same) {
      changedBytes += page.length;
      if (!lastChanged) changedBlocks++;
    }
    lastChanged = !same;
    if (same && !fallback) {
      flush();
      cost.visit(location.id, (index.get(location.id) as { length: number }).length);
    } else {
      run.push(page);
      runLength += page.length;
      if (runLength + pageSize > Math.max(RUN_BYTES, pageSize)) flush();
    }
    size += page.length;
    if (parent && !fallback && cost.bytes > MAX_READ_AMPLIFICATION * size + CONTENT_CACHE_PIECES * RUN_BYTES) fallback = true;
  }
  flush();
  return { runs, changedBytes, changedBlocks, fallback, readCost: cost.bytes, restarted };
}

/** Reads `file` in uneven pieces, as a pipe would: never more than 77,777 bytes at a time. */
function shortReads(file: Buffer): (buffer: Buffer) => Promise<number> {
  let at = 0;
  return (buffer) => {
    const n = file.copy(buffer, 0, at, Math.min(file.length, at + 77_777));
    at += n;
    return Promise.resolve(n);
  };
}

interface Stored {
  entry: TreeEntry;
  /** Every data piece the writer handed to the pack writer, in order (new or not). */
  dataAdds: Buffer[];
  newData: number;
  newList: number;
  newListPieces: number;
  expected: Expected;
  readCost: number;
  extents: number;
}

/** One backup of `file` against `parent` (the previous generation's entry and bytes), checked against the model. */
async function backupGeneration(
  repo: Repository,
  file: Buffer,
  pageSize: number,
  parent: { entry: TreeEntry; bytes: Buffer } | undefined,
): Promise<Stored> {
  const index = await repo.loadIndex();
  const reader = new PieceReader(repo, index);
  const parentInput = parent && { bytes: parent.bytes, locations: await pageLocations(parent.entry, reader, pageSize) };
  const expected = expectRuns(repo, index, file, pageSize, parentInput);
  const held = new Set(expected.runs.map((r) => repo.pieceId(r).toString('hex')).filter((id) => index.has(Buffer.from(id, 'hex'))));

  const writer = new PackWriter(repo, index, { compression: { codec: 'none' }, concurrency: 1 });
  const dataAdds: Buffer[] = [];
  let newData = 0;
  let newList = 0;
  let newListPieces = 0;
  const add = writer.add.bind(writer);
  writer.add = async (id: Buffer, type: PieceTypeId, data: Buffer): Promise<boolean> => {
    if (type === PieceType.data) dataAdds.push(Buffer.from(id));
    const isNew = await add(id, type, data);
    if (isNew && type === PieceType.data) newData += data.length;
    if (isNew && type === PieceType.list) {
      newList += data.length;
      newListPieces++;
    }
    return isNew;
  };
  const snapshotWriter = new SnapshotWriter(repo, writer, { chunking: { kind: 'fixed', size: MiB }, pages: { index, reader } });
  const content = await snapshotWriter.storeRead(shortReads(file), 'rel', parent?.entry);
  await writer.flush();
  const entry: TreeEntry = { name: 'rel', type: 'file', mode: 0o600, uid: 0, gid: 0, mtimeNs: '0', ...content };

  // Read back through a fresh index, as a restore would.
  const after = await repo.loadIndex();
  const afterReader = new PieceReader(repo, after);
  // Count the data pieces contentBytes reads (lists aside), to hold it to what RestoreReadCost counts.
  const lists = new Set([...(entry.extentLists ?? []), ...(entry.contentLists ?? [])]);
  let dataRead = 0;
  const read = afterReader.read.bind(afterReader);
  afterReader.read = async (id: Buffer) => {
    const piece = await read(id);
    if (!lists.has(id.toString('hex'))) dataRead += piece.length;
    return piece;
  };
  const chunks: Buffer[] = [];
  for await (const bytes of contentBytes(entry, afterReader)) chunks.push(Buffer.from(bytes));
  assert.ok(Buffer.concat(chunks).equals(file), 'the entry reads back byte for byte');

  const cost = new RestoreReadCost();
  let extents = 0;
  for await (const slice of contentSlices(entry, afterReader)) {
    extents++;
    cost.visit(slice.id, (after.get(slice.id) as { length: number }).length);
  }
  assert.equal(dataRead, cost.bytes, 'contentBytes reads the pieces RestoreReadCost counts (same cache, same eviction)');
  let expectedNew = 0;
  const seen = new Set<string>();
  for (const run of expected.runs) {
    const id = repo.pieceId(run).toString('hex');
    if (!held.has(id) && !seen.has(id)) expectedNew += run.length;
    seen.add(id);
  }
  assert.equal(newData, expectedNew, 'new data bytes: the runs the repository did not hold');
  return { entry, dataAdds, newData, newList, newListPieces, expected, readCost: cost.bytes, extents };
}

function checkGeneration(stored: Stored, parentExtents: number | undefined, file: Buffer, pageSize: number, repo: Repository): void {
  const { expected } = stored;
  assert.equal(stored.entry.size, file.length);
  assert.equal(stored.entry.pageSize, pageSize, 'stored as a page file at its page size');
  assert.deepEqual(
    stored.dataAdds.map((id) => id.toString('hex')),
    expected.runs.map((r) => repo.pieceId(r).toString('hex')),
    'the writer stores exactly the model runs of changed pages',
  );
  const storedBytes = expected.runs.reduce((sum, r) => sum + r.length, 0);
  if (!expected.fallback) {
    assert.equal(storedBytes, expected.changedBytes, 'runs hold the changed pages and nothing else');
    assert.ok(stored.newData <= expected.changedBytes);
    if (parentExtents !== undefined)
      assert.ok(
        stored.extents <= parentExtents + expected.changedBlocks + expected.runs.length,
        `extents ${stored.extents} ≤ parent's ${parentExtents} + ${expected.changedBlocks} blocks + ${expected.runs.length} runs`,
      );
  }
  const pages = Math.ceil(file.length / pageSize);
  assert.ok(
    stored.newList <= EXTENT_BYTES * stored.extents + PAGE_HASH_BYTES * pages,
    `list bytes ${stored.newList} ≤ 40 × ${stored.extents} extents + 16 × ${pages} pages`,
  );
  assert.ok(stored.newListPieces <= Math.ceil(stored.extents / EXTENTS_PER_LIST) + Math.ceil(pages / HASHES_PER_LIST));
  assert.equal(stored.readCost, expected.readCost, 'a restore reads what the writer counted');
  assert.ok(
    stored.readCost <= MAX_READ_AMPLIFICATION * file.length + READ_BOUND_SLACK,
    `a restore reads ${stored.readCost} B of pieces for ${file.length} B`,
  );
}

async function newRepo(): Promise<Repository> {
  return Repository.init(new MemoryStorage(), PASSPHRASE, { host: 'h', user: 'u' });
}

async function runChain(repo: Repository, files: Buffer[], pageSize: number): Promise<Stored[]> {
  const out: Stored[] = [];
  let parent: { entry: TreeEntry; bytes: Buffer; extents: number } | undefined;
  for (const file of files) {
    const stored = await backupGeneration(repo, file, pageSize, parent);
    checkGeneration(stored, parent?.extents, file, pageSize, repo);
    out.push(stored);
    parent = { entry: stored.entry, bytes: file, extents: stored.extents };
  }
  // Every generation still reads back after the later ones were written (they share pieces).
  const index = await repo.loadIndex();
  const reader = new PieceReader(repo, index);
  for (const [g, stored] of out.entries()) {
    const chunks: Buffer[] = [];
    for await (const bytes of contentBytes(stored.entry, reader)) chunks.push(Buffer.from(bytes));
    assert.ok(Buffer.concat(chunks).equals(files[g] as Buffer), `generation ${g} reads back after the chain`);
  }
  return out;
}

const editArb: fc.Arbitrary<Edit> = fc.oneof(
  fc.record({ kind: fc.constant('rewrite' as const), count: fc.integer({ min: 1, max: 40 }) }),
  fc.record({ kind: fc.constant('block' as const), count: fc.integer({ min: 1, max: 200 }) }),
  fc.record({ kind: fc.constant('append' as const), count: fc.integer({ min: 1, max: 40 }) }),
  fc.record({ kind: fc.constant('truncate' as const), count: fc.integer({ min: 1, max: 40 }) }),
  fc.record({ kind: fc.constant('duplicate' as const), count: fc.integer({ min: 1, max: 8 }) }),
  fc.record({ kind: fc.constant('copy' as const), count: fc.integer({ min: 1, max: 16 }) }),
  fc.record({ kind: fc.constant('revert' as const), count: fc.integer({ min: 1, max: 64 }) }),
);

const scenarioArb: fc.Arbitrary<Scenario> = fc.record({
  pageSize: fc.constantFrom(8192, 16384),
  pages: fc.integer({ min: MIN_PAGES, max: 300 }),
  seed: fc.integer({ min: 0, max: 2 ** 31 - 1 }),
  generations: fc.array(fc.array(editArb, { minLength: 1, maxLength: 4 }), { minLength: 3, maxLength: 5 }),
});

function filesOf(scenario: Scenario, shortTailAt?: number): Buffer[] {
  const prng = new Prng(scenario.seed, 'page-writer');
  const files: Buffer[] = [Buffer.concat(Array.from({ length: scenario.pages }, () => newPage(prng, scenario.pageSize)))];
  for (const [g, edits] of scenario.generations.entries())
    files.push(applyEdits(files, g === shortTailAt ? [...edits, { kind: 'shortTail' }] : edits, prng, scenario.pageSize));
  return files;
}

describe('page writer (issue 21): incrementals store changed pages only', () => {
  it('chains of 4-6 backups with random page edits read back exactly, store the changed pages in runs, and stay within the list and read bounds (property)', async () => {
    await fc.assert(
      fc.asyncProperty(scenarioArb, async (scenario) => {
        const repo = await newRepo();
        await runChain(repo, filesOf(scenario), scenario.pageSize);
      }),
      { seed: 21, numRuns: 40 },
    );
  });

  it('a file whose length is not whole pages (a short last page) is stored and compared like the rest', async () => {
    const scenario = fc.sample(scenarioArb, { seed: 2026, numRuns: 1 })[0] as Scenario;
    const repo = await newRepo();
    const files = filesOf(scenario, 0);
    assert.ok(files.some((f) => f.length % scenario.pageSize !== 0));
    await runChain(repo, files, scenario.pageSize);
  });

  it('an unchanged file adds no data and no lists; one changed page adds one page and the lists', async () => {
    const pageSize = 8192;
    const prng = new Prng(7, 'unchanged');
    const first = Buffer.concat(Array.from({ length: 200 }, () => newPage(prng, pageSize)));
    const second = Buffer.from(first);
    newPage(prng, pageSize).copy(second, 100 * pageSize);
    const repo = await newRepo();
    const [initial, same, one] = await runChain(repo, [first, first, second], pageSize);
    assert.equal(initial?.newData, first.length);
    assert.equal(same?.newData, 0);
    assert.equal(same?.newList, 0, 'the same extents and hashes: the same list pieces');
    assert.deepEqual(same?.entry.extentLists, initial?.entry.extentLists);
    assert.equal(one?.newData, pageSize);
    assert.equal(one?.extents, 4, 'the parent piece before, the new page, the parent piece after (split at 1 MiB: 2 pieces)');
    assert.equal(one?.newList, 4 * EXTENT_BYTES + 200 * PAGE_HASH_BYTES);
  });

  it("a file whose first page became zeroes keeps its parent's page size and stays a page file", async () => {
    const pageSize = 16384;
    const prng = new Prng(8, 'zero-head');
    const first = Buffer.concat(Array.from({ length: 64 }, () => newPage(prng, pageSize)));
    const second = Buffer.from(first);
    second.fill(0, 0, pageSize);
    const repo = await newRepo();
    const [, zeroed] = await runChain(repo, [first, second], pageSize);
    assert.equal(zeroed?.newData, pageSize);
  });

  it('pages scattered over many pieces by a long chain trip the read bound: the rest of the file is stored afresh, the next backup stores it whole once, and later ones store just their changes again', async () => {
    // Generation g (2..10) rewrites page 10j + g - 1 of every group of ten: after eight of them every
    // group reads its first page from the first backup's 1 MiB piece, then nine pages from other
    // pieces, so the 1 MiB piece drops out of a restore's 8-piece cache once per group of ten pages.
    // Generations 11 and 12 rewrite a few pages each.
    const pageSize = 8192;
    const pages = 1000;
    const prng = new Prng(9, 'scatter');
    const files = [Buffer.concat(Array.from({ length: pages }, () => newPage(prng, pageSize)))];
    for (let g = 2; g <= 12; g++) {
      const next = Buffer.from(files[files.length - 1] as Buffer);
      const rewrite = g <= 10 ? Array.from({ length: pages / 10 }, (_, j) => 10 * j + g - 1) : [g, 300 + g, 700 + g];
      for (const i of rewrite) newPage(prng, pageSize).copy(next, i * pageSize);
      files.push(next);
    }
    const repo = await newRepo();
    const stored = await runChain(repo, files, pageSize);
    const tripped = stored.findIndex((s) => s.expected.fallback);
    assert.ok(tripped > 1 && tripped < stored.length - 3, `the bound is reached after a few incrementals, not at once (at ${tripped})`);
    const first = stored[tripped] as Stored;
    // The price of the bound: the rest of the file after the point where it was passed is stored again.
    assert.ok(
      first.newData > 5 * first.expected.changedBytes,
      `${first.newData} B stored for ${first.expected.changedBytes} B of changed pages`,
    );
    for (const s of stored.slice(0, tripped)) assert.equal(s.newData, s.expected.changedBytes);
    // Its parent passed the bound, so the next backup stores the file whole once instead of passing it again...
    const restart = stored[tripped + 1] as Stored;
    assert.ok(restart.expected.restarted && !restart.expected.fallback, 'the backup after the trip starts the chain over');
    assert.ok(restart.newData > 0.9 * (files[tripped + 1] as Buffer).length, `${restart.newData} B: the file stored whole`);
    // ...and the ones after it store their changed pages alone.
    for (const s of stored.slice(tripped + 2)) {
      assert.ok(!s.expected.restarted && !s.expected.fallback);
      assert.equal(s.newData, s.expected.changedBytes);
    }
    assert.equal(stored.filter((s) => s.expected.fallback).length, 1, 'the bound is passed once, not at every backup');
  });
});
