import { randomBytes } from 'node:crypto';
import { promisify } from 'node:util';
import { constants, zstdCompress as zstdCompressCb } from 'node:zlib';
import type { Compression } from '../core/config.ts';
import { Semaphore } from '../core/concurrency.ts';
import { Codec, PieceType, encodeFrame, encodeTrailer, newPackHeader, packDataKey, type CodecId, type IndexEntry, type PieceTypeId } from '../core/pack.ts';
import type { PieceIndex } from '../core/piece-index.ts';
import { packKey } from '../core/layout.ts';
import type { Repository } from '../core/repository.ts';

const zstdCompress = promisify(zstdCompressCb) as (data: Buffer, options: object) => Promise<Buffer>;

export interface PackWriterOptions {
  compression: Compression;
  /** Frames compressed at once and packs uploaded at once; memory ≈ concurrency × (frame + pack size). */
  concurrency: number;
  /** Pieces smaller than this are grouped into one frame (compressed together). */
  frameSize?: number;
  /** Packs are written every this many index entries even mid-backup, so an interrupted backup's uploads are reused. */
  indexEvery?: number;
}

export interface PackWriterStats {
  piecesAdded: number;
  rawBytesAdded: number;
  bytesAdded: number;
  packsWritten: number;
}

interface Frame {
  ids: Buffer[];
  types: PieceTypeId[];
  datas: Buffer[];
  raw: number;
}

interface OpenPack {
  id: string;
  key: Buffer;
  parts: Buffer[];
  size: number;
  entries: IndexEntry[];
}

/**
 * Turns new pieces into packs: groups small pieces into frames, compresses
 * frames on libuv's thread pool (both cores), encrypts them into the open pack,
 * uploads full packs with create-if-absent, and writes index files for what
 * was uploaded. A piece the repository or this run already has is skipped.
 */
export class PackWriter {
  readonly stats: PackWriterStats = { piecesAdded: 0, rawBytesAdded: 0, bytesAdded: 0, packsWritten: 0 };
  private readonly repo: Repository;
  private readonly index: PieceIndex;
  private readonly compression: Compression;
  private readonly frameSize: number;
  private readonly indexEvery: number;
  private readonly compressSlots: Semaphore;
  private readonly uploadSlots: Semaphore;
  private readonly inFlight = new Set<Promise<void>>();
  private readonly pending = new Set<string>();
  private frame: Frame = { ids: [], types: [], datas: [], raw: 0 };
  private pack: OpenPack | undefined;
  private unindexed: IndexEntry[] = [];
  private failure: { error: unknown } | undefined;

  constructor(repo: Repository, index: PieceIndex, options: PackWriterOptions) {
    this.repo = repo;
    this.index = index;
    this.compression = options.compression;
    this.frameSize = options.frameSize ?? 1 << 20;
    this.indexEvery = options.indexEvery ?? 50_000;
    this.compressSlots = new Semaphore(Math.max(1, options.concurrency));
    this.uploadSlots = new Semaphore(Math.max(1, options.concurrency));
  }

  /** True when the repository (or this run) already holds the piece. */
  has(id: Buffer): boolean {
    return this.index.has(id) || this.pending.has(id.toString('hex'));
  }

  /** Stores the piece unless it is already there; returns whether it was new. Waits when the pipeline is full. */
  async add(id: Buffer, type: PieceTypeId, data: Buffer): Promise<boolean> {
    this.throwIfFailed();
    if (this.has(id)) return false;
    this.pending.add(id.toString('hex'));
    const frame = this.frame;
    frame.ids.push(id);
    frame.types.push(type);
    frame.datas.push(data);
    frame.raw += data.length;
    if (frame.raw >= this.frameSize) await this.sealFrame();
    return true;
  }

