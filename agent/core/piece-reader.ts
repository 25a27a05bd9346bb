import { promisify } from 'node:util';
import { zstdDecompress as zstdDecompressCb } from 'node:zlib';
import { CairnError, DamagedError, NotFoundError } from './errors.ts';
import { packKey } from './layout.ts';
import { Codec, PACK_HEADER_BYTES, decodeFrame, packDataKey, packSaltFromHeader, type PieceLocation } from './pack.ts';
import type { PieceIndex } from './piece-index.ts';
import type { Repository } from './repository.ts';

const zstdDecompress = promisify(zstdDecompressCb) as (data: Buffer, options: object) => Promise<Buffer>;

interface PlainFrame {
  ids: Buffer[];
  offsets: number[];
  data: Buffer;
}

/**
 * Reads pieces by id: fetches the frame that holds a piece (one ranged read),
 * authenticates and decompresses it, and checks the frame really holds that
 * piece where the index says. Recently decoded frames are cached, so reading
 * the neighbours of a piece (small files, a file's next blocks) costs nothing.
 */
export class PieceReader {
  private readonly repo: Repository;
  private readonly index: PieceIndex;
  private readonly frames = new Map<string, Promise<PlainFrame>>();
  private readonly packKeys = new Map<string, Promise<Buffer>>();
  private readonly cacheFrames: number;

  constructor(repo: Repository, index: PieceIndex, options: { cacheFrames?: number } = {}) {
    this.repo = repo;
    this.index = index;
    this.cacheFrames = options.cacheFrames ?? 4;
  }

  location(id: Buffer): PieceLocation {
    const location = this.index.get(id);
    if (!location) {
      throw new CairnError('Cairn.Damaged', `piece ${id.toString('hex')} is not in the repository index`, {
        hint: 'the data it held is missing: run `cairn verify` to see which files are affected',
      });
    }
    return location;
  }

  async read(id: Buffer): Promise<Buffer> {
    const location = this.location(id);
    const cacheKey = `${location.packId}:${location.frameOffset}`;
    let frame = this.frames.get(cacheKey);
    if (!frame) {
      frame = this.fetchFrame(location);
      this.frames.set(cacheKey, frame);
      frame.catch(() => this.frames.delete(cacheKey));
      if (this.frames.size > this.cacheFrames) {
        const oldest = this.frames.keys().next().value as string;
        this.frames.delete(oldest);
      }
    }
    const plain = await frame;
    const where = `pack ${location.packId} frame @${location.frameOffset}`;
    const slot = plain.ids.findIndex((candidate) => candidate.equals(id));
    if (slot < 0 || plain.offsets[slot] !== location.offsetInFrame) {
      throw new DamagedError(`${where} does not hold piece ${id.toString('hex')} where the index says`);
    }
    return plain.data.subarray(location.offsetInFrame, location.offsetInFrame + location.length);
  }

  /** Decodes a whole frame given its bytes (verify reads packs whole). */
  async decode(location: PieceLocation, bytes: Buffer, key: Buffer): Promise<PlainFrame> {
    const where = `pack ${location.packId} frame @${location.frameOffset}`;
    const frame = decodeFrame(key, bytes, where);
    let data: Buffer;
    if (frame.codec === Codec.zstd) {
      try {
        data = await zstdDecompress(frame.payload, { maxOutputLength: Math.max(1, frame.rawLength), chunkSize: 1 << 20 });
      } catch (cause) {
        throw new DamagedError(`${where}: cannot decompress`, { cause });
      }
    } else {
      data = frame.payload;
    }
    if (data.length !== frame.rawLength) throw new DamagedError(`${where}: holds ${data.length} bytes, header says ${frame.rawLength}`);
    const offsets: number[] = [];
    let at = 0;
    for (const length of frame.lengths) {
      offsets.push(at);
      at += length;
    }
    if (at !== data.length) throw new DamagedError(`${where}: piece lengths do not add up`);
    return { ids: frame.ids, offsets, data };
  }

  async packKey(packId: string): Promise<Buffer> {
    let key = this.packKeys.get(packId);
    if (!key) {
      key = this.repo.storage
        .getRange(packKey(packId), 0, PACK_HEADER_BYTES)
        .then((header) => packDataKey(this.repo.masterKey(), packSaltFromHeader(header, packId)));
      this.packKeys.set(packId, key);
      key.catch(() => this.packKeys.delete(packId));
      if (this.packKeys.size > 4096) this.packKeys.delete(this.packKeys.keys().next().value as string);
    }
    return key;
  }

  private async fetchFrame(location: PieceLocation): Promise<PlainFrame> {
    try {
      const [key, bytes] = await Promise.all([
        this.packKey(location.packId),
        this.repo.storage.getRange(packKey(location.packId), location.frameOffset, location.frameLength),
      ]);
      return await this.decode(location, bytes, key);
    } catch (error) {
      if (error instanceof NotFoundError) {
        throw new DamagedError(`pack ${location.packId} is missing from the repository`, { cause: error });
      }
      throw error;
    }
  }
}
