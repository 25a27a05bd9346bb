import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { zstdCompressSync } from 'node:zlib';
import { CairnError } from '../../../agent/core/errors.ts';
import { packKey } from '../../../agent/core/layout.ts';
import { Codec, FRAME_HEADER_BYTES, PieceType, encodeFrame, newPackHeader, packDataKey, type CodecId } from '../../../agent/core/pack.ts';
import { PieceIndex } from '../../../agent/core/piece-index.ts';
import { PieceReader } from '../../../agent/core/piece-reader.ts';
import { Repository } from '../../../agent/core/repository.ts';
import { FrameThreads } from '../../../agent/pipeline/frame-threads.ts';
import { MemoryStorage } from '../../helpers/memory-storage.ts';
import { PASSPHRASE, SMALL } from '../../helpers/repo.ts';

/**
 * Frames opened on a worker thread (pipeline/frame-threads.ts) are held to every check the main
 * thread applies: each case below is read through a reader without threads and one with them, and
 * both must return the same bytes or refuse with the same damage.
 */
interface Case {
  name: string;
  /** The pieces the frame really holds, and the ids its table gives them. */
  pieces: Buffer[];
  ids?: (repo: Repository, pieces: Buffer[]) => Buffer[];
  codec: CodecId;
  /** The sealed payload: the pieces compressed (zstd) or as they are, unless a case forges it. */
  payload?: (raw: Buffer) => Buffer;
  /** Bytes changed in the stored frame after sealing. */
  tamper?: (frame: Buffer) => void;
  /** The error every reader must give, or undefined when the pieces read back. */
  refused?: RegExp;
}

const cases: Case[] = [
  { name: 'a zstd frame of several pieces', pieces: [randomBytes(70_000), Buffer.alloc(50_000, 7), randomBytes(1)], codec: Codec.zstd },
  { name: 'a frame stored without compression', pieces: [randomBytes(10_000), randomBytes(3)], codec: Codec.none },
  { name: 'a frame of one tiny piece (below the pool size)', pieces: [Buffer.from('x')], codec: Codec.zstd },
  {
    name: 'a frame sealed with the key whose table gives a piece another piece’s id (a forging host)',
    pieces: [randomBytes(9_000), randomBytes(9_000)],
    ids: (repo, pieces) => [repo.pieceId(pieces[1] as Buffer), repo.pieceId(pieces[1] as Buffer)],
    codec: Codec.zstd,
    refused: /the bytes stored as piece [0-9a-f]+ are not that piece/,
  },
  {
    name: 'a flipped byte in the sealed bytes',
    pieces: [randomBytes(20_000)],
    codec: Codec.zstd,
    tamper: (frame) => {
      frame[FRAME_HEADER_BYTES + 40] = (frame[FRAME_HEADER_BYTES + 40] as number) ^ 1;
    },
    refused: /frame failed authentication/,
  },
  {
    name: 'a changed cleartext header (it is the AAD)',
    pieces: [randomBytes(20_000)],
    codec: Codec.none,
    tamper: (frame) => {
      frame[2] = (frame[2] as number) + 1;
    },
    refused: /frame failed authentication|does not hold piece/,
  },
  {
    name: 'an authenticated zstd frame whose payload is not zstd',
    pieces: [randomBytes(5_000)],
    codec: Codec.zstd,
    payload: () => randomBytes(5_000),
    refused: /cannot decompress/,
  },
  {
    name: 'an authenticated frame that decompresses to fewer bytes than its header says',
    pieces: [randomBytes(5_000)],
    codec: Codec.zstd,
    payload: (raw) => zstdCompressSync(raw.subarray(0, 4_000)),
    refused: /holds 4000 bytes, header says 5000/,
  },
];

/** Writes the case's frame as a pack of its own and indexes its pieces where the frame says they are. */
async function store(repo: Repository, storage: MemoryStorage, index: PieceIndex, c: Case): Promise<Buffer[]> {
  const { header, salt } = newPackHeader();
  const raw = Buffer.concat(c.pieces);
  const payload = c.payload ? c.payload(raw) : c.codec === Codec.zstd ? zstdCompressSync(raw) : raw;
  const ids = c.ids ? c.ids(repo, c.pieces) : c.pieces.map((piece) => repo.pieceId(piece));
  const lengths = c.pieces.map((piece) => piece.length);
  const frame = encodeFrame(packDataKey(repo.masterKey(), salt), c.codec, ids, lengths, payload);
  c.tamper?.(frame);
  const packId = randomBytes(32).toString('hex');
  await storage.put(packKey(packId), Buffer.concat([header, frame]));
  let at = 0;
  c.pieces.forEach((piece, i) => {
    const id = ids[i] as Buffer;
    if (!index.has(id))
      index.add({
        id,
        packId,
        type: PieceType.data,
        frameOffset: header.length,
        frameLength: frame.length,
        offsetInFrame: at,
        length: piece.length,
      });
    at += piece.length;
  });
  return ids;
}

async function outcome(reader: PieceReader, ids: Buffer[]): Promise<{ bytes?: Buffer[]; error?: string }> {
  try {
    return { bytes: await Promise.all(ids.map((id) => reader.read(id))) };
  } catch (error) {
    assert.ok(error instanceof CairnError, String(error));
    assert.equal(error.code, 'Cairn.Damaged', error.message);
    return { error: error.message };
  }
}

describe('frames opened on worker threads', () => {
  let storage: MemoryStorage;
  let repo: Repository;
  let threads: FrameThreads;
  before(async () => {
    storage = new MemoryStorage();
    repo = await Repository.init(storage, PASSPHRASE, { host: 'h', user: 'u' }, SMALL);
    threads = new FrameThreads(repo.pieceIdKey(), 2);
  });
  after(() => threads.close());

  for (const c of cases) {
    it(`${c.name}: ${c.refused ? 'refused' : 'read back'} alike on the main thread and on a worker`, async () => {
      const index = new PieceIndex();
      const ids = await store(repo, storage, index, c);
      const onMain = await outcome(new PieceReader(repo, index), ids);
      const onWorker = await outcome(new PieceReader(repo, index, { opener: threads }), ids);
      if (c.refused) {
        assert.match(onMain.error ?? '(read back)', c.refused);
        assert.equal(onWorker.error, onMain.error);
      } else {
        assert.equal(onMain.error, undefined);
        assert.equal(onWorker.error, undefined);
        assert.deepEqual(onWorker.bytes, c.pieces);
        assert.deepEqual(onMain.bytes, c.pieces);
      }
    });
  }

  it('reads many frames at once, each reply matched to its request', async () => {
    const index = new PieceIndex();
    const all: Array<{ ids: Buffer[]; pieces: Buffer[] }> = [];
    for (let i = 0; i < 40; i++) {
      const c: Case = {
        name: `frame ${i}`,
        pieces: [randomBytes(1_000 + i * 997), randomBytes(17 + i)],
        codec: i % 3 ? Codec.zstd : Codec.none,
      };
      all.push({ ids: await store(repo, storage, index, c), pieces: c.pieces });
    }
    const reader = new PieceReader(repo, index, { opener: threads, cacheFrames: 2 });
    const read = await Promise.all(all.map(({ ids }) => Promise.all(ids.map((id) => reader.read(id)))));
    assert.deepEqual(
      read,
      all.map(({ pieces }) => pieces),
    );
  });
});
