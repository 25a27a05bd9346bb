import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { writeFile } from 'node:fs/promises';
import { runCli, lastOfType } from '../../helpers/cli.ts';
import { tempDir } from '../../helpers/repo.ts';
import { describeTree, makeRandomTree, Random } from '../../helpers/tree.ts';
import { TokenBucket, TransferStorage, Semaphore, parseMBps, type Clock } from '../../../agent/storage/throttle.ts';
import { CairnError } from '../../../agent/core/errors.ts';
import { MemoryStorage } from '../../helpers/memory-storage.ts';
import { storageConformance } from './conformance.ts';

/** A clock that only moves when someone sleeps (or the test advances it). */
class FakeClock implements Clock {
  time = 0;
  readonly sleeps: number[] = [];
  now(): number {
    return this.time;
  }
  sleep(ms: number, signal?: AbortSignal): Promise<void> {
    if (signal?.aborted) return Promise.reject(signal.reason as Error);
    this.sleeps.push(ms);
    this.time += ms;
    return Promise.resolve();
  }
}

describe('token bucket', () => {
  it('lets a burst through, then makes takers wait out the debt at the configured rate', () => {
    const clock = new FakeClock();
    const bucket = new TokenBucket(1000, { burst: 1000, clock });
    assert.equal(bucket.reserve(600), 0, 'within the burst');
    assert.equal(bucket.reserve(400), 0, 'exactly the burst');
    assert.equal(bucket.reserve(500), 500, '500 bytes of debt at 1000 B/s: half a second');
    assert.equal(bucket.reserve(1000), 1500, 'the next taker queues behind the debt');
    clock.time += 1500;
    assert.equal(bucket.reserve(0), 0, 'the debt is paid once its time has passed');
    clock.time += 10_000;
    assert.equal(bucket.reserve(1000), 0, 'idle time refills only up to the burst');
    assert.equal(bucket.reserve(1), 1);
  });

  it('holds the long-run rate whatever the transfer sizes', async () => {
    const clock = new FakeClock();
    const bucket = new TokenBucket(2_000_000, { burst: 100_000, clock });
    const sizes = [8 << 20, 12345, 3 << 20, 1, 5 << 20];
    for (const size of sizes) await bucket.take(size);
    const total = sizes.reduce((a, b) => a + b, 0);
    assert.equal(Math.round(clock.time), Math.round(((total - 100_000) / 2_000_000) * 1000));
  });

  it('parses MB/s', () => {
    assert.equal(parseMBps('2.5', '--limit-upload'), 2_500_000);
    assert.throws(() => parseMBps('0', '--limit-upload'), /invalid --limit-upload/);
    assert.throws(
      () => parseMBps('fast', '--limit-download'),
      (e: CairnError) => e.code === 'Cairn.Usage' && /megabytes per second/.test(e.hint ?? ''),
    );
  });
});

