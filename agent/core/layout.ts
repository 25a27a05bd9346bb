/**
 * Every object name in a repository (docs/repository-format.md, "Layout"): the one place
 * that spells them, so a reader finds the whole layout here and a new kind of object
 * starts here. Modules build names with these constants and functions, never by hand.
 *
 *   config                                   format version, repository id, chunker parameters
 *   keys/<id>                                the master key, wrapped (passphrase or KMS)
 *   key-check                                sealed at init: tells the true master key from others (core/key-check.ts)
 *   packs/<2 hex>/<id>                       pieces, many to an object
 *   index/<id>                               which pack holds which piece
 *   snapshots/<id>                           manifests
 *   locks/<holder>-<seq>                     lease records (core/locks.ts)
 *   history/<time>-<run>-<seq>               the audit trail (core/history.ts)
 *   pins/<snapshot id>                       snapshots retention must keep
 *   gc/<generation>[.swept]                  garbage collection's marks and their sweeps (core/gc-generation.ts)
 *   damage/<id>                              damage markers: damaged pieces, packs and the snapshots they affect (core/damage.ts)
 *   logs/<stream>/files/<name>               archived WAL or binlog files (core/log-archive.ts)
 *   logs/<stream>/meta/<time>-<rand>         batches of records describing them
 *   orchestration/runs/<hash>                one per scheduled backup time (core/run-lease.ts)
 *   orchestration/lease                      the running scheduled backup's lease
 *   orchestration/gc/<generation>            packs the control plane's sweep deletes (core/collection.ts)
 */
/**
 * The newest repository format this cairn reads and the one `init` writes. Format
 * 2 adds page files (core/page-file.ts); a format-1 repository keeps working in
 * its own layout (read, restore, back up without page files).
 */
export const FORMAT_VERSION = 2;

export const CONFIG_KEY = 'config';
export const KEYS_PREFIX = 'keys/';
/** Sealed at init, before the config: the object only the true master key opens (core/key-check.ts). */
export const KEY_CHECK_KEY = 'key-check';
export const PACKS_PREFIX = 'packs/';
export const INDEX_PREFIX = 'index/';
export const SNAPSHOTS_PREFIX = 'snapshots/';
export const LOCKS_PREFIX = 'locks/';
export const HISTORY_PREFIX = 'history/';
export const PINS_PREFIX = 'pins/';
/** Garbage collection's sealed marks (`gc/<generation>`) and sweep records (`gc/<generation>.swept`). */
export const GC_PREFIX = 'gc/';
/** Create-only damage markers (core/damage.ts): a host adds them, only an operator with delete rights removes one. */
export const DAMAGE_PREFIX = 'damage/';

/** The log archive: `logs/<stream>/` holds LOG_FILES_DIR and LOG_BATCHES_DIR. */
export const LOGS_PREFIX = 'logs/';
export const LOG_FILES_DIR = 'files/';
export const LOG_BATCHES_DIR = 'meta/';

/** What the control plane writes (the agent never does). */
export const ORCHESTRATION_PREFIX = 'orchestration/';
export const RUNS_PREFIX = `${ORCHESTRATION_PREFIX}runs/`;
export const LEASE_KEY = `${ORCHESTRATION_PREFIX}lease`;
export const COLLECTIONS_PREFIX = `${ORCHESTRATION_PREFIX}gc/`;

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

export function pinKey(snapshotId: string): string {
  return `${PINS_PREFIX}${snapshotId}`;
}

export function damageKey(markerId: string): string {
  return `${DAMAGE_PREFIX}${markerId}`;
}

/** A lease record: the holder's records sort by their zero-padded sequence number. */
export function lockKey(holder: string, seq: number): string {
  return `${LOCKS_PREFIX}${holder}-${String(seq).padStart(8, '0')}`;
}

/** A history event: names sort by time, then by the writing run and its own sequence. */
export function historyKey(stamp: string, run: string, seq: number): string {
  return `${HISTORY_PREFIX}${stamp}-${run}-${String(seq).padStart(6, '0')}`;
}

/** The folder of one log stream (the stream name is validated by core/log-archive.ts). */
export function logStreamPrefix(stream: string): string {
  return `${LOGS_PREFIX}${stream}/`;
}

export function gcGenerationKey(generation: string): string {
  return `${GC_PREFIX}${generation}`;
}

export function gcSweptKey(generation: string): string {
  return `${GC_PREFIX}${generation}.swept`;
}

export function collectionKey(generation: string): string {
  return `${COLLECTIONS_PREFIX}${generation}`;
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
