import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import fc from 'fast-check';
import { ID_BYTES, seal } from '../../agent/core/crypto.ts';
import { newMasterKey } from '../../agent/core/keyfile.ts';
import {
  Codec,
  PACK_END,
  PACK_HEADER_BYTES,
  PieceType,
  decodeFrame,
  decodeTrailer,
  encodeFrame,
  encodeTrailer,
  newPackHeader,
  packDataKey,
  packSaltFromHeader,
  type CodecId,
  type IndexEntry,
  type PieceTypeId,
} from '../../agent/core/pack.ts';
import { anyBytes, decodes, fuzz, mutatedBytes } from './fuzz.ts';

/**
 * Packs (docs/repository-format.md, "Packs"): the header, frames and the trailer.
 * Clean means Cairn.Damaged. A frame or trailer that authenticates must satisfy
 * the decoder's own invariants (one 32-byte id and one length per piece, a known
 * codec, entries of the pack's own shape).
 */
const master = newMasterKey();
const packId = randomBytes(32).toString('hex');

interface BuiltPack {
  pack: Buffer;
  key: Buffer;
  frames: Buffer[];
}

const pieces = fc.array(fc.uint8Array({ minLength: 0, maxLength: 200 }), { minLength: 1, maxLength: 6 });
const codec = fc.constantFrom<CodecId>(Codec.none, Codec.zstd);

/** A valid pack built with the code's own encoders: header, 1–3 frames, trailer. */
const validPack: fc.Arbitrary<BuiltPack> = fc.array(fc.tuple(codec, pieces), { minLength: 1, maxLength: 3 }).map((frameSpecs) => {
  const { header, salt } = newPackHeader();
  const key = packDataKey(master, salt);
  const parts = [header];
  const frames: Buffer[] = [];
  const entries: IndexEntry[] = [];
  let offset = header.length;
  for (const [frameCodec, contents] of frameSpecs) {
    const ids = contents.map(() => randomBytes(ID_BYTES));
    const lengths = contents.map((c) => c.length);
    const frame = encodeFrame(key, frameCodec, ids, lengths, Buffer.concat(contents));
    let inFrame = 0;
    for (const [i, id] of ids.entries()) {
      entries.push({
        id,
        packId,
        type: PieceType.data,
        frameOffset: offset,
        frameLength: frame.length,
        offsetInFrame: inFrame,
        length: lengths[i] as number,
      });
      inFrame += lengths[i] as number;
    }
    frames.push(frame);
    parts.push(frame);
    offset += frame.length;
  }
  parts.push(encodeTrailer(key, entries));
  return { pack: Buffer.concat(parts), key, frames };
});

function checkEntries(entries: IndexEntry[]): void {
  for (const e of entries) {
    assert.equal(e.id.length, ID_BYTES);
    assert.match(e.packId, /^[0-9a-f]{64}$/);
    assert.ok(([PieceType.data, PieceType.tree, PieceType.list] as PieceTypeId[]).includes(e.type));
    for (const n of [e.frameOffset, e.frameLength, e.offsetInFrame, e.length]) assert.ok(Number.isInteger(n) && n >= 0 && n <= 0xffffffff);
  }
}

