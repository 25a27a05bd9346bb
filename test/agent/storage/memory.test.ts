import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { AlreadyExistsError } from '../../../agent/core/errors.ts';
import { FaultyStorage } from '../../helpers/faulty-storage.ts';
import { MemoryStorage } from '../../helpers/memory-storage.ts';
import { storageConformance } from './conformance.ts';

// The shared in-memory storage that tests use instead of a backend: it must keep the same contract.
storageConformance('the in-memory test storage', () =>
  Promise.resolve({ storage: new MemoryStorage(), teardown: () => Promise.resolve() }),
);

// The fault-injecting wrapper, with no fault armed, must change nothing.
storageConformance('the fault-injecting test storage (no fault armed)', () =>
  Promise.resolve({ storage: new FaultyStorage(new MemoryStorage()), teardown: () => Promise.resolve() }),
);

describe('the in-memory test storage', () => {
  it('keeps what was put even when the caller reuses its buffer, and hands out copies', async () => {
    const storage = new MemoryStorage();
    const data = Buffer.from('original');
    await storage.put('a', data);
    data.fill(0);
    const read = await storage.get('a');
    assert.equal(read.toString(), 'original');
    read.fill(0);
    assert.equal((await storage.get('a')).toString(), 'original');
  });

  it('dates objects by its own clock', async () => {
    let now = Date.UTC(2030, 0, 1);
    const storage = new MemoryStorage({ now: () => now });
    await storage.put('a', Buffer.from('a'));
    now += 1500;
    await storage.put('b', Buffer.from('b'));
    assert.deepEqual((await storage.stat('a'))?.modified, Date.UTC(2030, 0, 1));
    assert.equal((await storage.stat('b'))?.modified, Date.UTC(2030, 0, 1) + 1500);
    await assert.rejects(storage.put('a', Buffer.from('x'), { ifAbsent: true }), AlreadyExistsError);
    assert.equal((await storage.stat('a'))?.modified, Date.UTC(2030, 0, 1), 'a refused create changes nothing');
  });
});
