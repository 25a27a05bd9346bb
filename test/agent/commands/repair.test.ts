import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { CairnError } from '../../../agent/core/errors.ts';
import { INDEX_PREFIX, LOCKS_PREFIX, PACKS_PREFIX, SNAPSHOTS_PREFIX, packKey } from '../../../agent/core/layout.ts';
import { writeDamageMarkers } from '../../../agent/core/damage.ts';
import { PieceType, type IndexEntry, type PieceLocation } from '../../../agent/core/pack.ts';
import { PieceReader } from '../../../agent/core/piece-reader.ts';
import { decodeTree } from '../../../agent/core/tree.ts';
import { Repository } from '../../../agent/core/repository.ts';
import type { DeletableStorage, ObjectInfo, PutOptions, Storage } from '../../../agent/core/storage.ts';
import { repairIndex } from '../../../agent/commands/repair-index.ts';
import { repairPacks } from '../../../agent/commands/repair-packs.ts';
import { REPAIRED_TAG, repairSnapshots } from '../../../agent/commands/repair-snapshots.ts';
import { distinctProblems, repairHint } from '../../../agent/commands/repair-hint.ts';
import { removeLocks } from '../../../agent/commands/unlock.ts';
import { silentProgress } from '../../../agent/progress/progress.ts';
import { FileStorage } from '../../../agent/storage/file.ts';
import { lastOfType, runCli } from '../../helpers/cli.ts';
import { PASSPHRASE, backupDir, initSmallRepo, restoreTo, tempDir } from '../../helpers/repo.ts';
import { describeTree } from '../../helpers/tree.ts';

const who = { host: 'test-host', user: 'tester' };
const library = { who, progress: silentProgress, concurrency: 2 };

/**
 * A stand-in for a host's create-only role (S3 PutObject with If-None-Match
 * only, GCS objectCreator): the real file storage, whose deletes are refused
 * the way a cloud backend reports an access denial.
 */
class CreateOnlyStorage implements DeletableStorage {
  readonly location: string;
  readonly atomicCreate: boolean;
  deletesRefused = 0;
  private readonly inner: DeletableStorage;
  constructor(inner: DeletableStorage) {
    this.inner = inner;
    this.location = inner.location;
    this.atomicCreate = inner.atomicCreate;
  }
  get(key: string): Promise<Buffer> {
    return this.inner.get(key);
  }
  getRange(key: string, offset: number, length: number): Promise<Buffer> {
    return this.inner.getRange(key, offset, length);
  }
  put(key: string, data: Buffer, options?: PutOptions): Promise<void> {
    return this.inner.put(key, data, options);
  }
  stat(key: string): Promise<ObjectInfo | undefined> {
    return this.inner.stat(key);
  }
  list(prefix: string): AsyncIterable<ObjectInfo> {
    return this.inner.list(prefix);
  }
  delete(key: string): Promise<void> {
    this.deletesRefused++;
    return Promise.reject(
      new CairnError('Cairn.Storage', `access denied: delete ${key} in ${this.location}`, {
        hint: 'hosts are not meant to delete: use operator credentials',
      }),
    );
  }
}

async function keys(storage: Storage, prefix: string): Promise<string[]> {
  const out: string[] = [];
  for await (const o of storage.list(prefix)) out.push(o.key);
  return out.sort();
}

/** The repository's index, snapshots and packs: what a repair changes. */
async function contents(storage: Storage): Promise<string[]> {
  return [...(await keys(storage, INDEX_PREFIX)), ...(await keys(storage, SNAPSHOTS_PREFIX)), ...(await keys(storage, PACKS_PREFIX))];
}

async function indexEntries(repo: Repository): Promise<IndexEntry[]> {
  return [...(await repo.loadIndex()).entries()];
}

