import { CairnError, NotFoundError } from '../core/errors.ts';

/**
 * Range guards every backend shares, so `getRange` keeps the contract's "no
 * partial reads" the same way everywhere: a malformed range is a usage error,
 * a range past the end is a storage error, never fewer bytes.
 */

/** Offset and length must be whole, non-negative numbers. */
export function checkRange(key: string, offset: number, length: number): void {
  if (!Number.isSafeInteger(offset) || offset < 0 || !Number.isSafeInteger(length) || length < 0) {
    throw new CairnError('Cairn.Usage', `invalid range of ${key}: offset ${offset}, length ${length}`);
  }
}

/** The error for a range the object does not hold in full (it is shorter than whoever asked believed). */
export function shortRangeError(location: string, key: string, offset: number, length: number, got: number, cause?: unknown): CairnError {
  return new CairnError(
    'Cairn.Storage',
    `read ${key} in ${location}: wanted ${length} bytes at offset ${offset}, the object has only ${got} there`,
    { hint: 'the object is shorter than the index says; run `cairn verify --read-data`', ...(cause === undefined ? {} : { cause }) },
  );
}

/** The error for a range that starts past the object's end (S3's InvalidRange, HTTP 416). */
export function pastEndError(where: string, cause: unknown): CairnError {
  return new CairnError('Cairn.Storage', `${where}: the range starts past the end of the object`, {
    hint: 'the object is shorter than the index says; run `cairn verify --read-data`',
    cause,
  });
}

/**
 * A ranged read over a service that cannot be asked for zero bytes and may
 * answer short: checks the range, answers an empty range by asking whether the
 * object exists (a missing object is still NotFound), and refuses an answer of
 * another length than asked.
 */
export async function exactRange(
  location: string,
  key: string,
  offset: number,
  length: number,
  service: { exists(): Promise<boolean>; read(): Promise<Buffer> },
): Promise<Buffer> {
  checkRange(key, offset, length);
  if (length === 0) {
    if (!(await service.exists())) throw new NotFoundError(key);
    return Buffer.alloc(0);
  }
  const data = await service.read();
  if (data.length !== length) throw shortRangeError(location, key, offset, length, data.length);
  return data;
}
