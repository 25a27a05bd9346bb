import type { DeletableStorage, ObjectInfo, PutOptions } from '../../agent/core/storage.ts';

/**
 * Storage views for the garbage-collection tests (issue 16): one that runs a
 * step of another operation at an exact point of this one, and one that does
 * not show other holders' locks (as if an operator had run `unlock --all`), so
 * a test can show that what GC deletes does not depend on locks.
 */

/** Runs `hook` once, inside the first put under `prefix` (awaited before the put goes through). */
export class HookedStorage implements DeletableStorage {
  readonly location: string;
  readonly atomicCreate: boolean;
  private readonly inner: DeletableStorage;
  private hook: (() => Promise<void>) | undefined;
  private readonly prefix: string;
  constructor(inner: DeletableStorage, prefix: string, hook: () => Promise<void>) {
    this.inner = inner;
    this.location = inner.location;
    this.atomicCreate = inner.atomicCreate;
    this.prefix = prefix;
    this.hook = hook;
  }
  get(key: string): Promise<Buffer> {
    return this.inner.get(key);
  }
  getRange(key: string, offset: number, length: number): Promise<Buffer> {
    return this.inner.getRange(key, offset, length);
  }
  async put(key: string, data: Buffer, options?: PutOptions): Promise<void> {
    if (this.hook && key.startsWith(this.prefix)) {
      const hook = this.hook;
      this.hook = undefined;
      await hook();
    }
    return this.inner.put(key, data, options);
  }
  stat(key: string): Promise<ObjectInfo | undefined> {
    return this.inner.stat(key);
  }
  list(prefix: string): AsyncIterable<ObjectInfo> {
    return this.inner.list(prefix);
  }
  delete(key: string): Promise<void> {
    return this.inner.delete(key);
  }
}

/** Hides the lock records it did not write itself: a holder that cannot see the others' locks. */
export class LockBlindStorage implements DeletableStorage {
  readonly location: string;
  readonly atomicCreate: boolean;
  private readonly inner: DeletableStorage;
  private readonly own = new Set<string>();
  constructor(inner: DeletableStorage) {
    this.inner = inner;
    this.location = inner.location;
    this.atomicCreate = inner.atomicCreate;
  }
  get(key: string): Promise<Buffer> {
    return this.inner.get(key);
  }
  getRange(key: string, offset: number, length: number): Promise<Buffer> {
    return this.inner.getRange(key, offset, length);
  }
  put(key: string, data: Buffer, options?: PutOptions): Promise<void> {
    if (key.startsWith('locks/')) this.own.add(key);
    return this.inner.put(key, data, options);
  }
  stat(key: string): Promise<ObjectInfo | undefined> {
    return this.inner.stat(key);
  }
  async *list(prefix: string): AsyncIterable<ObjectInfo> {
    for await (const object of this.inner.list(prefix)) if (!object.key.startsWith('locks/') || this.own.has(object.key)) yield object;
  }
  delete(key: string): Promise<void> {
    return this.inner.delete(key);
  }
}