describe('the hint after verify and check', () => {
  const pack = `packs/ab/${'ab'.repeat(32)}`;
  it('counts each distinct problem once, however many files and snapshots it affects, and a directory by its cause', () => {
    const why = `pack ${'ab'.repeat(32)} is missing`;
    const report = {
      problems: [{ object: pack, problem: why }],
      affected: [
        { snapshot: 'a', path: 'x', problem: why },
        { snapshot: 'b', path: 'x', problem: why },
        { snapshot: 'b', path: 'd', problem: `directory unreadable: ${why}` },
        { snapshot: 'b', path: 'y', problem: `piece ${'cd'.repeat(32)} is missing` },
      ],
    };
    assert.equal(distinctProblems(report), 2);
    assert.equal(distinctProblems({ problems: [], affected: [report.affected[3] as (typeof report.affected)[number]] }), 1);
  });
  it('names the repair that mends what was found', () => {
    const missingPiece = { snapshot: 'a', path: 'x', problem: `piece ${'cd'.repeat(32)} is missing` };
    assert.match(repairHint({ problems: [{ object: 'index', problem: 'bad' }], affected: [] }), /^`cairn repair index`/);
    assert.match(repairHint({ problems: [], affected: [missingPiece] }), /^`cairn repair index`.*`cairn repair snapshots`/);
    const packs = repairHint({ problems: [{ object: pack, problem: 'frame failed' }], affected: [missingPiece] });
    assert.match(packs, /^`cairn repair packs`.*`cairn repair snapshots`/);
    assert.doesNotMatch(packs, /repair index/);
    const manifest = repairHint({ problems: [{ object: `snapshots/${'ef'.repeat(32)}`, problem: 'unreadable' }], affected: [] });
    assert.match(manifest, /`cairn forget efefefef`/);
    assert.doesNotMatch(manifest, /cairn repair/);
    const logs = repairHint({ problems: [{ object: 'logs/pg/files/000000010000000000000001', problem: 'missing' }], affected: [] });
    assert.match(logs, /`cairn pitr status`/);
    assert.doesNotMatch(logs, /cairn repair/);
  });
});

