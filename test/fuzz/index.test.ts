import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import fc from 'fast-check';
import { ID_BYTES } from '../../agent/core/crypto.ts';
import { indexKey } from '../../agent/core/layout.ts';
import { PieceType, decodeIndexEntries, encodeIndexEntries, type IndexEntry, type PieceTypeId } from '../../agent/core/pack.ts';
import { Repository } from '../../agent/core/repository.ts';
import { MemoryStorage } from '../helpers/memory-storage.ts';
import { anyBytes, decodes, decodesAsync, fuzz, fuzzAsync, mutatedBytes } from './fuzz.ts';

/**
 * Index files: the entries codec (also inside pack trailers) on its own, and
 * whole sealed index files loaded by a real repository (Repository.loadIndex).
 * Clean means Cairn.Damaged. Entries that decode are of the format's shape, and
 * encoding them again decodes to the same entries.
 */
const u32 = fc.oneof(fc.nat(1 << 20), fc.constantFrom(0, 0xffffffff));
const entry: fc.Arbitrary<IndexEntry> = fc.record({
  id: fc.uint8Array({ minLength: ID_BYTES, maxLength: ID_BYTES }).map((a) => Buffer.from(a)),
  packId: fc.constantFrom(...Array.from({ length: 3 }, () => randomBytes(32).toString('hex'))),
  type: fc.constantFrom<PieceTypeId>(PieceType.data, PieceType.tree, PieceType.list),
  frameOffset: u32,
  frameLength: u32,
  offsetInFrame: u32,
  length: u32,
});
const validEntries = fc.array(entry, { maxLength: 8 });

function checkEntries(entries: IndexEntry[]): void {
  for (const e of entries) {
    assert.equal(e.id.length, ID_BYTES);
    assert.match(e.packId, /^[0-9a-f]{64}$/);
    assert.ok(e.type === PieceType.data || e.type === PieceType.tree || e.type === PieceType.list);
    for (const n of [e.frameOffset, e.frameLength, e.offsetInFrame, e.length]) assert.ok(Number.isInteger(n) && n >= 0 && n <= 0xffffffff);
  }
  const again = decodeIndexEntries(encodeIndexEntries(entries), 'again');
  assert.equal(again.length, entries.length);
}

const indexBytes = fc.oneof(anyBytes(400), { weight: 4, arbitrary: mutatedBytes(validEntries.map(encodeIndexEntries)) });

describe('fuzz: index files', () => {
  it('index entries: arbitrary bytes and mutations of valid entries decode to well-formed entries or fail as Cairn.Damaged', () => {
    fuzz('index/entries', indexBytes, (data) => decodes(() => decodeIndexEntries(data, 'fuzz'), ['Cairn.Damaged'], checkEntries), 2000);
  });

  it('valid entries round-trip', () => {
    fuzz(
      'index/roundtrip',
      validEntries,
      (entries) => {
        const out = decodeIndexEntries(encodeIndexEntries(entries), 'fuzz');
        assert.equal(out.length, entries.length);
        const key = (e: IndexEntry): string =>
          `${e.id.toString('hex')}/${e.packId}/${e.type}/${e.frameOffset}/${e.frameLength}/${e.offsetInFrame}/${e.length}`;
        assert.deepEqual(out.map(key).sort(), entries.map(key).sort());
      },
      300,
    );
  });

  it('a repository loads sealed index files whose plaintext is junk or mutated, or fails as Cairn.Damaged', async () => {
    const storage = new MemoryStorage();
    const repo = await Repository.init(storage, 'fuzz passphrase', { host: 'fuzz', user: 'fuzz' });
    const input = fc.oneof(
      indexBytes.map((plain) => ({ plain, raw: undefined as Buffer | undefined })),
      mutatedBytes(validEntries.map((e) => repo.seal('index', indexKey('0'.repeat(64)), encodeIndexEntries(e)))).map((raw) => ({
        plain: undefined,
        raw,
      })),
    );
    await fuzzAsync(
      'index/load',
      input,
      async ({ plain, raw }) => {
        const id = randomBytes(32).toString('hex');
        const name = indexKey(id);
        await storage.put(name, raw ?? repo.seal('index', name, plain as Buffer));
        try {
          await decodesAsync(
            () => repo.loadIndex(),
            ['Cairn.Damaged'],
            (index) => {
              for (const e of index.entries()) checkEntries([e]);
            },
          );
        } finally {
          await storage.delete(name);
        }
      },
      300,
    );
  });
});
