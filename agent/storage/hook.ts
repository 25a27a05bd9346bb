import { spawn } from 'node:child_process';
import { CairnError, NotFoundError } from '../core/errors.ts';
import { CONFIG_KEY } from '../core/layout.ts';
import { childEnvironment } from '../core/child-env.ts';
import type { DeletableStorage, ObjectInfo, PutOptions } from '../core/storage.ts';

/**
 * A transform hook around any backend (docs/storage-hooks.md), after Vitess's
 * `backup_storage_hook`: every object's bytes go through an operator-supplied
 * command, `CMD --operation write` on the way in and `CMD --operation read` on
 * the way out. The hook's stdout is what is stored (or returned); its stderr is
 * forwarded line by line; a hook that exits non-zero or is killed fails the
 * operation with a CairnError naming the hook, the exit code and its last
 * stderr lines.
 *
 * The repository `config` object stays plain (it carries `"transform": "hook"`,
 * so opening the repository without a hook fails clearly).
 *
 * Ranged reads cannot transform a range: `getRange` reads the whole object
 * through the hook and slices it. A small LRU of recently transformed objects,
 * bounded in bytes, keeps reading many frames of one pack from running the hook
 * per frame. A put through this storage drops the key from the cache (a put
 * without ifAbsent replaces the object); repository objects are never replaced
 * by anyone else, so nothing else can make the cache stale.
 *
 * Sizes: `stat` reports the original (transformed back) size, which is what
 * offsets inside the object refer to. `list` reports the sizes of the stored
 * bytes (learning the original ones would mean reading every object), which is
 * why this wrapper sets `transform`: callers that compare listed sizes with
 * offsets (verify's truncation check) skip that check and rely on reading.
 * Modification times are the stored object's, from the backend's clock.
 */
export interface HookOptions {
  /** A shell line; `--operation read|write` is appended as arguments. */
  command: string;
  env?: NodeJS.ProcessEnv;
  /** Each line the hook writes to stderr. */
  onStderr?: (line: string) => void;
  /** Bytes of transformed objects kept for ranged reads (default 64 MiB). */
  cacheBytes?: number;
}

const DEFAULT_CACHE_BYTES = 64 << 20;

export class HookStorage implements DeletableStorage {
  readonly location: string;
  readonly atomicCreate: boolean;
  readonly transform = 'hook' as const;
  private readonly inner: DeletableStorage;
  private readonly options: HookOptions;
  private readonly cacheLimit: number;
  private readonly cache = new Map<string, { bytes: Promise<Buffer>; size: number }>();
  private cached = 0;

  constructor(inner: DeletableStorage, options: HookOptions) {
    this.inner = inner;
    this.options = options;
    this.location = inner.location;
    this.atomicCreate = inner.atomicCreate;
    this.cacheLimit = options.cacheBytes ?? DEFAULT_CACHE_BYTES;
  }

  async get(key: string): Promise<Buffer> {
    if (key === CONFIG_KEY) return this.inner.get(key);
    const hit = this.cache.get(key);
    if (hit) return Buffer.from(await hit.bytes);
    return this.runHook('read', key, await this.inner.get(key));
  }

  async getRange(key: string, offset: number, length: number): Promise<Buffer> {
    if (key === CONFIG_KEY) return this.inner.getRange(key, offset, length);
    const plain = await this.whole(key);
    if (offset < 0 || offset + length > plain.length) {
      throw new CairnError(
        'Cairn.Storage',
        `short read of ${key} in ${this.location}: wanted ${length} bytes at offset ${offset}, the storage hook returned ${plain.length}`,
        {
          hint: 'the object is truncated or the hook does not undo what it did on write; run `cairn verify --read-data`',
        },
      );
    }
    return Buffer.from(plain.subarray(offset, offset + length));
  }

  async put(key: string, data: Buffer, options?: PutOptions): Promise<void> {
    if (key === CONFIG_KEY) return this.inner.put(key, data, options);
    const stored = await this.runHook('write', key, data);
    try {
      await this.inner.put(key, stored, options);
    } finally {
      // A put without ifAbsent replaces the object: what was cached of it (or read while the put ran) is stale.
      // A refused create-if-absent changed nothing, but forgetting a cached copy is harmless.
      this.evict(key);
    }
  }