describe('cairn repair', () => {
  let work: Awaited<ReturnType<typeof tempDir>>;
  before(async () => {
    work = await tempDir('repair');
  });
  after(async () => {
    await work.remove();
  });

  async function setup(
    name: string,
  ): Promise<{ path: string; storage: FileStorage; repo: Repository; src: string; env: Record<string, string> }> {
    const path = join(work.path, `${name}-repo`);
    const storage = new FileStorage(path);
    const repo = await initSmallRepo(storage);
    const src = join(work.path, `${name}-src`);
    await mkdir(join(src, 'sub'), { recursive: true });
    return { path, storage, repo, src, env: { CAIRN_REPOSITORY: path, CAIRN_PASSWORD: PASSPHRASE } };
  }

  it('repair index: with every index file deleted, rebuilds the index from the packs; restore works and check is clean', async () => {
    const { storage, repo, src, env } = await setup('index');
    await writeFile(join(src, 'a.bin'), randomBytes(400_000));
    await writeFile(join(src, 'sub', 'b.txt'), 'small file\n'.repeat(1000));
    const snapshot = await backupDir(repo, src);
    await writeFile(join(src, 'c.bin'), randomBytes(200_000));
    const second = await backupDir(repo, src);
    const expected = await describeTree(src);
    const before = (await indexEntries(repo)).length;
    for (const key of await keys(storage, INDEX_PREFIX)) await storage.delete(key);

    // check finds the damage, counts it (not "0 problem(s)") and points to the right repair.
    const check = await runCli(['check'], env);
    assert.equal(check.code, 14, check.stderr);
    const found = lastOfType(check, 'verify') as unknown as Parameters<typeof distinctProblems>[0] & { distinctProblems: number };
    assert.ok(found.distinctProblems > 0);
    assert.equal(found.distinctProblems, distinctProblems(found));
    const counted = /the repository has (\d+) problem\(s\) affecting (\d+) file\(s\)/.exec(check.stderr);
    assert.ok(counted, check.stderr);
    assert.equal(Number(counted[1]), found.distinctProblems);
    assert.ok(Number(counted[1]) > 0);
    assert.match(check.stderr, /hint: `cairn repair index` rebuilds the index from the packs/);

    // --dry-run says what the new index would hold and writes nothing.
    const dry = await runCli(['repair', 'index', '--dry-run'], env);
    assert.equal(dry.code, 0, dry.stderr);
    const planned = lastOfType(dry, 'repair-index');
    assert.equal(planned?.pieces, before);
    assert.equal(planned?.piecesAdded, before);
    assert.deepEqual(await keys(storage, INDEX_PREFIX), []);

    const repaired = await runCli(['repair', 'index'], env);
    assert.equal(repaired.code, 0, repaired.stderr);
    const report = lastOfType(repaired, 'repair-index');
    assert.equal(report?.pieces, before);
    assert.equal(report?.indexFilesWritten, 1);
    assert.equal((await indexEntries(await Repository.open(storage, PASSPHRASE))).length, before);

    for (const id of [snapshot.id, second.id]) {
      const target = join(work.path, `index-restore-${id.slice(0, 8)}`);
      await restoreTo(repo, id, target);
      if (id === second.id) assert.deepEqual(await describeTree(target), expected);
    }
    const clean = await runCli(['check'], env);
    assert.equal(clean.code, 0, clean.stderr);
    assert.equal(lastOfType(clean, 'verify')?.ok, true);

    // Run again over a healthy repository, the old index files are replaced: still one file, same entries.
    const again = await repairIndex(repo, storage, { ...library, dryRun: false });
    assert.equal(again.indexFilesRemoved, 1);
    assert.equal(again.piecesAdded, 0);
    assert.equal(again.piecesDropped, 0);
    assert.equal((await keys(storage, INDEX_PREFIX)).length, 1);
  });

  it("repair index: drops a forged index file's locations and replaces an unreadable index file", async () => {
    const { storage, repo, src, env } = await setup('forged');
    await writeFile(join(src, 'a.bin'), randomBytes(150_000));
    const snapshot = await backupDir(repo, src);
    const real = await indexEntries(repo);
    // A host with the key writes an index file placing every data piece in a pack that does not exist,
    // and junk under index/: the first forges locations, the second makes every index load fail.
    const junkPack = randomBytes(32).toString('hex');
    const forged = real.filter((e) => e.type === PieceType.data).map((e) => ({ ...e, packId: junkPack }));
    await repo.writeIndex(forged);
    await storage.put(`${INDEX_PREFIX}${randomBytes(32).toString('hex')}`, randomBytes(300), { ifAbsent: true });
    const check = await runCli(['check'], env);
    assert.equal(check.code, 14, check.stderr);
    assert.match(check.stderr, /hint: `cairn repair index`/);

    const report = await repairIndex(repo, storage, { ...library, dryRun: false });
    assert.equal(report.unreadableIndexFiles.length, 1);
    assert.equal(report.piecesDropped, forged.length);
    assert.equal(report.pieces, real.length);
    assert.equal(report.indexFilesRemoved, 3);
    const after = await indexEntries(await Repository.open(storage, PASSPHRASE));
    assert.ok(after.every((e) => e.packId !== junkPack));
    assert.equal(after.length, real.length);
    const clean = await runCli(['check'], env);
    assert.equal(clean.code, 0, clean.stderr);
    await restoreTo(repo, snapshot.id, join(work.path, 'forged-restore'));
  });

  it('repair packs: a corrupted pack fails verify; repair drops its damaged pieces, the next backup uploads them again, verify --read-data passes', async () => {
    const { path, storage, repo, src, env } = await setup('packs');
    await writeFile(join(src, 'a.bin'), randomBytes(300_000));
    await writeFile(join(src, 'sub', 'b.bin'), randomBytes(300_000));
    const first = await backupDir(repo, src);
    const expected = await describeTree(src);

    // Flip a byte inside a data frame: the trailer stays intact, so only reading the data finds it.
    const victim = (await indexEntries(repo)).find((e) => e.type === PieceType.data) as IndexEntry;
    const file = join(path, packKey(victim.packId));
    const bytes = await readFile(file);
    bytes[victim.frameOffset + 30] = (bytes[victim.frameOffset + 30] as number) ^ 0xff;
    await rm(file);
    await writeFile(file, bytes);

    const failed = await runCli(['verify', '--read-data'], env);
    assert.equal(failed.code, 14, failed.stderr);
    const check = await runCli(['check'], env);
    assert.equal(check.code, 0, 'check reads no data: it cannot see a flipped byte');

    const dry = await runCli(['repair', 'packs', '--dry-run'], env);
    assert.equal(dry.code, 0, dry.stderr);
    const planned = lastOfType(dry, 'repair-packs') as { damagedPacks: Array<{ pack: string; lost: number }>; piecesLost: number };
    assert.deepEqual(
      planned.damagedPacks.map((p) => p.pack),
      [packKey(victim.packId)],
    );
    assert.ok(planned.piecesLost > 0);
    assert.ok((await storage.stat(packKey(victim.packId))) !== undefined, 'a dry run deletes nothing');

    const unknown = await runCli(['repair', 'packs', 'ffff0000'], env);
    assert.equal(unknown.code, 13, unknown.stderr);
    assert.match(unknown.stderr, /no indexed pack ffff0000/);

    // The pack named as verify names it: only that one is read.
    const repaired = await runCli(['repair', 'packs', packKey(victim.packId)], env);
    assert.equal(repaired.code, 0, repaired.stderr);
    const report = lastOfType(repaired, 'repair-packs') as {
      piecesLost: number;
      packsRemoved: number;
      indexFilesRemoved: number;
      packsChecked: number;
    };
    assert.equal(report.packsChecked, 1);
    assert.equal(report.piecesLost, planned.piecesLost);
    assert.equal(report.packsRemoved, 1);
    assert.equal(await storage.stat(packKey(victim.packId)), undefined);
    const reopened = await Repository.open(storage, PASSPHRASE);
    assert.equal((await reopened.loadIndex()).has(victim.id), false, 'the damaged piece is in no index');
    assert.ok((await indexEntries(reopened)).every((e) => e.packId !== victim.packId));

    // The files are unchanged on disk, but their pieces are gone from the index: the backup reads and uploads them again.
    const next = await backupDir(reopened, src);
    assert.ok(next.summary.piecesAdded >= report.piecesLost, `re-uploaded ${next.summary.piecesAdded} piece(s)`);
    const passed = await runCli(['verify', '--read-data'], env);
    assert.equal(passed.code, 0, passed.stderr);
    assert.equal(lastOfType(passed, 'verify')?.ok, true);
    // Same content, same ids: the snapshot taken before the damage is whole again.
    const target = join(work.path, 'packs-restore');
    await restoreTo(reopened, first.id, target);
    assert.deepEqual(await describeTree(target), expected);
  });

  it('repair snapshots: a snapshot that lost a pack gets a repaired copy that restores the rest; the original stays listed', async () => {
    const { path, storage, repo, src, env } = await setup('snapshots');
    await writeFile(join(src, 'keep.bin'), randomBytes(100_000));
    await writeFile(join(src, 'sub', 'keep.txt'), 'kept\n');
    await backupDir(repo, src);
    // A file large enough for packs of its data alone (packs are 1 MiB here; trees are written last).
    await writeFile(join(src, 'sub', 'lost.bin'), randomBytes(2_500_000));
    const damaged = await backupDir(repo, src);
    const entries = await indexEntries(repo);
    const byPack = new Map<string, IndexEntry[]>();
    for (const e of entries) byPack.set(e.packId, [...(byPack.get(e.packId) ?? []), e]);
    const firstPacks = new Set(entries.filter((e) => e.type !== PieceType.data).map((e) => e.packId));
    const lostPack = [...byPack].find(
      ([packId, list]) => !firstPacks.has(packId) && list.length > 5 && list.every((e) => e.type === PieceType.data),
    );
    assert.ok(lostPack, 'a pack holding only data of lost.bin');
    await rm(join(path, packKey(lostPack[0])));
    // What the repaired snapshot holds: everything the backup saw but the file whose data is gone.
    const expected = (await describeTree(src)).filter((d) => d.path !== 'sub/lost.bin');

    // check sees the lost pack: one problem (however many files and snapshots it affects), and the way out.
    const check = await runCli(['check'], env);
    assert.equal(check.code, 14, check.stderr);
    assert.match(check.stderr, /the repository has 1 problem\(s\) affecting 1 file\(s\) in 1 snapshot\(s\)/);
    assert.match(check.stderr, /hint: `cairn repair packs` drops the damaged pieces.*`cairn repair snapshots` then writes snapshots/);

    const dry = await runCli(['repair', 'snapshots', '--dry-run'], env);
    assert.equal(dry.code, 0, dry.stderr);
    const planned = lastOfType(dry, 'repair-snapshots') as {
      snapshots: Array<{ id: string; status: string; removed: Array<{ path: string }> }>;
    };
    assert.deepEqual(
      planned.snapshots.filter((s) => s.status !== 'intact').map((s) => [s.id, s.status, s.removed.map((r) => r.path)]),
      [[damaged.id, 'repaired', ['sub/lost.bin']]],
    );
    assert.equal((await keys(storage, SNAPSHOTS_PREFIX)).length, 2, 'a dry run writes no manifest');

    const repaired = await runCli(['repair', 'snapshots', damaged.id.slice(0, 8)], env);
    assert.equal(repaired.code, 0, repaired.stderr);
    const result = lastOfType(repaired, 'repair-snapshots') as { snapshots: Array<{ id: string; status: string; newId: string }> };
    const newId = result.snapshots[0]?.newId as string;
    assert.equal(result.snapshots[0]?.status, 'repaired');

    const listed = await runCli(['snapshots'], env);
    const ids = JSON.stringify(listed.lines);
    assert.ok(ids.includes(damaged.id), 'the original is still listed');
    assert.ok(ids.includes(newId));
    const manifest = await repo.readSnapshot(newId);
    assert.equal(manifest.original, damaged.id);
    assert.ok(manifest.tags.includes(REPAIRED_TAG));
    assert.equal(manifest.time, damaged.time);

    const target = join(work.path, 'snapshots-restore');
    await restoreTo(repo, newId, target);
    assert.deepEqual(await describeTree(target), expected);

    // Once is enough: a second run finds the repaired copy and writes nothing.
    const again = await repairSnapshots(repo, { ...library, refs: [], dryRun: false, readData: false });
    assert.deepEqual(
      again.snapshots.filter((s) => s.status !== 'intact').map((s) => [s.id, s.status, s.newId]),
      [[damaged.id, 'already-repaired', newId]],
    );
    assert.equal((await keys(storage, SNAPSHOTS_PREFIX)).length, 3);
  });

  it('repair snapshots: a piece held only where a damage marker says it is bad counts as missing', async () => {
    const { repo, src } = await setup('marked');
    await writeFile(join(src, 'good.bin'), randomBytes(50_000));
    await writeFile(join(src, 'sub', 'marked.bin'), randomBytes(50_000));
    const snapshot = await backupDir(repo, src);
    const index = await repo.loadIndex();
    const tree = decodeTree(await new PieceReader(repo, index).read(Buffer.from(snapshot.tree, 'hex')), snapshot.tree);
    const sub = tree.entries.find((e) => e.name === 'sub')?.subtree as string;
    const subTree = decodeTree(await new PieceReader(repo, index).read(Buffer.from(sub, 'hex')), sub);
    const piece = subTree.entries.find((e) => e.name === 'marked.bin')?.content?.[0] as string;
    const location = index.get(Buffer.from(piece, 'hex')) as PieceLocation;
    await writeDamageMarkers(
      repo,
      { packs: [{ pack: location.packId, pieces: [piece], problem: 'test: found damaged' }], snapshots: [snapshot.id] },
      { who, tool: 'test', source: 'verify' },
    );
    const report = await repairSnapshots(repo, { ...library, refs: [snapshot.id], dryRun: false, readData: false });
    assert.deepEqual(
      report.snapshots.map((s) => [s.status, s.removed.map((r) => r.path)]),
      [['repaired', ['sub/marked.bin']]],
    );
    const target = join(work.path, 'marked-restore');
    await restoreTo(repo, report.snapshots[0]?.newId as string, target);
    assert.deepEqual(
      (await describeTree(target)).map((d) => d.path),
      ['good.bin', 'sub'],
    );
  });

  it('under credentials that cannot delete, repair index and repair packs refuse before changing anything', async () => {
    const { path, storage, repo, src } = await setup('create-only');
    await writeFile(join(src, 'a.bin'), randomBytes(200_000));
    await backupDir(repo, src);
    await backupDir(repo, src, { tags: ['second'] });
    const createOnly = new CreateOnlyStorage(storage);
    const hostRepo = await Repository.open(createOnly, PASSPHRASE);
    const before = await contents(storage);
    for (const [name, run] of [
      ['cairn repair index', () => repairIndex(hostRepo, createOnly, { ...library, dryRun: false })],
      ['cairn repair packs', () => repairPacks(hostRepo, createOnly, { ...library, dryRun: false })],
    ] as const) {
      await assert.rejects(run(), (error: unknown) => {
        assert.ok(error instanceof CairnError);
        assert.equal(error.code, 'Cairn.Storage');
        assert.equal(error.exitCode, 16);
        assert.ok(error.message.includes(`\`${name}\` deletes`), error.message);
        assert.match(error.message, /these credentials cannot delete .*nothing was changed/);
        assert.match(error.hint ?? '', /operator credentials/);
        return true;
      });
    }
    assert.equal(createOnly.deletesRefused, 2);
    assert.deepEqual(await contents(storage), before, 'no index file, pack or manifest was written or removed');
    // Their dry runs need no delete rights, and repair snapshots deletes nothing at all.
    const dry = await repairIndex(hostRepo, createOnly, { ...library, dryRun: true });
    assert.equal(dry.indexFilesBefore, (await readdir(join(path, 'index'))).length);
    const snapshots = await repairSnapshots(hostRepo, { ...library, refs: [], dryRun: false, readData: true });
    assert.ok(snapshots.snapshots.every((s) => s.status === 'intact'));
    assert.equal(createOnly.deletesRefused, 2);
    assert.deepEqual(await contents(storage), before);
    // The refused probes are released lock records: they block no one, and an operator's unlock clears them.
    assert.ok((await keys(storage, LOCKS_PREFIX)).length > 0);
    await removeLocks(repo, storage, { who, progress: silentProgress, all: false });
    assert.deepEqual(await keys(storage, LOCKS_PREFIX), []);
  });
});
