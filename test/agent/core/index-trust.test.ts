import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { prune } from '../../../agent/commands/prune.ts';
import { CairnError } from '../../../agent/core/errors.ts';
import { PACKS_PREFIX, idFromKey, packKey, snapshotKey } from '../../../agent/core/layout.ts';
import { PieceType, type IndexEntry } from '../../../agent/core/pack.ts';
import { PieceIndex } from '../../../agent/core/piece-index.ts';
import { PieceReader } from '../../../agent/core/piece-reader.ts';
import { collectReferences } from '../../../agent/core/references.ts';
import { Repository, type Who } from '../../../agent/core/repository.ts';
import type { DeletableStorage, ObjectInfo, PutOptions } from '../../../agent/core/storage.ts';
import { PackWriter } from '../../../agent/pipeline/pack-writer.ts';
import { silentProgress } from '../../../agent/progress/progress.ts';
import { MemoryStorage } from '../../helpers/memory-storage.ts';
import { PASSPHRASE, SMALL, backupDir, restoreTo, tempDir } from '../../helpers/repo.ts';
import { describeTree } from '../../helpers/tree.ts';

/**
 * Issue 16, item 2 (the index part) and the truncated pack of item 8: a host
 * with the key and create-only rights writes index files and packs of its own.
 * The storage lists objects newest first (the contract promises no order), so
 * the forged objects are the ones a first-location-wins index would believe.
 */
const operator: Who = { host: 'ops-host', user: 'ops' };

