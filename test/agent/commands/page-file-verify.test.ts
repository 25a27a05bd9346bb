import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { repairSnapshots } from '../../../agent/commands/repair-snapshots.ts';
import { verify, type VerifyReport } from '../../../agent/commands/verify.ts';
import { DamagedError } from '../../../agent/core/errors.ts';
import { PieceType } from '../../../agent/core/pack.ts';
import { EXTENT_BYTES, PAGE_HASH_BYTES, decodeExtents, encodeExtent } from '../../../agent/core/page-file.ts';
import type { Repository } from '../../../agent/core/repository.ts';
import type { Snapshot } from '../../../agent/core/snapshot.ts';
import { decodeTree } from '../../../agent/core/tree.ts';
import { silentProgress } from '../../../agent/progress/progress.ts';
import { lastOfType, runCli } from '../../helpers/cli.ts';
import { tempDir, initSmallRepo, fileRepo, backupDir, restoreTo, PASSPHRASE } from '../../helpers/repo.ts';
import { PAGE, craftVariant, postgresFile, readPiece, rootEntries } from './page-file-fixture.ts';

const who = { host: 'test-host', user: 'tester' };
const PAGES = 160; // 1.25 MiB

function verifyWith(repo: Repository, readData: number, markDamage = false): Promise<VerifyReport> {
  return verify(repo, { readData, concurrency: 2, progress: silentProgress, who, markDamage });
}

function repairOptions(refs: string[], readData: boolean): Parameters<typeof repairSnapshots>[1] {
  return { refs, readData, dryRun: false, concurrency: 2, progress: silentProgress, who };
}

function affectedBy(report: VerifyReport, snapshot: string): Array<{ path: string; problem: string }> {
  return report.affected.filter((a) => a.snapshot === snapshot).map(({ path, problem }) => ({ path, problem }));
}

