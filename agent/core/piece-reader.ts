import { promisify } from 'node:util';
import { zstdDecompress as zstdDecompressCb } from 'node:zlib';
import { ByteBudget } from './concurrency.ts';
import { CairnError, DamagedError, NotFoundError } from './errors.ts';
import { packKey } from './layout.ts';
import {
  Codec,
  FRAME_HEADER_BYTES,
  PACK_HEADER_BYTES,
  type CodecId,
  decodeFrame,
  frameAuthFailure,
  frameHeader,
  frameTable,
  packDataKey,
  packSaltFromHeader,
  type PieceLocation,
} from './pack.ts';
import type { PieceIndex } from './piece-index.ts';
import type { Repository } from './repository.ts';

const zstdDecompress = promisify(zstdDecompressCb) as (data: Buffer, options: object) => Promise<Buffer>;

interface PlainFrame {
  ids: Buffer[];
  offsets: number[];
  lengths: number[];
  data: Buffer;
  /** Per piece, 1 when an opener already found its bytes hash to its id (else the reader computes the id). */
  matches?: Uint8Array | undefined;
}

/** What an opener is asked: one frame, its data key, and what its checked cleartext header says. */
export interface FrameOpening {
  key: Buffer;
  frame: Buffer;
  headerBytes: number;
  codec: CodecId;
  count: number;
  rawLength: number;
  /** zstd's output chunk: one of the frame's raw length (see decode). */
  chunkSize: number;
}

export type OpenedFrame =
  { status: 'ok'; table: Buffer; data: Buffer; matches: Uint8Array } | { status: 'auth' | 'decompress'; message?: string | undefined };

/**
 * Decrypts and decompresses frames, and checks each piece's bytes against the id the frame's table
 * gives it, somewhere other than the main thread (pipeline/frame-threads.ts). The reader checks
 * the rest itself.
 */
export interface FrameOpener {
  open(request: FrameOpening): Promise<OpenedFrame>;
}

function notIndexed(id: Buffer): CairnError {
  return new CairnError('Cairn.Damaged', `piece ${id.toString('hex')} is not in the repository index`, {
    hint: 'the data it held is missing: run `cairn verify` to see which files are affected',
  });
}

/**
 * Reads pieces by id: fetches the frame that holds a piece (one ranged read),
 * authenticates and decompresses it, checks the frame really holds that piece
 * where the index says, and recomputes the piece's keyed id from the bytes
 * read, so content that is not the piece (a forged frame, an index entry
 * pointing at another piece's bytes) is never returned as it. A piece the
 * index places in several packs is read from the first location that passes
 * every check; it is damaged only when none does (the error names them all).
 * Recently decoded frames are cached, so reading the neighbours of a piece
 * (small files, a file's next blocks) costs nothing.
 */
/**
 * What went wrong with a frame of a pack, naming the pack and frame once: the
 * reader's own errors already start with `pack ID frame @OFFSET` (or name the
 * pack), and another such prefix would only repeat it.
 */
export function frameProblem(packId: string, frameOffset: number, error: unknown): string {
  const message = error instanceof Error ? error.message : String(error);
  return message.startsWith(`pack ${packId}`) ? message : `pack ${packId} frame @${frameOffset}: ${message}`;
}

/**
 * zstd's output chunk for a frame: one of the size the authenticated header states, so one trip to
 * the pool and no concatenation copy (with 1 MiB chunks a 1.3 MiB frame took two trips and a copy).
 * Capped: the chunk is allocated before a byte is decompressed, and frames the pack writer makes
 * stay far below the cap. One byte more than the frame holds: zlib allocates a further chunk as
 * soon as one is exactly full.
 */
function zstdChunk(rawLength: number): number {
  return Math.min(16 << 20, Math.max(64 << 10, rawLength + 1));
}

/** A decoded frame after the checks every decoder shares: its size is the header's, its pieces add up to it. */
function plainFrame(where: string, ids: Buffer[], lengths: number[], rawLength: number, data: Buffer): PlainFrame {
  if (data.length !== rawLength) throw new DamagedError(`${where}: holds ${data.length} bytes, header says ${rawLength}`);
  const offsets: number[] = [];
  let at = 0;
  for (const length of lengths) {
    offsets.push(at);
    at += length;
  }
  if (at !== data.length) throw new DamagedError(`${where}: piece lengths do not add up`);
  return { ids, offsets, lengths, data };
}

/**
 * The slot of `id` at `offset` in the frame, or -1: found by the offset (a binary search; the
 * table's pieces lie one after another), not by scanning the ids, which made a frame of thousands
 * of tiny pieces cost thousands of comparisons per piece read. Pieces of length 0 share an offset
 * with their neighbour: each slot at that offset is tried.
 */
