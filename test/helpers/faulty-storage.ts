import { CairnError } from '../../agent/core/errors.ts';
import type { DeletableStorage, ObjectInfo, PutOptions } from '../../agent/core/storage.ts';

/**
 * A fault-injecting wrapper for tests: fails chosen calls the way a crash or a
 * broken backend would, so tests can show nothing is lost and the next run
 * finishes the job.
 */
export class FaultyStorage implements DeletableStorage {
  readonly location: string;
  readonly atomicCreate: boolean;
  /** Fail every call of this kind after this many have succeeded. */
  failAfter: Partial<Record<'put' | 'delete' | 'get', number>> = {};
  readonly calls = { put: 0, delete: 0, get: 0 };
  private readonly inner: DeletableStorage;

  constructor(inner: DeletableStorage) {
    this.inner = inner;
    this.location = inner.location;
    this.atomicCreate = inner.atomicCreate;
  }

  private check(kind: 'put' | 'delete' | 'get', key: string): void {
    const limit = this.failAfter[kind];
    if (limit !== undefined && this.calls[kind] >= limit) throw new CairnError('Cairn.Storage', `injected failure: ${kind} ${key}`);
    this.calls[kind]++;
  }

  async get(key: string): Promise<Buffer> {
    this.check('get', key);
    return this.inner.get(key);
  }
  async getRange(key: string, offset: number, length: number): Promise<Buffer> {
    this.check('get', key);
    return this.inner.getRange(key, offset, length);
  }
  async put(key: string, data: Buffer, options?: PutOptions): Promise<void> {
    this.check('put', key);
    return this.inner.put(key, data, options);
  }
  async stat(key: string): Promise<ObjectInfo | undefined> {
    return this.inner.stat(key);
  }
  list(prefix: string): AsyncIterable<ObjectInfo> {
    return this.inner.list(prefix);
  }
  async delete(key: string): Promise<void> {
    this.check('delete', key);
    return this.inner.delete(key);
  }
}
