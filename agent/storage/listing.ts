import { CairnError } from '../core/errors.ts';
import type { ObjectInfo } from '../core/storage.ts';
import type { BucketKeys } from './object-keys.ts';

/** One page of a bucket listing as the SDK gave it. */
export interface ListedPage {
  objects: Iterable<{ name: string | undefined; size: number | string | undefined; modified: Date | string | undefined }>;
  /** The token of the next page, or undefined after the last. */
  next: string | undefined;
}

/**
 * The list skeleton of the cloud backends: page after page (never the whole
 * listing in memory), names outside the prefix and folder markers skipped,
 * keys relative to the repository, every failure through the backend's one
 * translation.
 */
export async function* listBucket(
  keys: BucketKeys,
  prefix: string,
  fetchPage: (namePrefix: string, token: string | undefined) => Promise<ListedPage>,
  translate: (error: unknown) => Error,
  precisionMs = 1,
): AsyncIterable<ObjectInfo> {
  const namePrefix = keys.listPrefix(prefix);
  let token: string | undefined;
  do {
    let page: ListedPage;
    try {
      page = await fetchPage(namePrefix, token);
    } catch (error) {
      throw translate(error);
    }
    for (const object of page.objects) {
      const key = keys.keyOf(object.name);
      if (key === undefined) continue;
      yield { key, size: Number(object.size ?? 0), modified: modifiedTime(object.modified, key, keys.location, precisionMs) };
    }
    token = page.next;
  } while (token !== undefined);
}

/**
 * A modification time as ObjectInfo holds it (whole milliseconds since the
 * epoch) from what a service reports (a Date, an RFC 3339 text). A missing or
 * unreadable one fails: inventing a time (0, or this host's now) would make a
 * record look older or younger than it is. `precisionMs` truncates to what
 * every answer of the service carries (S3: whole seconds, all that a HEAD
 * answer's Last-Modified holds), so stat and list agree.
 */
export function modifiedTime(value: Date | string | number | undefined, key: string, location: string, precisionMs = 1): number {
  const ms = value instanceof Date ? value.getTime() : typeof value === 'string' ? Date.parse(value) : value;
  if (ms === undefined || !Number.isFinite(ms)) {
    throw new CairnError('Cairn.Storage', `${location} gave no modification time for ${key} (${JSON.stringify(value ?? null)})`, {
      hint: 'the storage must report when each object was stored (S3 LastModified, GCS timeCreated); use a server that does',
    });
  }
  return Math.floor(ms / precisionMs) * precisionMs;
}
