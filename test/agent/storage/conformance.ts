import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { AlreadyExistsError, CairnError, NotFoundError } from '../../../agent/core/errors.ts';
import { mapLimit } from '../../../agent/core/concurrency.ts';
import type { DeletableStorage, ObjectInfo, Storage } from '../../../agent/core/storage.ts';

export interface ConformanceSetup {
  storage: DeletableStorage;
  teardown(): Promise<void>;
}

/** A fault the backend's own test double injects into its next requests (a network backend's server or proxy). */
export type ConformanceFault = 'unavailable' | 'reset' | 'denied';

export interface ConformanceFaults {
  /**
   * Makes the next `count` requests of one kind fail: 'unavailable' answers 503,
   * 'reset' destroys the connection while the request arrives, 'denied' answers
   * 403 as a missing permission does. `on`: object reads, object writes, listings.
   */
  failNext(count: number, fault: ConformanceFault, on: 'read' | 'write' | 'list'): void;
  /** Faults queued and not yet used. */
  pending(): number;
}

export interface ConformanceOptions {
  /** Bytes of the large-object test; 20 MiB unless given. Backends with multipart uploads set a small threshold so it spans parts. */
  largeObjectSize?: number;
  /** Fault injection for the retry and access-denied tests; backends without a network skip them. */
  faults?: ConformanceFaults;
  /** Names the bucket (or equivalent) messages must carry, and what an access-denied hint must mention. */
  bucket?: { name: string; permissionHint: RegExp };
  /**
   * Keys of the paging test: 1100 unless given, past a cloud listing's 1000-key page. A wrapper whose
   * `list` passes straight through to a backend that runs the full test may write fewer (each of its
   * writes may be costly: a storage hook runs a process per object).
   */
  pagedKeys?: number;
  /** The same backend on a bucket that does not exist. */
  missingBucket?: () => Promise<{ storage: DeletableStorage; bucket: string }>;
}

async function listed(storage: Storage, prefix: string): Promise<Array<{ key: string; size: number }>> {
  const out: Array<{ key: string; size: number }> = [];
  for await (const info of storage.list(prefix)) out.push({ key: info.key, size: info.size });
  return out.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
}

/** Whole ObjectInfo records of a listing, sorted by key. */
async function listedInfo(storage: Storage, prefix: string): Promise<ObjectInfo[]> {
  const out: ObjectInfo[] = [];
  for await (const info of storage.list(prefix)) out.push(info);
  return out.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
}

/** 2020-01-01: any modification time before it is not one a backend could set for an object written now. */
const PLAUSIBLE_SINCE = Date.UTC(2020, 0, 1);
/**
 * How far back a later write's modification time may lie behind an earlier one's:
 * S3 keeps whole seconds (two puts within one second may both truncate to it),
 * and a service's servers share a clock only within such a margin. Ordering, not timing.
 */
const ORDER_TOLERANCE_MS = 2000;

/** A stat answer for key: its size, and a modification time in whole epoch milliseconds. */
function assertInfo(info: ObjectInfo | undefined, key: string, size: number): asserts info is ObjectInfo {
  assert.ok(info, `stat of ${key} found the object`);
  assert.equal(info.key, key);
  assert.equal(info.size, size);
  assertTime(info.modified, key);
}

function assertTime(modified: unknown, key: string): void {
  assert.equal(typeof modified, 'number', `${key}: modified is a number of milliseconds, not ${typeof modified}`);
  assert.ok(Number.isSafeInteger(modified), `${key}: modified ${String(modified)} is whole milliseconds`);
  assert.ok((modified as number) > PLAUSIBLE_SINCE, `${key}: modified ${new Date(modified as number).toISOString()} is a real time`);
}

async function keys(storage: Storage, prefix: string): Promise<string[]> {
  return (await listed(storage, prefix)).map((info) => info.key);
}

function isStorageError(error: unknown): boolean {
  return error instanceof CairnError && error.code === 'Cairn.Storage';
}

/**
 * The Storage contract (agent/core/storage.ts), checked the same way for
 * every backend. `setup` runs once; every test writes under its own key
 * prefix, so the tests do not depend on each other.
 */
