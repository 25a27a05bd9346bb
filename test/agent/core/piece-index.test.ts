import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { PieceType, type IndexEntry } from '../../../agent/core/pack.ts';
import { PieceIndex } from '../../../agent/core/piece-index.ts';

function entry(id: Buffer, packId: string, frameOffset = 0): IndexEntry {
  return { id, packId, type: PieceType.data, frameOffset, frameLength: 100, offsetInFrame: 0, length: 10 };
}

describe('PieceIndex keeps every location (issue 16)', () => {
  it('keeps each distinct location of a piece in the order added, and a repeated one once', () => {
    const index = new PieceIndex();
    const id = randomBytes(32);
    const [p, q] = [randomBytes(32).toString('hex'), randomBytes(32).toString('hex')];
    index.add(entry(id, p));
    index.add(entry(id, q));
    index.add(entry(id, p)); // the same location again: an index file loaded twice, a rerun backup
    assert.deepEqual(
      index.locations(id).map((l) => l.packId),
      [p, q],
    );
    assert.equal(index.get(id)?.packId, p);
    assert.equal(index.size, 1, 'one piece');
    assert.equal(index.locationCount, 2);
    assert.equal([...index.entries()].length, 2, 'entries() yields every location');
  });

  it('removeWhere drops every location of the chosen pieces and leaves the others findable, through many rehashes', () => {
    const index = new PieceIndex();
    const ids = Array.from({ length: 5000 }, () => randomBytes(32));
    const packs = Array.from({ length: 7 }, () => randomBytes(32).toString('hex'));
    ids.forEach((id, i) => {
      index.add(entry(id, packs[i % 7] as string, i));
      if (i % 3 === 0) index.add(entry(id, packs[(i + 1) % 7] as string, i));
    });
    const doomed = new Set(ids.filter((_, i) => i % 2 === 0).map((id) => id.toString('hex')));
    assert.equal(
      index.removeWhere((id) => doomed.has(id.toString('hex'))),
      doomed.size,
    );
    assert.equal(index.size, ids.length - doomed.size);
    ids.forEach((id, i) => {
      if (i % 2 === 0) {
        assert.equal(index.has(id), false);
        assert.deepEqual(index.locations(id), []);
      } else {
        assert.equal(index.locations(id).length, i % 3 === 0 ? 2 : 1, `piece ${i} keeps its locations`);
      }
    });
    // Still usable: a removed piece can come back (a backup uploading it again).
    index.add(entry(ids[0] as Buffer, packs[0] as string, 99));
    assert.equal(index.locations(ids[0] as Buffer).length, 1);
    assert.equal(
      index.removeWhere(() => false),
      0,
    );
  });
});
