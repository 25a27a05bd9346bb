import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { CairnError, NotFoundError } from '../../../agent/core/errors.ts';
import { LogArchive, fileObjectKey, newestArchivedEvent, type LogFileRecord } from '../../../agent/core/log-archive.ts';
import { walName } from '../../../agent/core/log-chain.ts';
import { collectLogs } from '../../../agent/core/pitr-planning.ts';
import type { Repository } from '../../../agent/core/repository.ts';
import type { Snapshot } from '../../../agent/core/snapshot.ts';
import { fileRepo, initSmallRepo, tempDir } from '../../helpers/repo.ts';

describe('log archive objects', () => {
  let dir: { path: string; remove: () => Promise<void> };
  let repo: Repository;
  let log: LogArchive;
  before(async () => {
    dir = await tempDir('logs');
    repo = await initSmallRepo(fileRepo(dir.path));
    log = new LogArchive(repo, 'pg-7000000000000000001');
  });
  after(() => dir.remove());

  const record = (name: string, data: Buffer, minute: number): LogFileRecord => ({
    name,
    key: name,
    kind: 'wal',
    size: data.length,
    hash: log.hash(data),
    archivedAt: new Date(Date.UTC(2026, 10, 23, 10, minute + 1)).toISOString(),
    host: 'db1',
    firstEventTime: new Date(Date.UTC(2026, 10, 23, 10, minute)).toISOString(),
    lastEventTime: new Date(Date.UTC(2026, 10, 23, 10, minute, 50)).toISOString(),
    wal: { timeline: 1, segment: minute, segmentSize: 16 << 20 },
  });

  it('stores a file once: the same content again is a no-op, different content is refused and nothing is overwritten', async () => {
    const data = Buffer.concat([randomBytes(1000), Buffer.alloc(100_000)]);
    assert.equal(await log.putFile(walName(1, 1), data), 'stored');
    assert.equal(await log.putFile(walName(1, 1), data), 'already-archived');
    await assert.rejects(
      log.putFile(walName(1, 1), randomBytes(1000)),
      (error: unknown) => error instanceof CairnError && error.code === 'Cairn.AlreadyExists' && /different content/.test(error.message),
    );
    assert.deepEqual(await log.getFile(walName(1, 1)), data);
    await assert.rejects(log.getFile(walName(1, 2)), NotFoundError);
    // Compressed and sealed: the object is smaller than the zeros it holds, and does not contain them in the clear.
    const objects = await readdir(join(dir.path, 'logs', log.stream, 'files'));
    assert.deepEqual(objects, [walName(1, 1)]);
  });

  it('reads records back, names files without a record, records without a file, and the freshness from the listing', async () => {
    const a = Buffer.from('segment two');
    const b = Buffer.from('segment three');
    await log.putFile(walName(1, 2), a);
    await log.putFile(walName(1, 3), b);
    await log.writeRecords([record(walName(1, 1), Buffer.alloc(0), 1), record(walName(1, 2), a, 2)]);
    await log.writeRecords([record(walName(1, 3), b, 3), record(walName(1, 4), b, 4)]);
    const read = await log.read();
    assert.deepEqual(
      read.records.map((r) => r.name),
      [walName(1, 1), walName(1, 2), walName(1, 3)],
    );
    assert.deepEqual(
      read.missing.map((r) => r.name),
      [walName(1, 4)],
    );
    assert.equal(read.undescribed.length, 0);
    await log.putFile(walName(1, 5), a);
    assert.deepEqual(
      (await log.read()).undescribed.map((u) => u.key),
      [walName(1, 5)],
    );
    const newest = await newestArchivedEvent(repo.storage.list('logs/'));
    assert.equal(newest.get(log.stream), '2026-11-23T10:04:50Z');
  });

  it('garbage-collects files older than every base, keeping the records of the rest', async () => {
    const base = {
      version: 1,
      id: 'ab'.repeat(32),
      time: '2026-11-23T10:02:10.000Z',
      endTime: '2026-11-23T10:02:20.000Z',
      host: 'db1',
      user: 'u',
      paths: [],
      tags: [],
      engine: 'postgres',
      engineMetadata: { startLsn: '0/2000028', timeline: 1, systemIdentifier: '7000000000000000001' },
      tree: 'cd'.repeat(32),
      summary: {
        filesNew: 0,
        filesChanged: 0,
        filesUnchanged: 0,
        dirs: 0,
        bytesNew: 0,
        bytesChanged: 0,
        bytesUnchanged: 0,
        totalFiles: 0,
        totalBytes: 0,
        bytesRead: 0,
        piecesAdded: 0,
        rawBytesAdded: 0,
        bytesAdded: 0,
        durationMs: 0,
        errors: 0,
      },
      tool: 'test',
    } satisfies Snapshot;
    await repo.saveSnapshot(base);
    const storage = fileRepo(dir.path);
    const listed = await repo.listSnapshots();
    assert.deepEqual(listed.unreadable, []);
    const dry = await collectLogs(repo, storage, { dryRun: true });
    assert.equal(dry[0]?.filesRemoved, 1);
    assert.ok(await log.hasFile(walName(1, 1)));
    const [done] = await collectLogs(repo, storage, { dryRun: false });
    assert.equal(done?.filesRemoved, 1);
    assert.equal(await log.hasFile(walName(1, 1)), false);
    const read = await log.read();
    assert.deepEqual(
      read.records.map((r) => r.name),
      [walName(1, 2), walName(1, 3)],
    );
    assert.equal(read.batches.length, 1, 'one consolidated batch replaces the old ones');
    assert.deepEqual((await collectLogs(repo, storage, { dryRun: false }))[0]?.filesRemoved, 0, 'a rerun finds nothing more');
    await rm(join(dir.path, fileObjectKey(log.stream, walName(1, 2))));
    assert.equal(
      (await log.read()).missing.some((r) => r.name === walName(1, 2)),
      true,
    );
  });
});
