import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { ID_BYTES } from '../../agent/core/crypto.ts';
import { NotFoundError } from '../../agent/core/errors.ts';
import { contentBytes } from '../../agent/core/file-content.ts';
import {
  EXTENT_BYTES,
  PAGE_HASH_BYTES,
  checkHashList,
  decodeExtents,
  encodeExtent,
  extentSlice,
  type Extent,
} from '../../agent/core/page-file.ts';
import type { PieceReader } from '../../agent/core/piece-reader.ts';
import type { TreeEntry } from '../../agent/core/tree.ts';
import { anyBytes, assertClean, decodes, fuzz, fuzzAsync, mutatedBytes } from './fuzz.ts';

/**
 * Page files (core/page-file.ts, core/file-content.ts): extent lists and page-hash lists are
 * input like any piece a host with the key could write. Decoding a list yields well-formed
 * extents or fails as Cairn.Damaged; rebuilding a page file from crafted lists and pieces gives
 * exactly the bytes its extents name, adding up to its size, or fails as Cairn.Damaged (or
 * Cairn.NotFound for a piece the reader does not have) — never a RangeError or a short file.
 */

const u32 = fc.oneof(fc.nat(400), fc.constantFrom(0, 1, 0x7fffffff, 0x80000000, 0xffffffff));
const id = fc.uint8Array({ minLength: ID_BYTES, maxLength: ID_BYTES }).map((a) => Buffer.from(a));
const extent: fc.Arbitrary<Extent> = fc.record({ id, offset: u32, length: u32 });

function encodeList(extents: readonly Extent[]): Buffer {
  const list = Buffer.alloc(extents.length * EXTENT_BYTES);
  extents.forEach((e, i) => encodeExtent(e, list, i * EXTENT_BYTES));
  return list;
}

const validList = fc
  .array(
    extent.filter((e) => e.length > 0),
    { minLength: 1, maxLength: 6 },
  )
  .map(encodeList);
const listBytes = fc.oneof(anyBytes(300), { weight: 4, arbitrary: mutatedBytes(validList) }, validList);

function checkExtents(list: Buffer): (extents: Extent[]) => void {
  return (extents) => {
    assert.equal(extents.length * EXTENT_BYTES, list.length);
    for (const e of extents) {
      assert.equal(e.id.length, ID_BYTES);
      assert.ok(e.length > 0 && e.length <= 0xffffffff && e.offset >= 0 && e.offset <= 0xffffffff);
    }
    assert.ok(encodeList(extents).equals(list), 'the records encode back to the list');
  };
}

/**
 * A file of crafted pieces and one extent list over them: mostly slices inside their piece,
 * sometimes an unknown piece, an empty extent or one past its piece; the list sometimes mutated.
 */
const pageFile = fc
  .array(
    anyBytes(200).filter((b) => b.length > 0),
    { minLength: 1, maxLength: 4 },
  )
  .chain((pieces) => {
    const ids = pieces.map((_, i) => Buffer.alloc(ID_BYTES, i + 1));
    const inside = fc
      .record({
        piece: fc.nat(pieces.length - 1),
        start: fc.double({ min: 0, max: 1, noNaN: true }),
        end: fc.double({ min: 0, max: 1, noNaN: true }),
      })
      .map(({ piece, start, end }) => {
        const length = (pieces[piece] as Buffer).length;
        const offset = Math.min(length - 1, Math.floor(start * length));
        return { id: ids[piece] as Buffer, offset, length: 1 + Math.floor(end * (length - offset - 1)) };
      });
    const outside = fc.record({ id: fc.oneof(id, fc.constantFrom(...ids)), offset: u32, length: u32 });
    return fc.record({
      pieces: fc.constant(pieces),
      ids: fc.constant(ids),
      extents: fc.array(fc.oneof({ weight: 8, arbitrary: inside }, outside), { minLength: 1, maxLength: 6 }),
      sizeDelta: fc.oneof({ weight: 3, arbitrary: fc.constant(0) }, fc.integer({ min: -3, max: 3 })),
      mutate: fc.oneof({ weight: 3, arbitrary: fc.constant(false) }, fc.constant(true)),
    });
  })
  .chain((file) => {
    const list = encodeList(file.extents);
    return (file.mutate ? mutatedBytes(fc.constant(list), 3) : fc.constant(list)).map((bytes) => ({ ...file, list: bytes }));
  });