describe('TransferStorage', () => {
  it('charges data uploads and downloads to their own buckets, never control objects', async () => {
    const clock = new FakeClock();
    const inner = new MemoryStorage();
    const storage = new TransferStorage(inner, { uploadBytesPerSecond: 100_000, downloadBytesPerSecond: 200_000, clock });
    await storage.put('packs/00/a', Buffer.alloc(100_000)); // the first second's burst
    assert.equal(clock.time, 0);
    await storage.put('packs/00/b', Buffer.alloc(100_000));
    assert.equal(clock.time, 1000, 'the second 100 kB waits one second');
    await storage.put('locks/0123456789abcdef-00000000', Buffer.alloc(500_000));
    await storage.put('history/x', Buffer.alloc(500_000));
    assert.equal(clock.time, 1000, 'lock and history records never wait');
    await storage.get('packs/00/a'); // within the download burst (200 kB)
    await storage.getRange('packs/00/b', 0, 100_000);
    await storage.getRange('packs/00/b', 0, 100_000);
    assert.equal(clock.time, 1500, '300 kB down with 200 kB of burst at 200 kB/s: half a second');
    assert.deepEqual(clock.sleeps, [1000, 500]);
  });

  it('caps concurrent requests at --max-transfers', async () => {
    const inner = new MemoryStorage();
    const storage = new TransferStorage(inner, { maxTransfers: 2 });
    await Promise.all(Array.from({ length: 12 }, (_, i) => storage.put(`packs/00/${i}`, Buffer.alloc(10))));
    assert.equal(inner.objects.size, 12);
    assert.equal(inner.maxInFlight, 2);
    const unlimited = new MemoryStorage();
    await Promise.all(Array.from({ length: 12 }, (_, i) => new TransferStorage(unlimited, {}).put(`packs/00/${i}`, Buffer.alloc(10))));
    assert.ok(unlimited.maxInFlight > 2, 'without a cap requests overlap freely');
  });

  it('refuses data requests once cancelled but still writes lock and history records', async () => {
    const controller = new AbortController();
    const inner = new MemoryStorage();
    const storage = new TransferStorage(inner, { signal: controller.signal, uploadBytesPerSecond: 1000, clock: new FakeClock() });
    controller.abort(new CairnError('Cairn.Cancelled', 'cancelled by SIGTERM'));
    await assert.rejects(storage.put('packs/00/a', Buffer.alloc(10)), /cancelled by SIGTERM/);
    await assert.rejects(storage.get('snapshots/abc'), /cancelled by SIGTERM/);
    await storage.put('locks/0123456789abcdef-00000001', Buffer.from('released'));
    await storage.put('history/y', Buffer.from('failed'));
    assert.deepEqual([...inner.objects.keys()].sort(), ['history/y', 'locks/0123456789abcdef-00000001']);
  });

  it('a semaphore hands slots over first come, first served', async () => {
    const order: number[] = [];
    const sem = new Semaphore(1);
    await Promise.all(
      [1, 2, 3].map((n) =>
        sem.run(async () => {
          order.push(n);
          await new Promise((resolve) => setImmediate(resolve));
        }),
      ),
    );
    assert.deepEqual(order, [1, 2, 3]);
  });
});

// Limits on, with a clock that makes every wait free: the throttle must pass every call through unchanged.
storageConformance('the throttling storage (TransferStorage over the memory storage)', () =>
  Promise.resolve({
    storage: new TransferStorage(new MemoryStorage(), {
      uploadBytesPerSecond: 1_000_000,
      downloadBytesPerSecond: 1_000_000,
      maxTransfers: 3,
      clock: new FakeClock(),
      signal: new AbortController().signal,
    }),
    teardown: () => Promise.resolve(),
  }),
);

describe('limits on the CLI', () => {
  let work: Awaited<ReturnType<typeof tempDir>>;
  before(async () => {
    work = await tempDir('throttle');
  });
  after(async () => {
    await work.remove();
  });

  it('a backup under --limit-upload and --max-transfers 1 completes and restores byte for byte', async () => {
    const source = join(work.path, 'src');
    await makeRandomTree(source, 3, { files: 20, maxFileSize: 100_000 });
    await writeFile(join(source, 'random.bin'), new Random(9).bytes(1_500_000, false));
    const repo = join(work.path, 'repo');
    const env = { CAIRN_PASSWORD: 'limits', CAIRN_LIMIT_UPLOAD: '4', CAIRN_LIMIT_DOWNLOAD: '8' };
    assert.equal((await runCli(['-r', repo, 'init'], env)).code, 0);
    const backup = await runCli(['-r', repo, '--max-transfers', '1', 'backup', source], env);
    assert.equal(backup.code, 0, backup.stderr);
    assert.ok(Number(lastOfType(backup, 'summary')?.bytesAdded) > 1_500_000);
    const target = join(work.path, 'dst');
    const restore = await runCli(['-r', repo, '--limit-download', '8', 'restore', 'latest', '--target', target], env);
    assert.equal(restore.code, 0, restore.stderr);
    assert.deepEqual(await describeTree(target), await describeTree(source));
    const bad = await runCli(['-r', repo, '--limit-upload', 'lots', 'snapshots'], { CAIRN_PASSWORD: 'limits' });
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /invalid --limit-upload/);
  });
});
