import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { cp, mkdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { contentSlices } from '../../../agent/core/file-content.ts';
import { packKey } from '../../../agent/core/layout.ts';
import { PieceReader, type FrameOpener } from '../../../agent/core/piece-reader.ts';
import { Repository } from '../../../agent/core/repository.ts';
import { decodeTree, type TreeEntry } from '../../../agent/core/tree.ts';
import { LANE_FILE_BYTES } from '../../../agent/files/file-lanes.ts';
import { Restorer } from '../../../agent/files/restorer.ts';
import { FrameThreads } from '../../../agent/pipeline/frame-threads.ts';
import { ThreadStoppedError } from '../../../agent/pipeline/thread-pool.ts';
import { silentProgress } from '../../../agent/progress/progress.ts';
import { FileStorage } from '../../../agent/storage/file.ts';
import { PASSPHRASE, backupDir, fileRepo, initSmallRepo, restoreTo, tempDir } from '../../helpers/repo.ts';

/**
 * Large files are restored side by side (files/file-lanes.ts): the walk hands a large file to a
 * lane and goes on to the next one. These tests hold one file's data back and check the next is
 * fetched meanwhile (before lanes, the read-ahead filled with the first file's pieces and the restore never
 * asked for the next: a stall), and that damage in a lane's file fails or skips that file alone.
 */
const BIG = LANE_FILE_BYTES + 300_000;

/** File storage whose ranged reads of one frame wait until `release` is called. */
class GatedStorage extends FileStorage {
  held: { key: string; offset: number } | undefined;
  private readonly gate = Promise.withResolvers<undefined>();
  onRequest: ((key: string, offset: number) => void) | undefined;

  release(): void {
    this.gate.resolve(undefined);
  }

  override async getRange(key: string, offset: number, length: number): Promise<Buffer> {
    this.onRequest?.(key, offset);
    if (this.held && this.held.key === key && this.held.offset === offset) await this.gate.promise;
    return super.getRange(key, offset, length);
  }
}

describe('large files restored side by side', () => {
  let work: Awaited<ReturnType<typeof tempDir>>;
  let repoPath: string;
  let data: string;
  let snapshotId: string;
  let entries: Map<string, TreeEntry>;
  let repo: Repository;
  before(async () => {
    work = await tempDir('file-lanes');
    repoPath = join(work.path, 'repo');
    data = join(work.path, 'data');
    await mkdir(data);
    for (const name of ['a.bin', 'b.bin', 'c.bin']) await writeFile(join(data, name), randomBytes(BIG));
    await writeFile(join(data, 'small.txt'), 'small\n');
    repo = await initSmallRepo(fileRepo(repoPath));
    snapshotId = (await backupDir(repo, data)).id;
    const snapshot = await repo.readSnapshot(snapshotId);
    const reader = new PieceReader(repo, await repo.loadIndex());
    // A backup of one directory holds its entries at the snapshot's root (and restores them into the target).
    entries = new Map(decodeTree(await reader.read(Buffer.from(snapshot.tree, 'hex')), snapshot.tree).entries.map((e) => [e.name, e]));
    assert.deepEqual([...entries.keys()].sort(), ['a.bin', 'b.bin', 'c.bin', 'small.txt']);
  });
  after(() => work.remove());

  /** Where a file's slice `which` lives: its pack object's key and frame offset. */
  async function frameOf(name: string, which: 'first' | 'early' | 'middle'): Promise<{ key: string; offset: number }> {
    const index = await repo.loadIndex();
    const reader = new PieceReader(repo, index);
    const ids: Buffer[] = [];
    for await (const slice of contentSlices(entries.get(name) as TreeEntry, reader)) ids.push(slice.id);
    const where = (id: Buffer): { key: string; offset: number } => {
      const location = reader.location(id);
      return { key: packKey(location.packId), offset: location.frameOffset };
    };
    if (which !== 'early') return where(ids[which === 'first' ? 0 : Math.floor(ids.length / 2)] as Buffer);
    // An early frame that does not also hold small.txt (backups pack files side by side).
    const small = where(await firstSlice('small.txt', reader));
    return ids
      .slice(10)
      .map(where)
      .find((frame) => frame.key !== small.key || frame.offset !== small.offset) as { key: string; offset: number };
  }

  /** A copy of the repository with one byte of each given frame flipped, opened. */
  async function damagedCopy(name: string, frames: Array<{ key: string; offset: number }>): Promise<Repository> {
    const copy = join(work.path, name);
    await cp(repoPath, copy, { recursive: true });
    for (const frame of frames) {
      const pack = join(copy, frame.key);
      const bytes = await readFile(pack);
      bytes[frame.offset + 30] = (bytes[frame.offset + 30] as number) ^ 0xff;
      await writeFile(pack, bytes);
    }
    return Repository.open(new FileStorage(copy), PASSPHRASE);
  }

  async function firstSlice(name: string, reader: PieceReader): Promise<Buffer> {
    for await (const slice of contentSlices(entries.get(name) as TreeEntry, reader)) return slice.id;
    throw new Error(`${name} has no content`);
  }

  const digest = async (path: string): Promise<string> =>
    createHash('sha256')
      .update(await readFile(path))
      .digest('hex');

  it(
    'fetches the next large file while the first one’s first piece is held back, and restores all byte for byte',
    { timeout: 120_000 },
    async () => {
      const storage = new GatedStorage(repoPath);
      storage.held = await frameOf('a.bin', 'first');
      const next = await frameOf('b.bin', 'first');
      // The held frame is let go only once b.bin's first frame is asked for: without lanes that never happens.
      storage.onRequest = (key, offset) => {
        if (key === next.key && offset === next.offset) storage.release();
      };
      const gated = await Repository.open(storage, PASSPHRASE);
      const target = join(work.path, 'restored');
      await restoreTo(gated, snapshotId, target);
      for (const name of ['a.bin', 'b.bin', 'c.bin', 'small.txt'])
        assert.equal(await digest(join(target, name)), await digest(join(data, name)), name);
    },
  );

  it(
    'every large file damaged early, under --ignore-errors: each is reported and removed, the rest restored, and the restore ends',
    { timeout: 120_000 },
    async () => {
      // Before, a lane kept pushing pieces into a file being removed; they were held by nobody, the read-ahead
      // filled with them and the restore never ended.
      const damaged = await damagedCopy(
        'all-damaged-repo',
        await Promise.all(['a.bin', 'b.bin', 'c.bin'].map((name) => frameOf(name, 'early'))),
      );
      const target = join(work.path, 'all-damaged');
      const { result } = await restoreTo(damaged, snapshotId, target, { ignoreErrors: true, concurrency: 1 });
      assert.deepEqual(result.errors.map((e) => e.path).sort(), ['a.bin', 'b.bin', 'c.bin']);
      assert.equal(await readFile(join(target, 'small.txt'), 'utf8'), 'small\n');
    },
  );

  it(
    'a frame thread that stops fails the restore even under --ignore-errors: it says nothing about the data',
    { timeout: 120_000 },
    async () => {
      const frames = new FrameThreads(repo.pieceIdKey(), 1);
      let opened = 0;
      const opener: FrameOpener = {
        open(request) {
          // The pool stops after a few frames, as when its thread dies.
          if (++opened === 3) void frames.close();
          return frames.open(request);
        },
      };
      const reader = new PieceReader(repo, await repo.loadIndex(), { opener });
      const target = join(work.path, 'thread-stopped');
      await mkdir(target);
      const restorer = new Restorer(reader, {
        target,
        includes: [],
        force: false,
        ignoreErrors: true,
        readAheadBytes: 8 << 20,
        progress: silentProgress,
      });
      await assert.rejects(restorer.run(await repo.readSnapshot(snapshotId)), ThreadStoppedError);
      await frames.close();
    },
  );

  it('a damaged frame in a lane’s file fails the restore naming that file, and leaves no part of it', { timeout: 120_000 }, async () => {
    const damaged = await damagedCopy('damaged-repo', [await frameOf('b.bin', 'middle')]);

    const failed = join(work.path, 'failed');
    await assert.rejects(restoreTo(damaged, snapshotId, failed), /cannot restore b\.bin: .*failed authentication/);
    await assert.rejects(stat(join(failed, 'b.bin')), { code: 'ENOENT' });

    const skipped = join(work.path, 'skipped');
    const { result } = await restoreTo(damaged, snapshotId, skipped, { ignoreErrors: true });
    assert.deepEqual(
      result.errors.map((e) => e.path),
      ['b.bin'],
    );
    await assert.rejects(stat(join(skipped, 'b.bin')), { code: 'ENOENT' });
    for (const name of ['a.bin', 'c.bin', 'small.txt'])
      assert.equal(await digest(join(skipped, name)), await digest(join(data, name)), name);
  });
});
