import { ID_BYTES } from '../core/crypto.ts';

/**
 * Source piece id → target piece id, 64 bytes a pair in one growing buffer
 * with an open-addressing table (ids are HMACs: uniformly spread), so a run
 * over millions of pieces stays within tens of MB.
 */
export class IdMap {
  private records = Buffer.alloc(ID_BYTES * 2 * 1024);
  private slots = new Uint32Array(2048);
  private count = 0;

  get size(): number {
    return this.count;
  }

  get(key: Buffer): Buffer | undefined {
    const record = this.find(key);
    if (record < 0) return undefined;
    const at = record * ID_BYTES * 2 + ID_BYTES;
    return Buffer.from(this.records.subarray(at, at + ID_BYTES));
  }

  set(key: Buffer, value: Buffer): void {
    if (this.find(key) >= 0) return;
    if ((this.count + 1) * 2 > this.slots.length) this.rehash(this.slots.length * 2);
    if ((this.count + 1) * ID_BYTES * 2 > this.records.length) {
      const grown = Buffer.alloc(this.records.length * 2);
      this.records.copy(grown);
      this.records = grown;
    }
    const at = this.count * ID_BYTES * 2;
    key.copy(this.records, at, 0, ID_BYTES);
    value.copy(this.records, at + ID_BYTES, 0, ID_BYTES);
    this.insert(this.count);
    this.count++;
  }

  private find(key: Buffer): number {
    const mask = this.slots.length - 1;
    for (let slot = key.readUInt32LE(0) & mask; ; slot = (slot + 1) & mask) {
      const value = this.slots[slot] as number;
      if (value === 0) return -1;
      const at = (value - 1) * ID_BYTES * 2;
      if (this.records.compare(key, 0, ID_BYTES, at, at + ID_BYTES) === 0) return value - 1;
    }
  }

  private insert(record: number): void {
    const mask = this.slots.length - 1;
    let slot = this.records.readUInt32LE(record * ID_BYTES * 2) & mask;
    while (this.slots[slot] !== 0) slot = (slot + 1) & mask;
    this.slots[slot] = record + 1;
  }

  private rehash(size: number): void {
    this.slots = new Uint32Array(size);
    for (let record = 0; record < this.count; record++) this.insert(record);
  }
}
