import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { CairnError } from '../../../agent/core/errors.ts';
import { readWorkList, writeWorkList } from '../../../agent/core/gc-work-list.ts';
import { collectionKey } from '../../../agent/core/layout.ts';
import { hmacSeal } from '../../../agent/core/run-lease.ts';
import { MemoryStorage } from '../../helpers/memory-storage.ts';

/**
 * The GC work list sealed under the control plane's key (issue 16): what the control plane
 * wrote reads back; a plain list, one sealed under another key, one moved to another name, or
 * one altered after sealing is refused with Cairn.Damaged naming why.
 */
const seal = hmacSeal(randomBytes(32));
const pack = (): string => randomBytes(32).toString('hex');
const list = (generation: string) => ({
  generation,
  planId: 'app',
  created: '2026-06-01T00:00:00.000Z',
  packs: [pack(), pack()],
  generations: ['20260601T000000Z-0123456789abcdef'],
});

function refused(pattern: RegExp): (error: unknown) => boolean {
  return (error) => {
    assert.ok(error instanceof CairnError, String(error));
    assert.equal(error.code, 'Cairn.Damaged');
    assert.match(error.message, pattern);
    assert.match(error.message, /deletes nothing/);
    return true;
  };
}

describe('sealed GC work lists (issue 16)', () => {
  it('reads back what the control plane sealed', async () => {
    const storage = new MemoryStorage();
    const written = list('genuine');
    await writeWorkList(storage, seal, written);
    assert.deepEqual(await readWorkList(storage, seal, 'genuine'), written);
  });

  it('refuses a plain list, another key, another name and an altered list', async () => {
    const storage = new MemoryStorage();
    // As the work list was written before it was sealed: plain JSON.
    await storage.put(collectionKey('plain'), Buffer.from(JSON.stringify(list('plain'))), { ifAbsent: true });
    await assert.rejects(readWorkList(storage, seal, 'plain'), refused(/carries no seal/));

    await writeWorkList(storage, hmacSeal(randomBytes(32)), list('other-key'));
    await assert.rejects(readWorkList(storage, seal, 'other-key'), refused(/seal does not verify/));

    await writeWorkList(storage, seal, list('genuine'));
    const bytes = await storage.get(collectionKey('genuine'));
    await storage.put(collectionKey('moved'), bytes);
    await assert.rejects(readWorkList(storage, seal, 'moved'), refused(/seal does not verify/));

    const text = bytes.toString('utf8');
    const altered = text.replace(/"packs":\["[0-9a-f]{64}"/, `"packs":["${pack()}"`);
    assert.notEqual(altered, text);
    await storage.put(collectionKey('altered'), Buffer.from(altered));
    await assert.rejects(readWorkList(storage, seal, 'altered'), refused(/seal does not verify/));
  });

  it('a missing list is Cairn.NotFound, a bad id Cairn.InvalidInput', async () => {
    const storage = new MemoryStorage();
    await assert.rejects(readWorkList(storage, seal, 'absent'), { code: 'Cairn.NotFound' });
    await assert.rejects(readWorkList(storage, seal, '../locks'), { code: 'Cairn.InvalidInput' });
  });
});