/** Page files (repository format 2) in verify and repair snapshots: structure without data, page hashes with it. */
describe('page files: verify and repair snapshots', () => {
  let work: Awaited<ReturnType<typeof tempDir>>;
  let repo: Repository;
  let good: Snapshot;
  let db: Buffer;

  before(async () => {
    work = await tempDir('page-file-verify');
    repo = await initSmallRepo(fileRepo(join(work.path, 'repo')));
    const src = join(work.path, 'src');
    await mkdir(src);
    db = postgresFile(PAGES);
    await writeFile(join(src, 'db.dat'), db);
    await writeFile(join(src, 'notes.txt'), 'an ordinary file\n');
    good = await backupDir(repo, src);
    const entry = (await rootEntries(repo, good)).find((e) => e.name === 'db.dat');
    assert.ok(entry?.extentLists && entry.pageHashes && entry.pageSize === PAGE, 'the backup stored db.dat as a page file');
  });
  after(async () => {
    await work.remove();
  });

  it('a backup of page files verifies clean, with and without data', async () => {
    for (const readData of [0, 1]) {
      const report = await verifyWith(repo, readData);
      assert.deepEqual([report.problems, report.affected], [[], []], `readData ${readData}`);
      assert.equal(report.ok, true);
    }
  });

  it('verify --read-data finds a flipped stored page hash, names the file and marks the snapshot; structure alone cannot', async () => {
    const flipped = await craftVariant(repo, good, 'db.dat', async (entry, store) => {
      const list = Buffer.from(await readPiece(repo, (entry.pageHashes ?? [])[0] as string));
      list.writeUInt8(list.readUInt8(7 * PAGE_HASH_BYTES + 3) ^ 0x10, 7 * PAGE_HASH_BYTES + 3); // a bit of page 7's hash
      return { ...entry, pageHashes: [await store(PieceType.list, list)] };
    });
    assert.deepEqual(affectedBy(await verifyWith(repo, 0), flipped), [], 'the lists are whole and of the right length');
    const report = await verifyWith(repo, 1, true);
    assert.equal(report.ok, false);
    assert.deepEqual(affectedBy(report, flipped), [
      { path: 'db.dat', problem: '1 of 160 pages do not match their stored page hash, the first page 7 (bytes 57344-65536)' },
    ]);
    assert.deepEqual(affectedBy(report, good.id), [], 'the snapshot it was made from is intact');
    assert.equal(report.markers.length, 1, 'a damage marker names the snapshot');
    assert.deepEqual(affectedBy(await verifyWith(repo, 1), good.id), [], 'the marker names the crafted snapshot only');

    // repair snapshots --read-data keeps the file, whose data is whole, and leaves out only its page hashes.
    const repaired = await repairSnapshots(repo, repairOptions([flipped], true));
    assert.deepEqual(
      repaired.snapshots.map((s) => [s.status, s.removed.map((r) => r.path), s.hashesDropped.map((r) => r.path)]),
      [['repaired', [], ['db.dat']]],
    );
    await keptWithoutHashes(repaired.snapshots[0]?.newId as string, 'flipped');
  });

  /** A repaired snapshot whose db.dat lost only its page hashes: it verifies clean with data and restores exactly. */
  async function keptWithoutHashes(repairedId: string, name: string): Promise<void> {
    const entry = (await rootEntries(repo, await repo.readSnapshot(repairedId))).find((e) => e.name === 'db.dat');
    assert.ok(entry?.extentLists && entry.pageHashes === undefined, 'db.dat kept as a page file without page hashes');
    assert.deepEqual(affectedBy(await verifyWith(repo, 1), repairedId), [], 'the repaired snapshot verifies clean with data');
    const out = join(work.path, `restore-kept-${name}`);
    await restoreTo(repo, repairedId, out);
    assert.ok((await readFile(join(out, 'db.dat'))).equals(db), 'db.dat restores byte for byte');
  }

  it('an extent past the end of its piece is damage naming the file, with data and without; repair snapshots leaves the file out', async () => {
    const past = await craftVariant(repo, good, 'db.dat', async (entry, store) => {
      const listId = (entry.extentLists ?? [])[0] as string;
      const list = Buffer.from(await readPiece(repo, listId));
      const first = [...decodeExtents(list, listId)][0];
      assert.ok(first);
      // Shifted by one byte: the extents still add up to the size, but the first reaches one byte past its piece.
      encodeExtent({ id: Buffer.from(first.id), offset: first.offset + 1, length: first.length }, list, 0);
      return { ...entry, extentLists: [await store(PieceType.list, list)] };
    });
    for (const readData of [0, 1]) {
      const affected = affectedBy(await verifyWith(repo, readData), past);
      assert.equal(affected.length, 1, `readData ${readData}: ${JSON.stringify(affected)}`);
      assert.equal(affected[0]?.path, 'db.dat');
      assert.match(affected[0]?.problem ?? '', /^an extent names bytes 1-\d+ of piece [0-9a-f]{64}, which has \d+$/);
    }
    const repaired = await repairSnapshots(repo, repairOptions([past], false));
    const fix = repaired.snapshots[0];
    assert.deepEqual([fix?.status, fix?.removed.map((r) => r.path)], ['repaired', ['db.dat']]);
    const out = join(work.path, 'restore-repaired');
    await restoreTo(repo, fix?.newId as string, out);
    assert.equal(await readFile(join(out, 'notes.txt'), 'utf8'), 'an ordinary file\n', 'the rest of the snapshot stays');
  });

  it('extents that do not add up to the size, and page-hash lists of the wrong length, are damage naming the file', async () => {
    const short = await craftVariant(repo, good, 'db.dat', async (entry) => ({ ...entry, size: (entry.size ?? 0) - 1 }));
    const hashes = await craftVariant(repo, good, 'db.dat', async (entry, store) => {
      const list = await readPiece(repo, (entry.pageHashes ?? [])[0] as string);
      return { ...entry, pageHashes: [await store(PieceType.list, list.subarray(0, list.length - PAGE_HASH_BYTES))] };
    });
    const extra = await craftVariant(repo, good, 'db.dat', async (entry, store) => {
      const lists = entry.pageHashes ?? [];
      return { ...entry, pageHashes: [...lists, await store(PieceType.list, Buffer.alloc(PAGE_HASH_BYTES))] };
    });
    const missing = await craftVariant(repo, good, 'db.dat', async (entry) => ({ ...entry, pageHashes: ['ab'.repeat(32)] }));
    for (const readData of [0, 1]) {
      const report = await verifyWith(repo, readData);
      assert.deepEqual(affectedBy(report, short), [
        { path: 'db.dat', problem: `the extents add up to ${db.length} bytes, not the file's ${db.length - 1}` },
      ]);
      assert.deepEqual(affectedBy(report, hashes), [
        { path: 'db.dat', problem: `the page hash lists hold 159 hashes for 160 pages (${db.length} bytes of 8192-byte pages)` },
      ]);
      assert.deepEqual(affectedBy(report, extra), [
        { path: 'db.dat', problem: `the page hash lists hold 161 hashes for 160 pages (${db.length} bytes of 8192-byte pages)` },
      ]);
      assert.deepEqual(affectedBy(report, missing), [{ path: 'db.dat', problem: `page hash list ${'ab'.repeat(32)} is missing` }]);
    }
    // repair snapshots keeps db.dat in each of the three hash-only cases (its data is whole), without the hashes;
    // the size one is left out.
    const repaired = await repairSnapshots(repo, repairOptions([short, hashes, extra, missing], false));
    const by = new Map(repaired.snapshots.map((r) => [r.id, r]));
    assert.deepEqual(
      [short, hashes, extra, missing].map((id) => [by.get(id)?.removed.map((r) => r.path), by.get(id)?.hashesDropped.map((r) => r.path)]),
      [
        [['db.dat'], []],
        [[], ['db.dat']],
        [[], ['db.dat']],
        [[], ['db.dat']],
      ],
    );
    for (const [i, id] of [hashes, extra, missing].entries()) await keptWithoutHashes(by.get(id)?.newId as string, `hashes-${i}`);
  });

  it('a files drill reads the page-hash lists a restore never reads: one that is gone fails the drill, though the file restores', async () => {
    const env = { CAIRN_REPOSITORY: join(work.path, 'repo'), CAIRN_PASSWORD: PASSPHRASE, CAIRN_DRILL_DIR: join(work.path, 'scratch') };
    const passed = await runCli(['drill', good.id], env);
    assert.equal(passed.code, 0, passed.stdout + passed.stderr);
    const gone = await craftVariant(repo, good, 'db.dat', async (entry) => ({ ...entry, pageHashes: ['ef'.repeat(32)] }));
    const failed = await runCli(['drill', gone], env);
    assert.notEqual(failed.code, 0);
    const report = lastOfType(failed, 'drill') as { ok: boolean; checks: Array<{ name: string; ok: boolean; found: string }> };
    assert.equal(report.ok, false);
    assert.equal(report.checks.find((c) => c.name === 'restore')?.ok, true, 'db.dat itself restores');
    const pieces = report.checks.find((c) => c.name === 'pieces');
    assert.equal(pieces?.ok, false);
    assert.match(pieces?.found ?? '', /efefefef/);
  });
});