export function storageConformance(name: string, setup: () => Promise<ConformanceSetup>, options: ConformanceOptions = {}): void {
  describe(`${name} keeps the Storage contract`, () => {
    let context: ConformanceSetup | undefined;
    let s: DeletableStorage;
    before(async () => {
      context = await setup();
      s = context.storage;
    });
    after(async () => {
      await context?.teardown();
    });

    it('reads back exactly what it wrote, and stat reports its size', async () => {
      const data = randomBytes(100_000);
      await s.put('roundtrip/a', data);
      assert.deepEqual(await s.get('roundtrip/a'), data);
      assertInfo(await s.stat('roundtrip/a'), 'roundtrip/a', 100_000);
      await s.put('roundtrip/empty', Buffer.alloc(0));
      assert.equal((await s.get('roundtrip/empty')).length, 0);
      assertInfo(await s.stat('roundtrip/empty'), 'roundtrip/empty', 0);
    });

    it('getRange returns exactly the requested bytes', async () => {
      const data = randomBytes(50_000);
      await s.put('range/a', data);
      assert.deepEqual(await s.getRange('range/a', 0, 1), data.subarray(0, 1));
      assert.deepEqual(await s.getRange('range/a', 1000, 5000), data.subarray(1000, 6000));
      assert.deepEqual(await s.getRange('range/a', 49_990, 10), data.subarray(49_990));
      assert.equal((await s.getRange('range/a', 10, 0)).length, 0);
    });

    it('getRange fails instead of returning fewer bytes when the range runs past the end', async () => {
      await s.put('range/short', Buffer.from('0123456789'));
      await assert.rejects(s.getRange('range/short', 5, 10), isStorageError);
      await assert.rejects(s.getRange('range/short', 10, 1), isStorageError);
      await assert.rejects(s.getRange('range/short', 100, 4), isStorageError);
    });

    it('a missing object is NotFoundError on get and getRange, never an empty buffer', async () => {
      await assert.rejects(s.get('missing/a'), NotFoundError);
      await assert.rejects(s.getRange('missing/a', 0, 4), NotFoundError);
      await assert.rejects(s.getRange('missing/a', 0, 0), NotFoundError);
      await assert.rejects(s.get('missing/a'), (error: NotFoundError) => error.key === 'missing/a');
    });

    it('stat of a missing object is undefined', async () => {
      assert.equal(await s.stat('missing/b'), undefined);
    });

    it('a put without ifAbsent replaces the object', async () => {
      await s.put('overwrite/a', Buffer.from('one'));
      await s.put('overwrite/a', Buffer.from('two, longer'));
      assert.equal((await s.get('overwrite/a')).toString(), 'two, longer');
      assert.equal((await s.stat('overwrite/a'))?.size, 'two, longer'.length);
    });

    it('a create-if-absent put creates a new key, and on an existing key throws AlreadyExistsError and keeps the original', async () => {
      await s.put('exclusive/new', Buffer.from('first'), { ifAbsent: true });
      assert.equal((await s.get('exclusive/new')).toString(), 'first');
      await assert.rejects(
        s.put('exclusive/new', Buffer.from('second'), { ifAbsent: true }),
        (error: AlreadyExistsError) => error instanceof AlreadyExistsError && error.key === 'exclusive/new',
      );
      assert.equal((await s.get('exclusive/new')).toString(), 'first');
    });

    it('of concurrent create-if-absent puts of one key exactly one wins when atomicCreate is set', async (t) => {
      if (!s.atomicCreate) {
        t.skip('this backend checks then writes (atomicCreate is false)');
        return;
      }
      const contenders = Array.from({ length: 8 }, (_, i) => Buffer.from(`contender ${i}`));
      const results = await Promise.allSettled(contenders.map((data) => s.put('exclusive/raced', data, { ifAbsent: true })));
      const winners = results.flatMap((result, i) => (result.status === 'fulfilled' ? [i] : []));
      assert.equal(winners.length, 1, 'exactly one put succeeded');
      for (const result of results)
        if (result.status === 'rejected') assert.ok(result.reason instanceof AlreadyExistsError, String(result.reason));
      assert.deepEqual(await s.get('exclusive/raced'), contenders[winners[0]!]);
    });

    it('lists every key under a prefix once, with sizes, keys relative to the repository root', async () => {
      const written = ['list/x/1', 'list/x/2', 'list/x/deep/3', 'list/xa', 'list/y/1', 'listing', 'other/1'];
      for (const key of written) await s.put(key, Buffer.from(key));
      assert.deepEqual(await listed(s, 'list/x/'), [
        { key: 'list/x/1', size: 8 },
        { key: 'list/x/2', size: 8 },
        { key: 'list/x/deep/3', size: 13 },
      ]);
      assert.deepEqual(await keys(s, 'list/'), ['list/x/1', 'list/x/2', 'list/x/deep/3', 'list/xa', 'list/y/1']);
      assert.deepEqual(await keys(s, 'list/y/'), ['list/y/1']);
      assert.deepEqual(await keys(s, 'other/'), ['other/1']);
      assert.deepEqual(await keys(s, 'nothing/'), []);
    });

    it("lists and stats every object with its modification time by the storage's clock, the same each time it is asked", async () => {
      await s.put('modified/first', Buffer.from('first'));
      await s.put('modified/second', Buffer.from('second'), { ifAbsent: true });
      const listing = await listedInfo(s, 'modified/');
      assert.deepEqual(
        listing.map((info) => info.key),
        ['modified/first', 'modified/second'],
      );
      for (const info of listing) {
        assertTime(info.modified, info.key);
        assert.equal((await s.stat(info.key))?.modified, info.modified, `${info.key}: stat and list give the same time`);
      }
      assert.deepEqual(await listedInfo(s, 'modified/'), listing, 'a second listing gives the same times');
      const [first, second] = listing as [ObjectInfo, ObjectInfo];
      assert.ok(
        second.modified >= first.modified - ORDER_TOLERANCE_MS,
        `written after the first, the second (${second.modified}) is not dated before it (${first.modified})`,
      );
      await s.put('modified/first', Buffer.from('first, again'));
      const rewritten = await s.stat('modified/first');
      assertInfo(rewritten, 'modified/first', 'first, again'.length);
      assert.ok(rewritten.modified >= second.modified - ORDER_TOLERANCE_MS, 'a put over an object dates it anew');
    });

    it('lists by a prefix that ends in the middle of a name', async () => {
      for (const key of ['mid/alpha/1', 'mid/alphabet', 'mid/al', 'mid/beta']) await s.put(key, Buffer.from('x'));
      assert.deepEqual(await keys(s, 'mid/al'), ['mid/al', 'mid/alpha/1', 'mid/alphabet']);
      assert.deepEqual(await keys(s, 'mid/alpha'), ['mid/alpha/1', 'mid/alphabet']);
      assert.deepEqual(await keys(s, 'mid/b'), ['mid/beta']);
      assert.deepEqual(await keys(s, 'mid/c'), []);
    });

    it('lists the whole repository with an empty prefix', async () => {
      for (const key of ['whole/a', 'whole/b/c', 'whole-top']) await s.put(key, Buffer.from('x'));
      const all = await keys(s, '');
      for (const key of ['whole/a', 'whole/b/c', 'whole-top']) assert.ok(all.includes(key), `${key} in the full listing`);
      assert.equal(new Set(all).size, all.length, 'no key twice');
    });

    const pagedKeys = options.pagedKeys ?? 1100;
    it(`lists ${pagedKeys} keys${pagedKeys > 1000 ? ' across pages' : ''}, each exactly once`, async () => {
      const names = Array.from({ length: pagedKeys }, (_, i) => `many/${String(i).padStart(4, '0')}`);
      await mapLimit(names, 16, async (key) => s.put(key, Buffer.from(key)));
      const found = await listedInfo(s, 'many/');
      assert.equal(found.length, pagedKeys);
      assert.deepEqual(
        found.map((info) => info.key),
        names,
      );
      assert.ok(found.every((info) => info.size === 9));
      for (const info of found) assertTime(info.modified, info.key); // on every page
    });

    it('round-trips a large object, and a create-if-absent put over it fails and keeps it', async () => {
      const size = options.largeObjectSize ?? 20 << 20;
      const data = randomBytes(size);
      await s.put('large/one', data, { ifAbsent: true });
      assertInfo(await s.stat('large/one'), 'large/one', size);
      assert.ok((await s.get('large/one')).equals(data), 'the whole object reads back');
      const middle = Math.floor(size / 2) - 3;
      assert.deepEqual(await s.getRange('large/one', middle, 1 << 20), data.subarray(middle, middle + (1 << 20)));
      assert.deepEqual(await s.getRange('large/one', size - 10, 10), data.subarray(size - 10));
      const other = Buffer.alloc(size, 1);
      await assert.rejects(s.put('large/one', other, { ifAbsent: true }), AlreadyExistsError);
      assert.deepEqual(await s.getRange('large/one', 0, 4096), data.subarray(0, 4096), 'the original is kept');
      assertInfo(await s.stat('large/one'), 'large/one', size);
    });

    // Registered only where it applies, so a backend without a network shows no skipped test.
    if (options.faults)
      it('transient 503s and connection resets are retried, and writes, reads and listings then succeed', async (t) => {
        const faults = options.faults;
        if (!faults) {
          t.skip('this backend has no network to fault');
          return;
        }
        const data = randomBytes(100_000);
        faults.failNext(2, 'unavailable', 'write');
        faults.failNext(1, 'reset', 'write');
        await s.put('faults/written', data, { ifAbsent: true });
        assert.equal(faults.pending(), 0, 'every write fault was met');
        faults.failNext(1, 'unavailable', 'read');
        faults.failNext(1, 'reset', 'read');
        assert.deepEqual(await s.get('faults/written'), data);
        assert.equal(faults.pending(), 0, 'every read fault was met');
        faults.failNext(1, 'reset', 'read');
        assert.deepEqual(await s.getRange('faults/written', 10, 1000), data.subarray(10, 1010));
        faults.failNext(1, 'unavailable', 'list');
        faults.failNext(1, 'reset', 'list');
        assert.deepEqual(await listed(s, 'faults/'), [{ key: 'faults/written', size: 100_000 }]);
        assert.equal(faults.pending(), 0, 'every list fault was met');
      });

    // Registered only where it applies, so a backend without a network shows no skipped test.
    if (options.faults && options.bucket)
      it('access denied is a Cairn.Storage error naming the operation, key and bucket, with a hint at the permission', async (t) => {
        const { faults, bucket } = options;
        if (!faults || !bucket) {
          t.skip('this backend has no permission fault to inject');
          return;
        }
        const denied = (operation: string, key: string) => (error: unknown) => {
          assert.ok(isStorageError(error), `a Cairn.Storage error, not ${String(error)}`);
          const { message, hint } = error as CairnError;
          assert.match(message, /access denied/);
          assert.ok(message.includes(`${operation} ${key}`), `${message} names the operation and key`);
          assert.ok(message.includes(bucket.name), `${message} names the bucket`);
          assert.match(hint ?? '', bucket.permissionHint);
          return true;
        };
        await s.put('denied/a', Buffer.from('a'));
        faults.failNext(1, 'denied', 'read');
        await assert.rejects(s.get('denied/a'), denied('read', 'denied/a'));
        faults.failNext(1, 'denied', 'write');
        await assert.rejects(s.put('denied/b', Buffer.from('b'), { ifAbsent: true }), denied('write', 'denied/b'));
        faults.failNext(1, 'denied', 'list');
        await assert.rejects(listed(s, 'denied/'), denied('list', 'denied/'));
        assert.equal(faults.pending(), 0);
        assert.equal(await s.stat('denied/b'), undefined, 'the refused write left no object');
      });

    // Registered only where it applies, so a backend without a network shows no skipped test.
    if (options.missingBucket)
      it('a missing bucket is a Cairn.Storage error naming the bucket on every operation, never NotFound or an empty listing', async (t) => {
        if (!options.missingBucket) {
          t.skip('this backend has no bucket');
          return;
        }
        const { storage: missing, bucket } = await options.missingBucket();
        const named = (error: unknown): boolean => {
          assert.ok(isStorageError(error), `a Cairn.Storage error, not ${String(error)}`);
          assert.match((error as CairnError).message, new RegExp(`bucket ${bucket} does not exist`));
          assert.ok(((error as CairnError).hint ?? '').includes(bucket), 'the hint names the bucket');
          return true;
        };
        await assert.rejects(missing.get('config'), named);
        await assert.rejects(missing.getRange('config', 0, 4), named);
        await assert.rejects(missing.put('config', Buffer.from('x')), named);
        await assert.rejects(missing.put('config', Buffer.from('x'), { ifAbsent: true }), named);
        await assert.rejects(missing.stat('config'), named);
        await assert.rejects(missing.delete('config'), named);
        await assert.rejects(listed(missing, ''), named);
      });

    it('delete removes the object, and deleting a missing key is fine', async () => {
      await s.put('delete/a', Buffer.from('a'));
      await s.put('delete/b', Buffer.from('b'));
      await s.delete('delete/a');
      assert.equal(await s.stat('delete/a'), undefined);
      await assert.rejects(s.get('delete/a'), NotFoundError);
      assert.deepEqual(await keys(s, 'delete/'), ['delete/b']);
      await s.delete('delete/a');
      await s.delete('delete/never-written');
      await s.put('delete/a', Buffer.from('again'), { ifAbsent: true });
      assert.equal((await s.get('delete/a')).toString(), 'again');
    });
  });
}
