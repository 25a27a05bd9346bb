/**
 * Preloaded into every test process by `npm run test:unit` (`node --test --import`): a cache in
 * front of the real `node:crypto` scrypt, so that a test which opens the same repository twenty
 * times derives its passphrase's key once, not twenty times.
 *
 * scrypt is a pure function of its inputs, so a cached key is the very key the real function
 * returns: every input that decides the result (password, salt, length, N, r, p, and maxmem,
 * which decides whether it fails) is part of the cache key, only successes are kept, a call with
 * other inputs runs the real scrypt, and each caller gets its own copy of the key (code that
 * zeroes a key it has used cannot spoil the next one). Only the time differs: at the default
 * cost (N = 2^15, r = 8: 32 MiB, 0.1–0.2 s of a core) the suite derived ~1,500 keys, most of them
 * the same few per test file. No test depends on how long a derivation takes.
 *
 * It patches the `node:crypto` module object before any test module loads, then
 * syncBuiltinESMExports() so that `import { scrypt } from 'node:crypto'` sees it too.
 */
import crypto, { createHash, type ScryptOptions } from 'node:crypto';
import { syncBuiltinESMExports } from 'node:module';

type Callback = (error: Error | null, key: Buffer) => void;

const realScrypt = crypto.scrypt;
const derived = new Map<string, Promise<Buffer>>();

/** Inputs the cache can key on: a string or a view of bytes (Buffer, TypedArray, DataView). */
function cacheable(v: unknown): v is string | NodeJS.ArrayBufferView {
  return typeof v === 'string' || ArrayBuffer.isView(v);
}

function cacheKey(
  password: string | NodeJS.ArrayBufferView,
  salt: string | NodeJS.ArrayBufferView,
  keylen: number,
  options: ScryptOptions,
): string {
  const bytes = (v: string | NodeJS.ArrayBufferView): Uint8Array =>
    typeof v === 'string' ? Buffer.from(v, 'utf8') : new Uint8Array(v.buffer, v.byteOffset, v.byteLength);
  const h = createHash('sha256');
  for (const part of [bytes(password), bytes(salt)]) h.update(`${part.length}:`).update(part);
  const { N, r, p, maxmem, cost, blockSize, parallelization } = options;
  h.update(JSON.stringify([typeof password, typeof salt, keylen, N, r, p, maxmem, cost, blockSize, parallelization]));
  return h.digest('hex');
}

function memoScrypt(
  password: crypto.BinaryLike,
  salt: crypto.BinaryLike,
  keylen: number,
  optionsOrCallback: ScryptOptions | Callback,
  maybeCallback?: Callback,
): void {
  const callback = typeof optionsOrCallback === 'function' ? optionsOrCallback : maybeCallback;
  const options = typeof optionsOrCallback === 'function' ? {} : optionsOrCallback;
  // Anything unusual goes to the real function as it is, to fail (or not) exactly as it would.
  if (typeof callback !== 'function' || typeof options !== 'object' || options === null || !cacheable(password) || !cacheable(salt)) {
    (realScrypt as (...args: unknown[]) => void)(password, salt, keylen, optionsOrCallback, maybeCallback);
    return;
  }
  const key = cacheKey(password, salt, keylen, options);
  let pending = derived.get(key);
  if (!pending) {
    let settle: Callback = () => undefined;
    pending = new Promise<Buffer>((resolve, reject) => {
      settle = (error, result) => (error ? reject(error) : resolve(result));
    });
    // Called here, not inside the promise: bad parameters throw at the call, as they do without the cache.
    realScrypt(password, salt, keylen, options, settle);
    derived.set(key, pending);
    // A failure is not kept: the next call runs the real function again and fails as it does.
    pending.catch(() => derived.delete(key));
  }
  pending.then(
    (result) => callback(null, Buffer.from(result)),
    (error: unknown) => callback(error as Error, Buffer.alloc(0)),
  );
}

crypto.scrypt = memoScrypt as typeof crypto.scrypt;
syncBuiltinESMExports();