/** What the file's bytes must be: the slices its (decoded) list names, or undefined where one is not a slice. */
function model(file: { pieces: Buffer[]; ids: Buffer[]; list: Buffer }): Buffer | undefined {
  if (file.list.length === 0 || file.list.length % EXTENT_BYTES !== 0) return undefined;
  const parts: Buffer[] = [];
  for (let at = 0; at < file.list.length; at += EXTENT_BYTES) {
    const which = file.ids.findIndex((i) => i.equals(file.list.subarray(at, at + ID_BYTES)));
    const piece = file.pieces[which];
    const offset = file.list.readUInt32BE(at + ID_BYTES);
    const length = file.list.readUInt32BE(at + ID_BYTES + 4);
    if (piece === undefined || length === 0 || offset + length > piece.length) return undefined;
    parts.push(piece.subarray(offset, offset + length));
  }
  return Buffer.concat(parts);
}

describe('fuzz: page files', () => {
  it('extent lists: arbitrary bytes and mutations of valid lists decode to well-formed extents or fail as Cairn.Damaged', () => {
    fuzz(
      'page-file/extents',
      listBytes,
      (list) => decodes(() => [...decodeExtents(list, 'fuzz')], ['Cairn.Damaged'], checkExtents(list)),
      2000,
    );
  });

  it('page-hash lists and extent slices: whole 16-byte hashes, slices inside their piece, or Cairn.Damaged', () => {
    fuzz(
      'page-file/hashes-and-slices',
      fc.record({ list: anyBytes(100), piece: anyBytes(300), offset: u32, length: u32 }),
      ({ list, piece, offset, length }) => {
        decodes(
          () => checkHashList(list, 'fuzz'),
          ['Cairn.Damaged'],
          () => assert.ok(list.length > 0 && list.length % PAGE_HASH_BYTES === 0),
        );
        decodes(
          () => extentSlice(piece, { id: Buffer.alloc(ID_BYTES), offset, length }),
          ['Cairn.Damaged'],
          (slice) => assert.ok(slice.equals(piece.subarray(offset, offset + length)) && slice.length === length),
        );
      },
      1000,
    );
  });

  it('a page file rebuilt from crafted lists and pieces is exactly the bytes its extents name, or fails as Cairn.Damaged / Cairn.NotFound', async () => {
    await fuzzAsync(
      'page-file/content',
      pageFile,
      async (file) => {
        const named = model(file);
        // Mostly the size the slices add up to; sometimes a few bytes off, which must be refused.
        const size = Math.max(0, (named?.length ?? file.extents.reduce((sum, e) => sum + e.length, 0)) + file.sizeDelta);
        const expected = named?.length === size ? named : undefined;
        const reader = {
          read: async (pieceId: Buffer): Promise<Buffer> => {
            const which = file.ids.findIndex((i) => i.equals(pieceId));
            const piece = file.pieces[which];
            if (piece === undefined) throw new NotFoundError(`piece ${pieceId.toString('hex')}`);
            return piece;
          },
        } as unknown as PieceReader;
        const listId = 'ab'.repeat(32);
        const read = async (pieceId: Buffer): Promise<Buffer> => (pieceId.toString('hex') === listId ? file.list : reader.read(pieceId));
        // contentBytes reads the next slices' pieces ahead through readAhead (what they hold is not this test's concern).
        const listReader = { read, readAhead: (pieceId: Buffer) => ({ data: read(pieceId), holds: 1024 }) } as unknown as PieceReader;
        const entry: TreeEntry = {
          name: 'f',
          type: 'file',
          mode: 0o600,
          uid: 0,
          gid: 0,
          mtimeNs: '0',
          size,
          pageSize: 8192,
          extentLists: [listId],
        };
        let bytes: Buffer;
        try {
          const parts: Buffer[] = [];
          for await (const part of contentBytes(entry, listReader)) parts.push(Buffer.from(part));
          bytes = Buffer.concat(parts);
        } catch (error) {
          assertClean(error, ['Cairn.Damaged', 'Cairn.NotFound']);
          assert.equal(expected, undefined, 'a page file whose extents are all slices adding up to its size was refused');
          return;
        }
        assert.ok(expected, 'rebuilt although an extent is not a slice of a piece, or they do not add up to the size');
        assert.ok(bytes.equals(expected));
      },
      500,
    );
  });
});