function slotAt(plain: PlainFrame, id: Buffer, offset: number): number {
  const { offsets, ids } = plain;
  let low = 0;
  let high = offsets.length;
  while (low < high) {
    const middle = (low + high) >>> 1;
    if ((offsets[middle] as number) < offset) low = middle + 1;
    else high = middle;
  }
  for (let slot = low; slot < offsets.length && offsets[slot] === offset; slot++) if ((ids[slot] as Buffer).equals(id)) return slot;
  return -1;
}

/**
 * `part` as its own copy when it is under an eighth of the memory it lies in (a decoded frame, a
 * piece a page file's extent is cut from), else as it is: a part kept waiting then holds at most
 * eight times its size. Copying every part under half its frame cost a restore of the bench dataset
 * ~4% of its time (page faults of the copies); most pieces of mid-sized files are a quarter of theirs.
 */
export function detachSmall(part: Buffer): Buffer {
  return part.length * 8 < part.buffer.byteLength ? Buffer.from(part) : part;
}

/** What a piece read ahead is counted at, at the least (readAhead). */
const MIN_READ_AHEAD_CHARGE = 1024;
/**
 * Frames fetched and being opened at once (PieceReader's `fetchBytes`), unless the reader says: a
 * restore sets its read-ahead. Frames are ~1 MiB; 16 keep a remote store's latency covered.
 */
const DEFAULT_FETCH_BYTES = 16 << 20;

export class PieceReader {
  private readonly repo: Repository;
  private readonly index: PieceIndex;
  private readonly frames = new Map<string, Promise<PlainFrame>>();
  private readonly packKeys = new Map<string, Promise<Buffer>>();
  private readonly cacheFrames: number;
  private readonly opener: FrameOpener | undefined;
  /** Frames being fetched and opened at once, in stored bytes: whatever the index says, whoever reads. */
  private readonly fetches: ByteBudget;

  constructor(repo: Repository, index: PieceIndex, options: { cacheFrames?: number; opener?: FrameOpener; fetchBytes?: number } = {}) {
    this.repo = repo;
    this.index = index;
    this.cacheFrames = options.cacheFrames ?? 4;
    this.opener = options.opener;
    this.fetches = new ByteBudget(options.fetchBytes ?? DEFAULT_FETCH_BYTES);
  }

  /** The piece's first indexed location (its length is the same at every good one). */
  location(id: Buffer): PieceLocation {
    const location = this.index.get(id);
    if (!location) throw notIndexed(id);
    return location;
  }

  /**
   * Starts reading a piece for a reader that holds it until it is written (restore, dump), and says
   * what it will hold, for that reader's read-ahead budget: the piece's bytes (at least
   * MIN_READ_AHEAD_CHARGE, so an index that claims empty pieces cannot queue reads without end). The
   * piece comes back as its own copy when it is small beside its frame (detachSmall), so a piece
   * waiting for its writer keeps at most eight times its size alive; the frames being fetched and opened meanwhile are
   * bounded apart from the pieces (`fetchBytes`). Before both, small pieces scattered over many frames
   * (a page file's runs stored by many backups) held every frame they came from, ~100 times what the
   * budget counted.
   */
  readAhead(id: Buffer): { data: Promise<Buffer>; holds: number } {
    // The location first: a piece the index does not hold throws here, before a read is started (and left unhandled).
    const holds = Math.max(MIN_READ_AHEAD_CHARGE, this.location(id).length);
    return { data: this.read(id, { detach: true }), holds };
  }

  /** `detach`: return a piece small beside its frame as a copy (detachSmall, readAhead). */
  async read(id: Buffer, options: { detach?: boolean } = {}): Promise<Buffer> {
    const locations = this.index.locations(id);
    if (locations.length === 0) throw notIndexed(id);
    const failures: CairnError[] = [];
    for (const location of locations) {
      try {
        const data = await this.readAt(id, location);
        return options.detach ? detachSmall(data) : data;
      } catch (error) {
        // Only damage (and a missing or short pack, which is damage too) moves on to the next location;
        // a storage outage or a cancellation says nothing about the data and stops the read.
        if (!(error instanceof CairnError && error.code === 'Cairn.Damaged')) throw error;
        failures.push(error);
      }
    }
    if (failures.length === 1) throw failures[0] as CairnError;
    throw new DamagedError(
      `piece ${id.toString('hex')} cannot be read at any of its ${failures.length} indexed locations: ${failures.map((f) => f.message).join('; ')}`,
      { cause: failures[0] },
    );
  }