  async stat(key: string): Promise<ObjectInfo | undefined> {
    const info = await this.inner.stat(key);
    if (!info || key === CONFIG_KEY) return info;
    try {
      return { key, size: (await this.whole(key)).length, modified: info.modified };
    } catch (error) {
      if (error instanceof NotFoundError) return undefined;
      throw error;
    }
  }

  list(prefix: string): AsyncIterable<ObjectInfo> {
    return this.inner.list(prefix);
  }

  async delete(key: string): Promise<void> {
    this.evict(key);
    await this.inner.delete(key);
  }

  /** The whole transformed object, from the cache or through the hook (concurrent readers share one run). */
  private whole(key: string): Promise<Buffer> {
    const hit = this.cache.get(key);
    if (hit) {
      this.cache.delete(key);
      this.cache.set(key, hit); // most recently used last
      return hit.bytes;
    }
    const bytes = this.inner.get(key).then((stored) => this.runHook('read', key, stored));
    const entry = { bytes, size: 0 };
    this.cache.set(key, entry);
    bytes.then(
      (plain) => {
        if (this.cache.get(key) !== entry) return;
        if (plain.length > this.cacheLimit / 2) {
          this.cache.delete(key);
          return;
        }
        entry.size = plain.length;
        this.cached += plain.length;
        this.trim();
      },
      () => this.evict(key, entry),
    );
    return bytes;
  }

  private trim(): void {
    for (const [key, entry] of this.cache) {
      if (this.cached <= this.cacheLimit) break;
      if (entry.size === 0) continue; // still in flight
      this.evict(key, entry);
    }
  }

  private evict(key: string, entry = this.cache.get(key)): void {
    if (!entry || this.cache.get(key) !== entry) return;
    this.cache.delete(key);
    this.cached -= entry.size;
  }

  private runHook(operation: 'read' | 'write', key: string, input: Buffer): Promise<Buffer> {
    const { command, onStderr } = this.options;
    // The operator's command: no Cairn secret, task token or database password (core/child-env.ts).
    const env = childEnvironment(this.options.env ?? process.env, 'hook', {
      CAIRN_OBJECT: key,
      CAIRN_HOOK_OPERATION: operation,
      CAIRN_REPOSITORY_LOCATION: this.location,
    });
    return new Promise((resolve, reject) => {
      // `sh -c 'CMD "$@"' sh --operation X`: the operator's shell line, with the operation appended as arguments.
      const child = spawn('/bin/sh', ['-c', `${command} "$@"`, 'cairn-storage-hook', '--operation', operation], {
        env,
        stdio: ['pipe', 'pipe', 'pipe'],
      });
      const out: Buffer[] = [];
      let stderr = '';
      let partial = '';
      child.stdout.on('data', (d: Buffer) => out.push(d));
      child.stderr.on('data', (d: Buffer) => {
        const text = d.toString();
        stderr = (stderr + text).slice(-16 * 1024);
        const lines = (partial + text).split('\n');
        partial = lines.pop() ?? '';
        for (const line of lines) if (line.trim()) onStderr?.(line);
      });
      child.stdin.on('error', () => undefined); // a hook that stops reading early shows as its exit status
      child.stdin.end(input);
      child.on('error', (error) => reject(this.failure(operation, key, `could not be started: ${error.message}`, stderr, error)));
      child.on('close', (code, signal) => {
        if (partial.trim()) onStderr?.(partial);
        if (code === 0) resolve(Buffer.concat(out));
        else reject(this.failure(operation, key, signal ? `was killed by ${signal}` : `exited with code ${code}`, stderr));
      });
    });
  }

  private failure(operation: string, key: string, what: string, stderr: string, cause?: unknown): CairnError {
    const tail = stderr.trim().split('\n').slice(-5).join(' | ').slice(-1000);
    return new CairnError(
      'Cairn.Storage',
      `storage hook ${JSON.stringify(this.options.command)} ${what} on --operation ${operation} of ${key}${tail ? `: ${tail}` : ''}`,
      {
        hint: `test it by hand: ${this.options.command} --operation ${operation} < some-file; nothing was committed`,
        cause,
      },
    );
  }
}
