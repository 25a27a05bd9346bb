import { FileStorage } from '../../agent/storage/file.ts';

/** File storage that counts the frame reads (ranged reads of packs past their header) in flight at once. */
export class CountingStorage extends FileStorage {
  inFlight = 0;
  most = 0;

  override async getRange(key: string, offset: number, length: number): Promise<Buffer> {
    if (!key.startsWith('packs/') || offset === 0) return super.getRange(key, offset, length);
    this.most = Math.max(this.most, ++this.inFlight);
    try {
      // Every read started meanwhile gets its chance to start before this one ends.
      await new Promise((resolve) => setImmediate(resolve));
      return await super.getRange(key, offset, length);
    } finally {
      this.inFlight--;
    }
  }
}