  /** Makes everything added so far durable: frames, packs and index files. */
  async flush(): Promise<void> {
    if (this.frame.ids.length > 0) await this.sealFrame();
    await this.drain();
    if (this.pack && this.pack.entries.length > 0) {
      await this.uploadSlots.acquire();
      this.track(this.uploadPack(this.pack));
      this.pack = undefined;
    }
    await this.drain();
    if (this.unindexed.length > 0) {
      const entries = this.unindexed;
      this.unindexed = [];
      await this.repo.writeIndex(entries);
    }
  }

  private async drain(): Promise<void> {
    while (this.inFlight.size > 0) await Promise.allSettled([...this.inFlight]);
    this.throwIfFailed();
  }

  private async sealFrame(): Promise<void> {
    const frame = this.frame;
    this.frame = { ids: [], types: [], datas: [], raw: 0 };
    await this.compressSlots.acquire();
    this.throwIfFailed();
    this.track(
      this.compressFrame(frame).finally(() => this.compressSlots.release()),
    );
  }

  private async compressFrame(frame: Frame): Promise<void> {
    const raw = frame.datas.length === 1 ? (frame.datas[0] as Buffer) : Buffer.concat(frame.datas, frame.raw);
    let codec: CodecId = Codec.none;
    let payload = raw;
    if (this.compression.codec === 'zstd' && raw.length > 64) {
      const compressed = await zstdCompress(raw, {
        params: { [constants.ZSTD_c_compressionLevel]: this.compression.level },
        chunkSize: 1 << 20,
      });
      // Incompressible data is stored as it is: it costs nothing to restore.
      if (compressed.length < raw.length - (raw.length >> 6)) {
        codec = Codec.zstd;
        payload = compressed;
      }
    }
    this.throwIfFailed();
    const pack = (this.pack ??= this.newPack());
    const lengths = frame.datas.map((d) => d.length);
    const bytes = encodeFrame(pack.key, codec, frame.ids, lengths, payload);
    const frameOffset = pack.size;
    let offsetInFrame = 0;
    frame.ids.forEach((id, i) => {
      const entry: IndexEntry = {
        id,
        packId: pack.id,
        type: frame.types[i] as PieceTypeId,
        frameOffset,
        frameLength: bytes.length,
        offsetInFrame,
        length: lengths[i] as number,
      };
      offsetInFrame += entry.length;
      pack.entries.push(entry);
      this.index.add(entry);
      this.pending.delete(id.toString('hex'));
    });
    pack.parts.push(bytes);
    pack.size += bytes.length;
    this.stats.piecesAdded += frame.ids.length;
    this.stats.rawBytesAdded += frame.raw;
    if (pack.size >= this.repo.config.packSize) {
      this.pack = undefined;
      await this.uploadSlots.acquire();
      this.track(this.uploadPack(pack));
    }
  }

  private newPack(): OpenPack {
    const { header, salt } = newPackHeader();
    return { id: randomBytes(32).toString('hex'), key: packDataKey(this.repo.masterKey(), salt), parts: [header], size: header.length, entries: [] };
  }

  private async uploadPack(pack: OpenPack): Promise<void> {
    try {
      pack.parts.push(encodeTrailer(pack.key, pack.entries));
      const data = Buffer.concat(pack.parts);
      pack.parts = [];
      await this.repo.storage.put(packKey(pack.id), data, { ifAbsent: true });
      this.stats.bytesAdded += data.length;
      this.stats.packsWritten++;
      for (const entry of pack.entries) this.unindexed.push(entry);
      if (this.unindexed.length >= this.indexEvery) {
        const entries = this.unindexed;
        this.unindexed = [];
        await this.repo.writeIndex(entries);
      }
    } finally {
      this.uploadSlots.release();
    }
  }

  private track(work: Promise<void>): void {
    const tracked = work.catch((error: unknown) => {
      this.failure ??= { error };
    });
    this.inFlight.add(tracked);
    void tracked.finally(() => this.inFlight.delete(tracked));
  }

  private throwIfFailed(): void {
    if (this.failure) throw this.failure.error;
  }
}

export { PieceType };
