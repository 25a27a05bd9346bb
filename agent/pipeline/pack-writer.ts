import { randomBytes } from 'node:crypto';
import type { Compression } from '../core/config.ts';
import { Semaphore } from '../core/concurrency.ts';
import { ID_BYTES } from '../core/crypto.ts';
import {
  Codec,
  PieceType,
  encodeFrameInto,
  encodeTrailer,
  frameBytes,
  newPackHeader,
  packDataKey,
  type CodecId,
  type IndexEntry,
  type PieceTypeId,
} from '../core/pack.ts';
import type { PieceIndex } from '../core/piece-index.ts';
import { packKey } from '../core/layout.ts';
import type { Repository } from '../core/repository.ts';
import { BufferPool } from './buffer-pool.ts';
import { FrameCompressor } from './frame-compressor.ts';

export interface PackWriterOptions {
  compression: Compression;
  /**
   * Packs uploaded at once (frames compressed at once: one more). Buffers held ≈ (concurrency + 1)
   * × (pack + 2 × (frameSize + chunker max)): packs open or uploading, frames with zstd's output.
   */
  concurrency: number;
  /** Pieces are grouped into one frame (compressed together) until it holds this many bytes. */
  frameSize?: number;
  /** Index files are written every this many entries even mid-backup, so an interrupted backup's uploads are reused. */
  indexEvery?: number;
  /**
   * `backup --dry-run`: every pack is built (compressed and encrypted, so its size is the one a
   * backup would store) and counted in `stats`, but neither packs nor index files are written.
   */
  dryRun?: boolean | undefined;
}

export interface PackWriterStats {
  piecesAdded: number;
  rawBytesAdded: number;
  bytesAdded: number;
  packsWritten: number;
}

interface Frame {
  buffer: Buffer;
  size: number;
  ids: Buffer[];
  types: PieceTypeId[];
  lengths: number[];
}

interface OpenPack {
  id: string;
  key: Buffer;
  buffer: Buffer;
  size: number;
  entries: IndexEntry[];
}

const ENTRY_TRAILER_BYTES = ID_BYTES + 20;

