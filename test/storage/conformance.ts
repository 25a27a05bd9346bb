import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { AlreadyExistsError, NotFoundError } from '../../agent/core/errors.ts';
import { mapLimit } from '../../agent/core/concurrency.ts';
import type { DeletableStorage } from '../../agent/core/storage.ts';

export interface ConformanceSetup {
  storage: DeletableStorage;
  teardown(): Promise<void>;
}

async function keys(storage: DeletableStorage, prefix: string): Promise<string[]> {
  const out: string[] = [];
  for await (const o of storage.list(prefix)) out.push(o.key);
  return out.sort();
}

/** The Storage contract (agent/core/storage.ts), checked the same way for every backend. */
export function storageConformance(name: string, setup: () => Promise<ConformanceSetup>, options: { largeObject?: number } = {}): void {
  describe(`${name} storage keeps the Storage contract`, () => {
    let ctx: ConformanceSetup;
    let s: DeletableStorage;
    before(async () => {
      ctx = await setup();
      s = ctx.storage;
    });
    after(async () => {
      await ctx.teardown();
    });

    it('reads back what it wrote, whole and by range', async () => {
      const data = randomBytes(100_000);
      await s.put('objects/a', data);
      assert.deepEqual(await s.get('objects/a'), data);
      assert.deepEqual(await s.getRange('objects/a', 1000, 5000), data.subarray(1000, 6000));
      assert.deepEqual(await s.stat('objects/a'), { key: 'objects/a', size: 100_000 });
    });

    it('a range past the end fails instead of returning fewer bytes', async () => {
      await s.put('objects/short', Buffer.from('0123456789'));
      await assert.rejects(s.getRange('objects/short', 5, 10));
    });

    it('a missing object is NotFound on get and getRange, and undefined on stat', async () => {
      await assert.rejects(s.get('objects/missing'), NotFoundError);
      await assert.rejects(s.getRange('objects/missing', 0, 4), NotFoundError);
      assert.equal(await s.stat('objects/missing'), undefined);
    });

    it('a plain put replaces; a create-if-absent put of an existing key fails and keeps the original', async () => {
      await s.put('objects/b', Buffer.from('one'));
      await s.put('objects/b', Buffer.from('two'));
      assert.equal((await s.get('objects/b')).toString(), 'two');
      await assert.rejects(s.put('objects/b', Buffer.from('three'), { ifAbsent: true }), AlreadyExistsError);
      assert.equal((await s.get('objects/b')).toString(), 'two');
      await s.put('objects/c', Buffer.from('new'), { ifAbsent: true });
      assert.equal((await s.get('objects/c')).toString(), 'new');
    });

    it('lists by prefix, nested keys and a prefix ending inside a name', async () => {
      for (const key of ['list/x/1', 'list/x/2', 'list/y/1', 'list/xa', 'other/1']) await s.put(key, Buffer.from(key));
      assert.deepEqual(await keys(s, 'list/'), ['list/x/1', 'list/x/2', 'list/xa', 'list/y/1']);
      assert.deepEqual(await keys(s, 'list/x/'), ['list/x/1', 'list/x/2']);
      assert.deepEqual(await keys(s, 'list/x'), ['list/x/1', 'list/x/2', 'list/xa']);
      assert.deepEqual(await keys(s, 'nothing/'), []);
      const sizes = new Map<string, number>();
      for await (const o of s.list('list/')) sizes.set(o.key, o.size);
      assert.equal(sizes.get('list/xa'), 'list/xa'.length);
    });

    it('lists more than 1000 keys across pages, each once', async () => {
      const names = Array.from({ length: 1100 }, (_, i) => `many/${String(i).padStart(4, '0')}`);
      await mapLimit(names, 16, async (key) => s.put(key, Buffer.from('x')));
      const listed = await keys(s, 'many/');
      assert.equal(listed.length, 1100);
      assert.deepEqual(listed, names);
    });

    it('round-trips a large object', async () => {
      const data = randomBytes(options.largeObject ?? 20 << 20);
      await s.put('large/one', data, { ifAbsent: true });
      assert.deepEqual(await s.get('large/one'), data);
      assert.deepEqual(await s.getRange('large/one', data.length - 10, 10), data.subarray(data.length - 10));
    });

    it('deletes, and deleting a missing object is fine', async () => {
      await s.put('del/a', Buffer.from('a'));
      await s.delete('del/a');
      assert.equal(await s.stat('del/a'), undefined);
      await s.delete('del/a');
      await s.delete('del/never');
    });
  });
}