describe('page files: tree versions', () => {
  const id = 'cd'.repeat(32);
  const pageEntry = {
    name: 'db.dat',
    type: 'file',
    mode: 0o600,
    uid: 0,
    gid: 0,
    mtimeNs: '0',
    size: 8192,
    pageSize: 8192,
    extentLists: [id],
    pageHashes: [id],
  };
  const tree = (body: unknown): Buffer => Buffer.from(JSON.stringify(body), 'utf8');

  it('a version-1 tree holding a page file is refused (a version-1 reader would drop its references)', () => {
    assert.throws(
      () => decodeTree(tree({ version: 1, entries: [pageEntry] }), 't'),
      (e) => e instanceof DamagedError,
    );
    const hashesOnly = { ...pageEntry, extentLists: undefined };
    assert.throws(
      () => decodeTree(tree({ version: 1, entries: [hashesOnly] }), 't'),
      (e) => e instanceof DamagedError,
    );
    assert.deepEqual(decodeTree(tree({ version: 2, entries: [pageEntry] }), 't').entries, [pageEntry]);
  });

  it('a tree of a version this cairn does not know is refused', () => {
    assert.throws(
      () => decodeTree(tree({ version: 3, entries: [] }), 't'),
      (e) => e instanceof DamagedError,
    );
    assert.throws(
      () => decodeTree(tree({ version: 3, entries: [pageEntry] }), 't'),
      (e) => e instanceof DamagedError,
    );
  });

  it('an extent list is whole records of non-empty extents', () => {
    const list = Buffer.alloc(2 * EXTENT_BYTES);
    encodeExtent({ id: Buffer.alloc(32, 1), offset: 0, length: 10 }, list, 0);
    assert.throws(
      () => [...decodeExtents(list, 'l')],
      (e) => e instanceof DamagedError,
      'the second extent is empty',
    );
    assert.throws(
      () => [...decodeExtents(list.subarray(0, EXTENT_BYTES + 1), 'l')],
      (e) => e instanceof DamagedError,
    );
    assert.equal([...decodeExtents(list.subarray(0, EXTENT_BYTES), 'l')].length, 1);
  });
});