/** A storage whose listings come newest first (MemoryStorage lists in insertion order). */
class NewestFirstStorage implements DeletableStorage {
  readonly location: string;
  readonly atomicCreate: boolean;
  readonly inner: MemoryStorage;
  constructor(inner: MemoryStorage) {
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
  async *list(prefix: string): AsyncIterable<ObjectInfo> {
    const all: ObjectInfo[] = [];
    for await (const object of this.inner.list(prefix)) all.push(object);
    yield* all.reverse();
  }
  delete(key: string): Promise<void> {
    return this.inner.delete(key);
  }
}

function isDamaged(error: unknown): boolean {
  assert.ok(error instanceof CairnError, `a CairnError, got ${String(error)}`);
  assert.equal(error.code, 'Cairn.Damaged', error.message);
  assert.equal(error.exitCode, 14);
  return true;
}

describe('index trust (issue 16)', () => {
  let work: Awaited<ReturnType<typeof tempDir>>;
  before(async () => {
    work = await tempDir('index-trust');
  });
  after(() => work.remove());

  async function setup(name: string): Promise<{ storage: NewestFirstStorage; repo: Repository; src: string }> {
    const storage = new NewestFirstStorage(new MemoryStorage());
    const repo = await Repository.init(storage, PASSPHRASE, operator, SMALL);
    const src = join(work.path, name);
    await mkdir(src, { recursive: true });
    await writeFile(join(src, 'a.bin'), randomBytes(400_000));
    await writeFile(join(src, 'b.bin'), randomBytes(300_000));
    return { storage, repo, src };
  }

  const packsOn = (storage: NewestFirstStorage): string[] =>
    [...storage.inner.objects.keys()].map((k) => idFromKey(k, PACKS_PREFIX)).filter((id): id is string => id !== undefined);

  async function restored(repo: Repository, snapshot: string, label: string): Promise<string> {
    const target = join(work.path, `restore-${label}-${randomBytes(3).toString('hex')}`);
    await restoreTo(repo, snapshot, target);
    return target;
  }

  it('an index file mapping every data piece to a junk pack makes prune delete no real pack, and restore still works', async () => {
    const { storage, repo, src } = await setup('forged-index');
    const old = await backupDir(repo, src);
    await writeFile(join(src, 'b.bin'), randomBytes(300_000));
    const kept = await backupDir(repo, src);
    await storage.delete(snapshotKey(old.id)); // forgotten: its own pieces are garbage, the shared ones are not
    // The real packs the kept snapshot uses, from the index as the backups wrote it.
    const before = await repo.loadIndex();
    const used = await collectReferences([kept], new PieceReader(repo, before));
    const usedPacks = new Set([...before.entries()].filter((e) => used.has(e.id)).map((e) => e.packId));
    assert.ok(usedPacks.size > 0);

    // The forger: a junk object under packs/ and an index file (sealed with the key, create-only)
    // placing every data piece there.
    const junk = randomBytes(32).toString('hex');
    await storage.put(packKey(junk), randomBytes(4096), { ifAbsent: true });
    const index = await repo.loadIndex();
    const forged: IndexEntry[] = [...index.entries()]
      .filter((e) => e.type === PieceType.data)
      .map((e) => ({ ...e, packId: junk, frameOffset: 0, frameLength: 64, offsetInFrame: 0 }));
    await repo.writeIndex(forged);

    await prune(repo, storage, {
      who: operator,
      progress: silentProgress,
      concurrency: 2,
      dryRun: false,
      maxUnused: 1, // no repacking: only packs found unused are deleted
      graceMs: 0,
      wait: () => Promise.resolve(),
    });
    const left = new Set(packsOn(storage));
    for (const pack of usedPacks) assert.ok(left.has(pack), `pack ${pack}, which the kept snapshot uses, is still there`);
    assert.deepEqual(await describeTree(await restored(repo, kept.id, 'forged')), await describeTree(src));
  });

  it('content substituted at one location of a piece (a forged pack claiming its id) is refused there and read from the good one', async () => {
    const { repo, src } = await setup('substituted');
    const snapshot = await backupDir(repo, src);
    // The forger writes, under the ids of every data piece, other bytes: frames that authenticate
    // (it has the key) in a pack and index of its own, listed before the real ones.
    const entries = [...(await repo.loadIndex()).entries()].filter((e) => e.type === PieceType.data);
    const writer = new PackWriter(repo, new PieceIndex(), { compression: { codec: 'none' }, concurrency: 1 });
    for (const entry of entries) await writer.add(entry.id, PieceType.data, randomBytes(entry.length));
    await writer.flush();
    assert.deepEqual(await describeTree(await restored(repo, snapshot.id, 'substituted')), await describeTree(src));
    const index = await repo.loadIndex();
    const first = entries[0];
    assert.ok(first);
    assert.equal(index.locations(first.id).length, 2, 'the index keeps both locations of a piece');
    assert.notEqual(index.get(first.id)?.packId, first.packId, 'the forged location is the one listed first');
  });

  it('a truncated pack is damage (exit 14), and --ignore-errors restores everything else', async () => {
    const { storage, repo, src } = await setup('truncated');
    await writeFile(join(src, 'c.bin'), randomBytes(3_000_000)); // spans several 1 MiB packs
    const snapshot = await backupDir(repo, src);
    const index = await repo.loadIndex();
    // A pack of file data only (the trees stay readable), cut to a third.
    const dataOnly = new Map<string, boolean>();
    for (const entry of index.entries()) dataOnly.set(entry.packId, (dataOnly.get(entry.packId) ?? true) && entry.type === PieceType.data);
    const victim = [...dataOnly].find(([, only]) => only)?.[0];
    assert.ok(victim, 'a pack holds only file data');
    const bytes = await storage.get(packKey(victim));
    await storage.inner.put(packKey(victim), bytes.subarray(0, Math.floor(bytes.length / 3)));

    await assert.rejects(restored(repo, snapshot.id, 'truncated'), isDamaged);
    const target = join(work.path, 'restore-truncated-ignore');
    const done = await restoreTo(repo, snapshot.id, target, { ignoreErrors: true });
    assert.ok(done.result.errors.length >= 1, 'the files in the cut-off part are reported');
    assert.ok(
      done.result.errors.every((e) => /truncated/.test(e.error)),
      JSON.stringify(done.result.errors),
    );
    assert.equal(done.result.files + done.result.errors.length, 3, 'every other file was restored');
  });
});
