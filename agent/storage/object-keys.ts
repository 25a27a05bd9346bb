import { CairnError } from '../core/errors.ts';

/** A prefix without leading, trailing or doubled slashes ('' for the bucket root). */
export function normalizePrefix(prefix: string): string {
  return prefix.replace(/\/{2,}/g, '/').replace(/^\/+|\/+$/g, '');
}

/**
 * Maps repository keys to object names in a bucket under a prefix and back:
 * the one place the cloud backends check a key (no empty, absolute, doubled,
 * backslashed or dot segments, so no key escapes the prefix) and turn a listed
 * name back into a key.
 */
export class BucketKeys {
  /** `scheme://bucket[/prefix]`, with no credentials and no query. */
  readonly location: string;
  /** The prefix with its trailing slash, or '' for the bucket root. */
  readonly base: string;

  constructor(scheme: 's3' | 'gs', bucket: string, prefix: string) {
    const normalized = normalizePrefix(prefix);
    this.base = normalized === '' ? '' : `${normalized}/`;
    this.location = normalized === '' ? `${scheme}://${bucket}` : `${scheme}://${bucket}/${normalized}`;
  }

  /** The object name of a key; a key that could escape or alias is a usage error. */
  objectName(key: string): string {
    if (
      key === '' ||
      key.startsWith('/') ||
      key.endsWith('/') ||
      key.includes('//') ||
      key.includes('\\') ||
      key.split('/').some((part) => part === '.' || part === '..')
    ) {
      throw new CairnError('Cairn.Usage', `invalid object key ${JSON.stringify(key)}`);
    }
    return this.base + key;
  }

  /** The name prefix to list for a key prefix (which may end inside a name, or be empty). */
  listPrefix(prefix: string): string {
    if (prefix.startsWith('/')) throw new CairnError('Cairn.Usage', `invalid list prefix ${JSON.stringify(prefix)}`);
    return this.base + prefix;
  }

  /**
   * The key of a listed object name, or undefined for names that are not our
   * objects: outside the prefix, or ending in '/' (the "folder" markers that
   * consoles create).
   */
  keyOf(name: string | undefined): string | undefined {
    if (name === undefined || !name.startsWith(this.base) || name.endsWith('/')) return undefined;
    return name.slice(this.base.length);
  }
}