describe('fuzz: packs and frames', () => {
  it('pack header: bad headers fail as Cairn.Damaged, good ones give a 16-byte salt', () => {
    const header = fc.oneof(anyBytes(40), mutatedBytes(fc.constant(null).map(() => newPackHeader().header)));
    fuzz(
      'pack/header',
      header,
      (data) => {
        decodes(
          () => packSaltFromHeader(data, packId),
          ['Cairn.Damaged'],
          (salt) => assert.equal(salt.length, PACK_HEADER_BYTES - 4),
        );
      },
      1000,
    );
  });

  it('frames: arbitrary bytes and mutations of valid frames never decode, and fail only as Cairn.Damaged', () => {
    const input = fc.oneof(
      fc.tuple(validPack, anyBytes(300)).map(([p, junk]) => ({ key: p.key, frame: junk })),
      {
        weight: 4,
        arbitrary: fc
          .tuple(validPack, fc.nat())
          .chain(([p, n]) => mutatedBytes(fc.constant(p.frames[n % p.frames.length] as Buffer)).map((frame) => ({ key: p.key, frame }))),
      },
    );
    fuzz(
      'pack/frame',
      input,
      ({ key, frame }) => {
        decodes(
          () => decodeFrame(key, frame, 'fuzz'),
          ['Cairn.Damaged'],
          () => assert.fail('a mutated frame authenticated'),
        );
      },
      1000,
    );
  });

  it('frames sealed correctly around junk (hostile host with the key) decode to their own invariants or fail as Cairn.Damaged', () => {
    const input = fc.record({
      version: fc.constantFrom(0, 1, 2, 255),
      codec: fc.constantFrom(0, 1, 2, 255),
      count: fc.oneof(fc.integer({ min: 0, max: 8 }), fc.constantFrom(0xffff, 0x8000)),
      rawLength: fc.oneof(fc.nat(1000), fc.constant(0xffffffff)),
      body: anyBytes(400),
    });
    const key = packDataKey(master, randomBytes(16));
    fuzz(
      'pack/frame-sealed-junk',
      input,
      ({ version, codec: c, count, rawLength, body }) => {
        const header = Buffer.alloc(8);
        header.writeUInt8(version, 0);
        header.writeUInt8(c, 1);
        header.writeUInt16LE(count, 2);
        header.writeUInt32LE(rawLength, 4);
        const frame = Buffer.concat([header, seal(key, body, header)]);
        decodes(
          () => decodeFrame(key, frame, 'fuzz'),
          ['Cairn.Damaged'],
          (out) => {
            assert.equal(out.ids.length, count);
            assert.equal(out.lengths.length, count);
            for (const id of out.ids) assert.equal(id.length, ID_BYTES);
            assert.ok(out.codec === Codec.none || out.codec === Codec.zstd);
            assert.equal(out.rawLength, rawLength);
          },
        );
      },
      1000,
    );
  });

  it('trailers: arbitrary bytes and mutations of valid packs fail only as Cairn.Damaged; an unmutated pack lists its entries', () => {
    const input = fc.oneof(
      fc.tuple(validPack, anyBytes(300)).map(([p, junk]) => ({ key: p.key, pack: Buffer.concat([junk, PACK_END]), mutated: true })),
      fc.tuple(validPack, anyBytes(300)).map(([p, junk]) => ({ key: p.key, pack: junk, mutated: true })),
      {
        weight: 4,
        arbitrary: validPack.chain((p) =>
          mutatedBytes(fc.constant(p.pack)).map((pack) => ({ key: p.key, pack, mutated: !pack.equals(p.pack) })),
        ),
      },
      validPack.map((p) => ({ key: p.key, pack: p.pack, mutated: false })),
    );
    fuzz(
      'pack/trailer',
      input,
      ({ key, pack, mutated }) => {
        let listed = false;
        decodes(
          () => decodeTrailer(key, pack, packId),
          ['Cairn.Damaged'],
          (entries) => {
            checkEntries(entries);
            listed = true;
          },
        );
        // A mutation may leave the trailer intact (a flipped bit in a frame): the trailer still reads then.
        if (!mutated) assert.ok(listed, 'a valid pack failed to list its trailer');
      },
      1000,
    );
  });

  it('trailers sealed correctly around junk entries fail only as Cairn.Damaged or give well-formed entries', () => {
    const key = packDataKey(master, randomBytes(16));
    fuzz(
      'pack/trailer-sealed-junk',
      anyBytes(400),
      (junk) => {
        const sealed = seal(key, junk, Buffer.from('cairn/v1/pack-trailer'));
        const length = Buffer.alloc(4);
        length.writeUInt32LE(sealed.length, 0);
        const pack = Buffer.concat([newPackHeader().header, sealed, length, PACK_END]);
        decodes(() => decodeTrailer(key, pack, packId), ['Cairn.Damaged'], checkEntries);
      },
      500,
    );
  });
});
