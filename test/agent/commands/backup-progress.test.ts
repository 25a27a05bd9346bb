import { describe, it, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { PACKS_PREFIX } from '../../../agent/core/layout.ts';
import { Repository } from '../../../agent/core/repository.ts';
import type { ObjectInfo, PutOptions, Storage } from '../../../agent/core/storage.ts';
import type { ProgressEvent, ProgressListener } from '../../../agent/progress/progress.ts';
import { FileStorage } from '../../../agent/storage/file.ts';
import { PASSPHRASE, SMALL, backupDir, tempDir } from '../../helpers/repo.ts';

/** The file backend, keeping the size of each pack once its write has finished, in that order. */
class PackCountingStorage implements Storage {
  readonly location: string;
  readonly atomicCreate: boolean;
  readonly packsStored: number[] = [];
  private readonly inner: FileStorage;
  constructor(inner: FileStorage) {
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
  async put(key: string, data: Buffer, options?: PutOptions): Promise<void> {
    await this.inner.put(key, data, options);
    if (key.startsWith(PACKS_PREFIX)) this.packsStored.push(data.length);
  }
  stat(key: string): Promise<ObjectInfo | undefined> {
    return this.inner.stat(key);
  }
  list(prefix: string): AsyncIterable<ObjectInfo> {
    return this.inner.list(prefix);
  }
}

/**
 * The figures a backup reports while it runs (issue 19): `added` is what the repository holds
 * so far — it moves with every pack stored, also after the walk has ended, and ends at the
 * summary's — and, with totals asked for, the scan beside the backup gives the walk's totals.
 */
describe('backup progress events', () => {
  const dirs: Array<Awaited<ReturnType<typeof tempDir>>> = [];
  after(async () => {
    for (const dir of dirs) await dir.remove();
  });

  /** A repository of 1 MiB packs and 5 MiB of new data in 154 files: several packs, stored while the walk reads and after it. */
  async function setup(): Promise<{ repo: Repository; storage: PackCountingStorage; src: string }> {
    const repoDir = await tempDir('progress-repo');
    const src = await tempDir('progress-src');
    dirs.push(repoDir, src);
    const storage = new PackCountingStorage(new FileStorage(repoDir.path));
    const repo = await Repository.init(storage, PASSPHRASE, { host: 'test-host', user: 'tester' }, SMALL);
    await mkdir(join(src.path, 'small'));
    for (let i = 0; i < 150; i++) await writeFile(join(src.path, 'small', `f${i}`), randomBytes(8_000));
    for (let i = 0; i < 3; i++) await writeFile(join(src.path, `large${i}`), randomBytes(1_300_000));
    await writeFile(join(src.path, 'empty'), '');
    return { repo, storage, src: src.path };
  }

  it('report added as the bytes of the packs stored so far, pack after pack, ending at the summary, with the scanned totals', async () => {
    const { repo, storage, src } = await setup();
    const events: Array<ProgressEvent & { storedThen: number }> = [];
    const sum = (sizes: number[]): number => sizes.reduce((a, b) => a + b, 0);
    const listener: ProgressListener = {
      progress: (event) => void events.push({ ...event, storedThen: sum(storage.packsStored) }),
      warn: (message) => assert.fail(message),
      wantsTotals: true,
      reportEveryMs: 0,
    };
    // One upload at a time: packs are stored (and counted) in one order.
    const snapshot = await backupDir(repo, src, { progress: listener, concurrency: 1 });

    const stored: number[] = [];
    for await (const object of storage.list(PACKS_PREFIX)) stored.push(object.size);
    assert.ok(stored.length >= 4, `several packs (${stored.length})`);
    assert.equal(snapshot.summary.bytesAdded, sum(stored));
    for (const event of events) assert.ok(event.bytesAdded! <= event.storedThen, 'never more than the repository holds');
    // Every value added took is a pack boundary, and every boundary is reported: 0, then each pack stored.
    const prefixSums = storage.packsStored.map((_, i) => sum(storage.packsStored.slice(0, i + 1)));
    assert.deepEqual([...new Set(events.map((e) => e.bytesAdded))], [0, ...prefixSums]);
    const last = events.at(-1)!;
    assert.equal(last.bytesAdded, snapshot.summary.bytesAdded, 'the last event says what the summary says');
    assert.deepEqual(
      [last.files, last.bytes, last.totalFiles, last.totalBytes],
      [154, snapshot.summary.totalBytes, 154, snapshot.summary.totalBytes],
      'the scan counted what the walk stored',
    );
  });

  it('take a re-backup\u2019s totals from its parent snapshot, from the first event, and drop them once the walk counts past them', async () => {
    const { repo, src } = await setup();
    const first = await backupDir(repo, src);
    const record = (): { events: ProgressEvent[]; listener: ProgressListener } => {
      const events: ProgressEvent[] = [];
      return {
        events,
        listener: { progress: (e) => void events.push(e), warn: (m) => assert.fail(m), wantsTotals: true, reportEveryMs: 0 },
      };
    };
    // Unchanged: no scan is needed; the parent's figures are the totals at once (a scan has counted nothing yet then).
    const again = record();
    const second = await backupDir(repo, src, { progress: again.listener });
    assert.equal(second.parent, first.id);
    assert.deepEqual([again.events[0]?.totalFiles, again.events[0]?.totalBytes], [154, first.summary.totalBytes]);
    assert.deepEqual([again.events.at(-1)?.files, again.events.at(-1)?.totalFiles], [154, 154]);

    // Grown past the parent: the estimate is shown while it holds and never below what is done.
    for (let i = 0; i < 40; i++) await writeFile(join(src, 'small', `g${i}`), randomBytes(8_000));
    const grown = record();
    const third = await backupDir(repo, src, { progress: grown.listener });
    assert.equal(third.summary.totalFiles, 194);
    const withTotals = grown.events.filter((e) => e.totalFiles !== undefined);
    assert.ok(withTotals.length > 0 && withTotals.length < grown.events.length, 'shown at first, dropped later');
    for (const e of withTotals) assert.ok(e.files <= e.totalFiles! && e.totalFiles === 154, JSON.stringify(e));
    assert.equal(grown.events.at(-1)?.totalFiles, undefined, 'the last event has no estimate it has passed');
  });

  it('scan for totals only once the listener wants them: a backup done sooner makes no second pass and ends on its own counts', async () => {
    const { repo, src } = await setup();
    const events: ProgressEvent[] = [];
    // Totals wanted an hour in (as JSON progress wants them only from its second event): this backup ends long before.
    const listener: ProgressListener = {
      progress: (e) => void events.push(e),
      warn: (m) => assert.fail(m),
      wantsTotals: true,
      totalsAfterMs: 3_600_000,
      reportEveryMs: 0,
    };
    const snapshot = await backupDir(repo, src, { progress: listener });
    // A scan would have counted the 154 files at once (the first test); none ran, so no event before the last has totals.
    assert.deepEqual(
      events.slice(0, -1).filter((e) => e.totalFiles !== undefined),
      [],
    );
    const last = events.at(-1)!;
    assert.deepEqual(
      [last.files, last.totalFiles, last.totalBytes],
      [154, 154, snapshot.summary.totalBytes],
      'the walk\u2019s own counts at the end',
    );
  });

  it('end on the summary\u2019s figures however seldom the listener wants events', async () => {
    const { repo, src } = await setup();
    const events: ProgressEvent[] = [];
    const listener: ProgressListener = {
      progress: (event) => void events.push(event),
      warn: (message) => assert.fail(message),
      wantsTotals: true,
      reportEveryMs: 3_600_000,
    };
    const snapshot = await backupDir(repo, src, { progress: listener });
    const last = events.at(-1)!;
    assert.deepEqual(
      [last.files, last.bytes, last.bytesAdded, last.totalFiles, last.totalBytes],
      [154, snapshot.summary.totalBytes, snapshot.summary.bytesAdded, 154, snapshot.summary.totalBytes],
    );
  });
});
