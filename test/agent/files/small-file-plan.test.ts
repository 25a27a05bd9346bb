import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { link, mkdir, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { PieceLocation } from '../../../agent/core/pack.ts';
import { PieceReader } from '../../../agent/core/piece-reader.ts';
import { Repository } from '../../../agent/core/repository.ts';
import { Restorer } from '../../../agent/files/restorer.ts';
import { silentProgress } from '../../../agent/progress/progress.ts';
import { backupDir, fileRepo, initSmallRepo, tempDir } from '../../helpers/repo.ts';

/** Backups that each stored every BACKUPS-th file: in the last snapshot, neighbours lie in different frames (more than the reader keeps). */
const BACKUPS = 24;
const FILES = 480;

/** A PieceReader that counts how often each frame is opened (fetched, decrypted and decompressed). */
class FrameCountingReader extends PieceReader {
  readonly opened = new Map<string, number>();
  override decode(location: PieceLocation, bytes: Buffer, key: Buffer): ReturnType<PieceReader['decode']> {
    const frame = `${location.packId}:${location.frameOffset}`;
    this.opened.set(frame, (this.opened.get(frame) ?? 0) + 1);
    return super.decode(location, bytes, key);
  }
}

/**
 * Small files stored by many different backups lie in many frames, neighbours in the walk in
 * different ones. A restore opens each frame once for all the small files it holds, not once per
 * file in walk order (which opened each frame here FILES / BACKUPS times).
 */
describe('small files scattered over the frames of many backups', () => {
  let work: Awaited<ReturnType<typeof tempDir>>;
  let src = '';
  let snapshot = '';
  let repo: Repository;

  before(async () => {
    work = await tempDir('small-file-plan');
    src = join(work.path, 'src');
    await mkdir(src);
    repo = await initSmallRepo(fileRepo(join(work.path, 'repo')));
    // Under the small repository's minimum piece size: each file is one piece.
    for (let i = 0; i < FILES; i++) await writeFile(join(src, `f${String(i).padStart(3, '0')}`), randomBytes(3000));
    for (let b = 0; b < BACKUPS; b++) {
      const stage = join(work.path, `stage${b}`);
      await mkdir(stage);
      for (let i = b; i < FILES; i += BACKUPS) await link(join(src, `f${String(i).padStart(3, '0')}`), join(stage, `f${i}`));
      await backupDir(repo, stage);
      await rm(stage, { recursive: true });
    }
    snapshot = (await backupDir(repo, src)).id;
  });
  after(() => work.remove());

  it('opens each frame once and restores every file exactly', async () => {
    const reader = new FrameCountingReader(repo, await repo.loadIndex(), { cacheFrames: 8 });
    const target = join(work.path, 'out');
    await mkdir(target);
    const result = await new Restorer(reader, {
      target,
      includes: [],
      force: false,
      ignoreErrors: false,
      readAheadBytes: 32 << 20,
      progress: silentProgress,
    }).run(await repo.readSnapshot(snapshot));
    assert.equal(result.files, FILES);
    const names = (await readdir(target)).sort();
    assert.equal(names.length, FILES);
    for (const name of names) assert.ok((await readFile(join(target, name))).equals(await readFile(join(src, name))), name);
    // The premise: the files span many frames.
    assert.ok(reader.opened.size >= BACKUPS, `${reader.opened.size} frames opened`);
    const reopened = [...reader.opened].filter(([, n]) => n > 1);
    assert.deepEqual(reopened, [], 'no frame opened twice');
  });
});
