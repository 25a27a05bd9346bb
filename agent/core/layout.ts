/** Object names in a repository (docs/repository-format.md, "Layout"). */
export const FORMAT_VERSION = 1;

export const CONFIG_KEY = 'config';
export const KEYS_PREFIX = 'keys/';
export const PACKS_PREFIX = 'packs/';
export const INDEX_PREFIX = 'index/';
export const SNAPSHOTS_PREFIX = 'snapshots/';
export const LOCKS_PREFIX = 'locks/';
export const HISTORY_PREFIX = 'history/';
export const PINS_PREFIX = 'pins/';

const HEX64 = /^[0-9a-f]{64}$/;
const HEX32 = /^[0-9a-f]{32}$/;

export function packKey(packId: string): string {
  return `${PACKS_PREFIX}${packId.slice(0, 2)}/${packId}`;
}

export function indexKey(indexId: string): string {
  return `${INDEX_PREFIX}${indexId}`;
}

export function snapshotKey(snapshotId: string): string {
  return `${SNAPSHOTS_PREFIX}${snapshotId}`;
}

export function keyFileKey(keyId: string): string {
  return `${KEYS_PREFIX}${keyId}`;
}

/** The id at the end of a listed key, or undefined for a name that is not ours (temp files, foreign objects). */
export function idFromKey(key: string, prefix: string): string | undefined {
  if (!key.startsWith(prefix)) return undefined;
  const name = key.slice(key.lastIndexOf('/') + 1);
  return HEX64.test(name) || HEX32.test(name) ? name : undefined;
}

export function isHexId(value: string): boolean {
  return HEX64.test(value);
}