  /** Reads the piece at one location, or throws DamagedError saying why this location does not hold it. */
  async readAt(id: Buffer, location: PieceLocation): Promise<Buffer> {
    const cacheKey = `${location.packId}:${location.frameOffset}:${location.frameLength}`;
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
    const problem = this.pieceProblem(plain, id, location);
    if (problem === 'absent') throw new DamagedError(`${where} does not hold piece ${id.toString('hex')} where the index says`);
    if (problem === 'other bytes')
      throw new DamagedError(`${where}: the bytes stored as piece ${id.toString('hex')} are not that piece (their keyed id differs)`);
    return plain.data.subarray(location.offsetInFrame, location.offsetInFrame + location.length);
  }

  /**
   * Whether a decoded frame holds piece `id` where `location` says: 'absent' when its table has no
   * such piece at that offset and length, 'other bytes' when the bytes there do not hash to `id`.
   */
  pieceProblem(
    plain: PlainFrame,
    id: Buffer,
    location: Pick<PieceLocation, 'offsetInFrame' | 'length'>,
  ): 'absent' | 'other bytes' | undefined {
    const slot = slotAt(plain, id, location.offsetInFrame);
    if (slot < 0 || plain.lengths[slot] !== location.length) return 'absent';
    // The opener compared the bytes with the table's id at this slot, which is `id` (checked above).
    if (plain.matches) return plain.matches[slot] === 1 ? undefined : 'other bytes';
    const data = plain.data.subarray(location.offsetInFrame, location.offsetInFrame + location.length);
    return this.repo.pieceId(data).equals(id) ? undefined : 'other bytes';
  }

  /** Decodes a whole frame given its bytes (verify reads packs whole). */
  async decode(location: PieceLocation, bytes: Buffer, key: Buffer): Promise<PlainFrame> {
    const where = `pack ${location.packId} frame @${location.frameOffset}`;
    if (this.opener) return this.decodeElsewhere(this.opener, where, bytes, key);
    const frame = decodeFrame(key, bytes, where);
    let data: Buffer;
    if (frame.codec === Codec.zstd) {
      try {
        data = await zstdDecompress(frame.payload, {
          maxOutputLength: Math.max(1, frame.rawLength),
          chunkSize: zstdChunk(frame.rawLength),
        });
      } catch (cause) {
        throw new DamagedError(`${where}: cannot decompress`, { cause });
      }
    } else {
      data = frame.payload;
    }
    return plainFrame(where, frame.ids, frame.lengths, frame.rawLength, data);
  }

  private async decodeElsewhere(opener: FrameOpener, where: string, bytes: Buffer, key: Buffer): Promise<PlainFrame> {
    const { codec, count, rawLength } = frameHeader(bytes, where);
    const opened = await opener.open({
      key,
      frame: bytes,
      headerBytes: FRAME_HEADER_BYTES,
      codec,
      count,
      rawLength,
      chunkSize: zstdChunk(rawLength),
    });
    if (opened.status !== 'ok')
      throw opened.status === 'auth'
        ? frameAuthFailure(where)
        : new DamagedError(`${where}: cannot decompress`, { cause: new Error(opened.message) });
    const { ids, lengths } = frameTable(opened.table, count);
    return { ...plainFrame(where, ids, lengths, rawLength, opened.data), matches: opened.matches };
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
      return await this.fetches.run(location.frameLength, async () => {
        const [key, bytes] = await Promise.all([
          this.packKey(location.packId),
          this.repo.storage.getRange(packKey(location.packId), location.frameOffset, location.frameLength),
        ]);
        return this.decode(location, bytes, key);
      });
    } catch (error) {
      if (error instanceof NotFoundError) {
        throw new DamagedError(`pack ${location.packId} is missing from the repository`, { cause: error });
      }
      // A pack shorter than the index says was truncated (or is not the pack the index meant): damage, not an
      // outage. The backends report a range past the end as Cairn.Storage (they cannot tell why); the pack's size decides.
      if (error instanceof CairnError && error.code === 'Cairn.Storage' && !this.repo.storage.transform) {
        const info = await this.repo.storage.stat(packKey(location.packId)).catch(() => undefined);
        if (info && info.size < location.frameOffset + location.frameLength) {
          throw new DamagedError(
            `pack ${location.packId} is truncated: it holds ${info.size} bytes, the index places a frame at ${location.frameOffset}+${location.frameLength}`,
            { cause: error },
          );
        }
      }
      throw error;
    }
  }
}