/**
 * Turns new pieces into packs: copies pieces into a frame, compresses full
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
  /** One per pack buffer alive: the open pack and those uploading (so uploads ≤ concurrency). */
  private readonly packSlots: Semaphore;
  private readonly framePool: BufferPool;
  private readonly packPool: BufferPool;
  private readonly inFlight = new Set<Promise<void>>();
  private readonly pending = new Set<string>();
  /** One open frame per piece type: trees and lists stay dense in their own frames, so reading a tree never decodes data. */
  private readonly frames: Array<Frame | undefined> = [undefined, undefined, undefined];
  private pack: OpenPack | undefined;
  private unindexed: IndexEntry[] = [];
  private failure: { error: unknown } | undefined;
  private readonly dryRun: boolean;
  private unstoredData = 0;
  private readonly storedListeners: Array<() => void> = [];
  /** zstd contexts kept from frame to frame (frame-compressor.ts), freed when everything is flushed. */
  private readonly compressor: FrameCompressor | undefined;

  constructor(repo: Repository, index: PieceIndex, options: PackWriterOptions) {
    this.repo = repo;
    this.index = index;
    this.compression = options.compression;
    this.frameSize = options.frameSize ?? 1 << 20;
    this.indexEvery = options.indexEvery ?? 50_000;
    this.dryRun = options.dryRun === true;
    const concurrency = Math.max(1, options.concurrency);
    // One frame more in compression than uploads: the pool has work queued while the main thread
    // cuts and hashes. Each frame in compression holds its buffer and zstd's output.
    this.compressSlots = new Semaphore(concurrency + 1);
    // A pack buffer is taken with its slot when the pack opens and given back when its upload
    // ends, so at most concurrency + 1 exist: the open one and `concurrency` uploading.
    this.packSlots = new Semaphore(concurrency + 1);
    // A frame closes once it passes frameSize, so it holds at most frameSize plus one largest piece.
    this.framePool = new BufferPool(this.frameSize + repo.config.chunker.max, concurrency + 2);
    this.packPool = new BufferPool(repo.config.packSize + (256 << 10), concurrency + 1);
    if (this.compression.codec === 'zstd') this.compressor = new FrameCompressor(this.compression.level, concurrency + 1);
  }

  /** Calls `listener` each time a pack has been stored and counted in `stats` (progress lines: `added` moves then). */
  whenStored(listener: () => void): void {
    this.storedListeners.push(listener);
  }

  /**
   * Bytes of data pieces taken but not yet in a stored pack (waiting in a frame, a pack or an
   * upload): progress counts them as not done, so the rate and ETA are the storing's, not the reading's.
   */
  get unstoredDataBytes(): number {
    return this.unstoredData;
  }

  /** True when the repository (or this run) already holds the piece. */
  has(id: Buffer): boolean {
    return this.index.has(id) || this.pending.has(id.toString('hex'));
  }

  /**
   * Stores the piece unless it is already there; returns whether it was new.
   * `data` is copied before this returns its first await, so the caller may
   * reuse its buffer. Waits when the pipeline is full.
   */
  async add(id: Buffer, type: PieceTypeId, data: Buffer): Promise<boolean> {
    this.throwIfFailed();
    if (this.has(id)) return false;
    this.pending.add(id.toString('hex'));
    if (type === PieceType.data) this.unstoredData += data.length;
    const full: Frame[] = [];
    let frame = this.frames[type];
    if (frame && frame.size + data.length > frame.buffer.length) {
      full.push(frame);
      frame = undefined;
    }
    frame ??= { buffer: this.framePool.acquire(data.length), size: 0, ids: [], types: [], lengths: [] };
    data.copy(frame.buffer, frame.size);
    frame.size += data.length;
    frame.ids.push(id);
    frame.types.push(type);
    frame.lengths.push(data.length);
    if (frame.size >= this.frameSize) {
      full.push(frame);
      frame = undefined;
    }
    this.frames[type] = frame;
    for (const f of full) await this.sealFrame(f);
    return true;
  }

  /** Makes everything added so far durable: frames, packs and index files. */
  async flush(): Promise<void> {
    try {
      for (const [type, frame] of this.frames.entries()) {
        this.frames[type] = undefined;
        if (frame) await this.sealFrame(frame);
      }
      await this.drain();
      const pack = this.pack;
      this.pack = undefined;
      if (pack) this.startUpload(pack);
      await this.drain();
      if (this.unindexed.length > 0) {
        const entries = this.unindexed;
        this.unindexed = [];
        await this.writeIndex(entries);
      }
    } finally {
      // Whether or not everything was stored, no frame is compressed after a flush: the zstd contexts go now, not at a GC.
      this.compressor?.close();
    }
  }

  private async writeIndex(entries: IndexEntry[]): Promise<void> {
    if (!this.dryRun) await this.repo.writeIndex(entries);
  }

  private async drain(): Promise<void> {
    while (this.inFlight.size > 0) await Promise.allSettled([...this.inFlight]);
    this.throwIfFailed();
  }

  private async sealFrame(frame: Frame): Promise<void> {
    await this.compressSlots.acquire();
    this.throwIfFailed();
    this.track(this.compressFrame(frame).finally(() => this.compressSlots.release()));
  }

  private async compressFrame(frame: Frame): Promise<void> {
    const raw = frame.buffer.subarray(0, frame.size);
    let codec: CodecId = Codec.none;
    let payload = raw;
    if (this.compressor && raw.length > 64) {
      const compressed = await this.compressor.compress(raw);
      // Incompressible data is stored as it is: it costs nothing to restore.
      if (compressed.length < raw.length - (raw.length >> 6)) {
        codec = Codec.zstd;
        payload = compressed;
      }
    }
    this.throwIfFailed();
    // The frame's size is known before it is encrypted: close a pack that cannot take it, so
    // pack buffers need only packSize plus the trailer, and each frame is encrypted once.
    const bytes = frameBytes(frame.ids.length, payload.length);
    const room = (entries: number): number => bytes + (entries + frame.ids.length) * ENTRY_TRAILER_BYTES + 64;
    // Opening a pack may wait for a slot, and other frames run meanwhile: look again after it.
    let pack: OpenPack;
    for (;;) {
      const open = this.pack;
      if (open && open.entries.length > 0 && open.size + room(open.entries.length) > open.buffer.length) {
        this.pack = undefined;
        this.startUpload(open);
      }
      if (this.pack) {
        pack = this.pack;
        break;
      }
      await this.openPack();
    }
    if (pack.size + room(pack.entries.length) > pack.buffer.length) pack = this.growPack(pack, room(pack.entries.length));
    // Encrypted straight into the pack: no frame-sized copy is made on the way.
    const frameOffset = pack.size;
    pack.size += encodeFrameInto(pack.buffer, frameOffset, pack.key, codec, frame.ids, frame.lengths, payload);
    this.framePool.release(frame.buffer);
    this.append(pack, frame, frameOffset, bytes);
    if (pack.size >= this.repo.config.packSize) {
      this.pack = undefined;
      this.startUpload(pack);
    }
  }

  /**
   * Opens a pack unless one is open (frames are encrypted with the key of the pack they go into).
   * It waits for a pack slot first, and other frames run meanwhile: one of them may open it.
   */
  private async openPack(): Promise<void> {
    await this.packSlots.acquire();
    if (this.pack || this.failure) {
      this.packSlots.release();
      this.throwIfFailed();
    } else {
      const { header, salt } = newPackHeader();
      const buffer = this.packPool.acquire();
      header.copy(buffer, 0);
      this.pack = {
        id: randomBytes(32).toString('hex'),
        key: packDataKey(this.repo.masterKey(), salt),
        buffer,
        size: header.length,
        entries: [],
      };
    }
  }

  private growPack(pack: OpenPack, extra: number): OpenPack {
    const bigger = Buffer.allocUnsafeSlow(pack.size + extra);
    pack.buffer.copy(bigger, 0, 0, pack.size);
    this.packPool.release(pack.buffer);
    pack.buffer = bigger;
    return pack;
  }

  private append(pack: OpenPack, frame: Frame, frameOffset: number, frameLength: number): void {
    let offsetInFrame = 0;
    frame.ids.forEach((id, i) => {
      const length = frame.lengths[i] as number;
      const entry: IndexEntry = {
        id,
        packId: pack.id,
        type: frame.types[i] as PieceTypeId,
        frameOffset,
        frameLength,
        offsetInFrame,
        length,
      };
      offsetInFrame += length;
      pack.entries.push(entry);
      this.index.add(entry);
      this.pending.delete(id.toString('hex'));
    });
    this.stats.piecesAdded += frame.ids.length;
    this.stats.rawBytesAdded += frame.size;
  }

  /** Uploads a closed pack; it already holds its slot (taken when it opened). */
  private startUpload(pack: OpenPack): void {
    this.track(this.uploadPack(pack));
  }

  private async uploadPack(pack: OpenPack): Promise<void> {
    try {
      const trailer = encodeTrailer(pack.key, pack.entries);
      if (pack.size + trailer.length > pack.buffer.length) this.growPack(pack, trailer.length);
      trailer.copy(pack.buffer, pack.size);
      const size = pack.size + trailer.length;
      if (!this.dryRun) await this.repo.storage.put(packKey(pack.id), pack.buffer.subarray(0, size), { ifAbsent: true });
      this.stats.bytesAdded += size;
      this.stats.packsWritten++;
      for (const entry of pack.entries) if (entry.type === PieceType.data) this.unstoredData -= entry.length;
      for (const listener of this.storedListeners) listener();
      for (const entry of pack.entries) this.unindexed.push(entry);
      if (this.unindexed.length >= this.indexEvery) {
        const entries = this.unindexed;
        this.unindexed = [];
        await this.writeIndex(entries);
      }
    } finally {
      this.packPool.release(pack.buffer);
      this.packSlots.release();
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
