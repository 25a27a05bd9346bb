import { ID_BYTES } from './crypto.ts';
import type { IndexEntry, PieceLocation, PieceTypeId } from './pack.ts';

const REC = ID_BYTES + 4 + 4 + 16; // id | packNo | type+pad | frameOffset frameLength offsetInFrame length

/**
 * Where every piece of the repository lives, in ~64 bytes per location (a JS Map of
 * strings takes ~4× that): records in one growing Buffer, an open-addressing
 * table of record numbers keyed by the id's first bytes (ids are HMACs, so
 * uniformly spread). A million pieces — a terabyte at 1 MiB chunks — is 64 MB.
 *
 * A piece may have several locations (two backups uploaded it, a repack copied
 * it, or an index file written by a hostile host claims it lives elsewhere):
 * every distinct location is kept, in the order added. Nothing here can tell a
 * true location from a forged one, so readers try them all (PieceReader) and
 * garbage collection keeps every pack any location of a used piece names.
 */
export class PieceIndex {
  /**
   * Index files that could not be read (junk, or sealed around junk: anyone with create rights can
   * write one). Readers go on without them, a piece they alone named reads as missing; garbage
   * collection refuses while any is listed (it could not tell which packs they keep alive).
   */
  readonly unreadable: Array<{ name: string; error: string }> = [];
  private readonly packIds: string[] = [];
  private readonly packNumbers = new Map<string, number>();
  private records = Buffer.alloc(REC * 1024);
  private slots = new Uint32Array(2048);
  private count = 0;
  private pieces = 0;

  /** How many distinct pieces (not locations). */
  get size(): number {
    return this.pieces;
  }

  /** How many locations, over all pieces. */
  get locationCount(): number {
    return this.count;
  }

  get packs(): readonly string[] {
    return this.packIds;
  }

  has(id: Buffer): boolean {
    return this.find(id) >= 0;
  }

  /** The piece's first location (see `locations` for all). */
  get(id: Buffer): PieceLocation | undefined {
    const record = this.find(id);
    return record < 0 ? undefined : this.location(record);
  }

  /** Every location of the piece, in the order they were added. */
  locations(id: Buffer): PieceLocation[] {
    return this.recordsOf(id).map((record) => this.location(record));
  }

  /** Adds a location of a piece; a location already known (same pack, frame and offset) is not added twice. */
  add(entry: IndexEntry): void {
    const known = this.recordsOf(entry.id);
    for (const record of known) {
      const at = record * REC;
      if (
        this.packIds[this.records.readUInt32LE(at + ID_BYTES)] === entry.packId &&
        this.records.readUInt32LE(at + ID_BYTES + 8) === entry.frameOffset &&
        this.records.readUInt32LE(at + ID_BYTES + 16) === entry.offsetInFrame
      )
        return;
    }
    if (known.length === 0) this.pieces++;
    if ((this.count + 1) * 2 > this.slots.length) this.rehash(this.slots.length * 2);
    if ((this.count + 1) * REC > this.records.length) {
      const grown = Buffer.alloc(this.records.length * 2);
      this.records.copy(grown);
      this.records = grown;
    }
    let packNo = this.packNumbers.get(entry.packId);
    if (packNo === undefined) {
      packNo = this.packIds.length;
      this.packIds.push(entry.packId);
      this.packNumbers.set(entry.packId, packNo);
    }
    const at = this.count * REC;
    entry.id.copy(this.records, at, 0, ID_BYTES);
    this.records.writeUInt32LE(packNo, at + ID_BYTES);
    this.records.writeUInt8(entry.type, at + ID_BYTES + 4);
    this.records.writeUInt32LE(entry.frameOffset, at + ID_BYTES + 8);
    this.records.writeUInt32LE(entry.frameLength, at + ID_BYTES + 12);
    this.records.writeUInt32LE(entry.offsetInFrame, at + ID_BYTES + 16);
    this.records.writeUInt32LE(entry.length, at + ID_BYTES + 20);
    this.insertSlot(this.count);
    this.count++;
  }

  /**
   * Drops every location of the pieces `doomed` says yes to (a backup forgetting pieces a pending
   * garbage collection names, so it uploads them again); returns how many pieces were dropped.
   */
  removeWhere(doomed: (id: Buffer) => boolean): number {
    let kept = 0;
    const dropped = new Set<string>();
    for (let record = 0; record < this.count; record++) {
      const at = record * REC;
      const id = this.records.subarray(at, at + ID_BYTES);
      if (doomed(id)) {
        dropped.add(id.toString('hex'));
        continue;
      }
      if (kept !== record) this.records.copy(this.records, kept * REC, at, at + REC);
      kept++;
    }
    if (dropped.size === 0) return 0;
    this.count = kept;
    this.pieces -= dropped.size;
    this.rehash(this.slots.length);
    return dropped.size;
  }

  *entries(): IterableIterator<IndexEntry> {
    for (let record = 0; record < this.count; record++) {
      const at = record * REC;
      yield { id: Buffer.from(this.records.subarray(at, at + ID_BYTES)), ...this.location(record) };
    }
  }

  private location(record: number): PieceLocation {
    const at = record * REC;
    return {
      packId: this.packIds[this.records.readUInt32LE(at + ID_BYTES)] as string,
      type: this.records.readUInt8(at + ID_BYTES + 4) as PieceTypeId,
      frameOffset: this.records.readUInt32LE(at + ID_BYTES + 8),
      frameLength: this.records.readUInt32LE(at + ID_BYTES + 12),
      offsetInFrame: this.records.readUInt32LE(at + ID_BYTES + 16),
      length: this.records.readUInt32LE(at + ID_BYTES + 20),
    };
  }

  /** The records of every location of `id`: all sit on its probe sequence before the first empty slot. */
  private recordsOf(id: Buffer): number[] {
    const found: number[] = [];
    const mask = this.slots.length - 1;
    for (let slot = id.readUInt32LE(0) & mask; ; slot = (slot + 1) & mask) {
      const value = this.slots[slot] as number;
      if (value === 0) return found.sort((a, b) => a - b);
      const at = (value - 1) * REC;
      if (this.records.compare(id, 0, ID_BYTES, at, at + ID_BYTES) === 0) found.push(value - 1);
    }
  }

  private find(id: Buffer): number {
    const mask = this.slots.length - 1;
    for (let slot = id.readUInt32LE(0) & mask; ; slot = (slot + 1) & mask) {
      const value = this.slots[slot] as number;
      if (value === 0) return -1;
      const at = (value - 1) * REC;
      if (this.records.compare(id, 0, ID_BYTES, at, at + ID_BYTES) === 0) return value - 1;
    }
  }

  private insertSlot(record: number): void {
    const mask = this.slots.length - 1;
    let slot = this.records.readUInt32LE(record * REC) & mask;
    while (this.slots[slot] !== 0) slot = (slot + 1) & mask;
    this.slots[slot] = record + 1;
  }

  private rehash(size: number): void {
    this.slots = new Uint32Array(size);
    for (let record = 0; record < this.count; record++) this.insertSlot(record);
  }
}
