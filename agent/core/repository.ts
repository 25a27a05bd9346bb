import { randomBytes } from 'node:crypto';
import { AlreadyExistsError, CairnError, NotFoundError, DamagedError, errorMessage } from './errors.ts';
import { resolveSnapshotId } from './snapshot-choice.ts';
import { boundSnapshotTime, type SnapshotListing } from './snapshot-time.ts';
import {
  DEFAULT_CHUNKER,
  DEFAULT_COMPRESSION,
  DEFAULT_PACK_SIZE,
  parseRepositoryConfig,
  type ChunkerParams,
  type Compression,
  type RepositoryConfig,
} from './config.ts';
import { deriveKey, hmac, open as openSealed, seal as sealBytes } from './crypto.ts';
import { openObject, sealObject, type EnvelopeKindName } from './envelope.ts';
import { sealKeyCheck, unlockTrueKey } from './key-check.ts';
import { newMasterKey, parseKeyFile, passphraseUnlocker, wrapMasterKey, type KeyFile, type StoredKey, type Unlocker } from './keyfile.ts';
import {
  CONFIG_KEY,
  FORMAT_VERSION,
  INDEX_PREFIX,
  KEYS_PREFIX,
  KEY_CHECK_KEY,
  SNAPSHOTS_PREFIX,
  idFromKey,
  indexKey,
  keyFileKey,
  snapshotKey,
} from './layout.ts';
import { decodeIndexEntries, encodeIndexEntries, type IndexEntry } from './pack.ts';
import { PieceIndex } from './piece-index.ts';
import { decodeSnapshot, type Snapshot } from './snapshot.ts';
import type { Storage } from './storage.ts';
import { mapLimit } from './concurrency.ts';

export interface Who {
  host: string;
  user: string;
}

export interface OpenOptions {
  /** Told about each key file skipped because it cannot be read (stderr `warning:` lines unless given). */
  warn?: ((message: string) => void) | undefined;
}

export interface InitOptions {
  chunker?: ChunkerParams;
  compression?: Compression;
  packSize?: number;
  /** Another repository's chunker key (`copy --to-init`), so data is cut as that repository cuts it. */
  chunkerSeed?: Buffer;
  /** The format to write: FORMAT_VERSION unless a test needs a format-1 repository. */
  formatVersion?: 1 | typeof FORMAT_VERSION;
}

/**
 * An open repository: its config and the unwrapped master key, with the
 * operations every command shares. It touches storage only through the
 * Storage interface it was handed.
 */
export class Repository {
  readonly storage: Storage;
  readonly config: RepositoryConfig;
  readonly keyId: string;
  private readonly master: Buffer;
  private readonly idKey: Buffer;
  private readonly chunkerKey: Buffer;

  private constructor(storage: Storage, config: RepositoryConfig, master: Buffer, keyId: string) {
    this.storage = storage;
    this.config = config;
    this.master = master;
    this.keyId = keyId;
    this.idKey = deriveKey(master, 'cairn/v1/piece-id');
    this.chunkerKey = config.chunkerKey === undefined ? deriveKey(master, 'cairn/v1/chunker') : unwrapChunkerKey(master, config);
  }

  /** `wrap` is a passphrase, or makes the key files (KMS, several wrappings) for the new master key. */
  static async init(
    storage: Storage,
    wrap: string | ((master: Buffer, repositoryId: string) => Promise<KeyFile[]>),
    who: Who,
    options: InitOptions = {},
  ): Promise<Repository> {
    if (await storage.stat(CONFIG_KEY)) {
      throw new CairnError('Cairn.AlreadyExists', `a repository already exists at ${storage.location}`, {
        hint: 'use it as it is, or choose another location for a new repository',
      });
    }
    const config: RepositoryConfig = {
      format: 'cairn',
      version: options.formatVersion ?? FORMAT_VERSION,
      id: randomBytes(32).toString('hex'),
      created: new Date().toISOString(),
      chunker: options.chunker ?? DEFAULT_CHUNKER,
      packSize: options.packSize ?? DEFAULT_PACK_SIZE,
      compression: options.compression ?? DEFAULT_COMPRESSION,
      ...(storage.transform ? { transform: storage.transform } : {}),
    };
    const master = newMasterKey();
    if (options.chunkerSeed)
      config.chunkerKey = sealBytes(chunkerWrapKey(master), options.chunkerSeed, chunkerWrapAad(config.id)).toString('base64');
    const keyFiles = typeof wrap === 'string' ? [await wrapMasterKey(master, wrap, config.id, who)] : await wrap(master, config.id);
    const keyIds = keyFiles.map(() => randomBytes(16).toString('hex'));
    const keyId = keyIds[0] as string;
    for (const [i, keyFile] of keyFiles.entries())
      await storage.put(keyFileKey(keyIds[i] as string), Buffer.from(JSON.stringify(keyFile, null, 2)), { ifAbsent: true });
    // Before the config, so its storage time is never later than the config's: nothing added later can pass for it.
    await storage.put(KEY_CHECK_KEY, sealKeyCheck(master, config.id, config.created), { ifAbsent: true });
    // The config is written last and only if absent: it is what makes a repository exist.
    await storage.put(CONFIG_KEY, Buffer.from(JSON.stringify(config, null, 2)), { ifAbsent: true });
    return new Repository(storage, config, master, keyId);
  }

  static async open(storage: Storage, passphrase: string, options: OpenOptions = {}): Promise<Repository> {
    return Repository.openWith(storage, passphraseUnlocker(passphrase), options);
  }

  /**
   * Opens with whatever `unlock` makes of the key files (passphrase, KMS, a recovery kit: agent/cli/open-repository.ts).
   * A key file that cannot be parsed is skipped with a warning, so one junk object under keys/ cannot lock
   * everyone out: the unlocker tries the others.
   */
  static async openWith(storage: Storage, unlock: Unlocker, options: OpenOptions = {}): Promise<Repository> {
    let raw: Buffer;
    try {
      raw = await storage.get(CONFIG_KEY);
    } catch (error) {
      if (error instanceof NotFoundError) {
        throw new CairnError('Cairn.RepositoryNotFound', `there is no cairn repository at ${storage.location}`, {
          hint: 'check --repo / CAIRN_REPOSITORY, or create one with `cairn init`',
          cause: error,
        });
      }
      throw error;
    }
    const config = parseRepositoryConfig(raw, storage.location);
    if (config.transform !== storage.transform) {
      throw new CairnError(
        'Cairn.Usage',
        config.transform
          ? `the repository at ${storage.location} stores its objects through a storage hook; it needs --storage-hook`
          : `the repository at ${storage.location} was created without a storage hook; it cannot be opened with --storage-hook`,
        {
          hint: config.transform
            ? 'pass the same --storage-hook CMD (or CAIRN_STORAGE_HOOK) it was created with'
            : 'drop --storage-hook / CAIRN_STORAGE_HOOK for this repository',
        },
      );
    }
    const keys: StoredKey[] = [];
    const warn = options.warn ?? ((message: string): void => void process.stderr.write(`warning: ${message}\n`));
    for await (const object of storage.list(KEYS_PREFIX)) {
      const id = idFromKey(object.key, KEYS_PREFIX);
      if (!id) continue;
      const name = keyFileKey(id);
      try {
        keys.push({ id, name, file: parseKeyFile(await storage.get(name), name) });
      } catch (error) {
        if (error instanceof NotFoundError) continue; // removed while we listed
        if (!(error instanceof CairnError && error.code === 'Cairn.Damaged')) throw error; // storage failures are not junk
        warn(`skipped the key file ${name}, which cannot be read (${errorMessage(error)}); the other key files are tried`);
      }
    }
    keys.sort((a, b) => a.id.localeCompare(b.id));
    const { master, keyId } = await unlockTrueKey(storage, config, keys, unlock, warn);
    return new Repository(storage, config, master, keyId);
  }

  /**
   * Writes the key-check object if the repository has none (one created before it existed), create-only.
   * It anchors keys only while it is the repository's oldest sealed object (core/key-check.ts), so this
   * matters for a repository that holds nothing sealed yet; it never replaces one.
   */
  async ensureKeyCheck(): Promise<void> {
    if (await this.storage.stat(KEY_CHECK_KEY)) return;
    try {
      await this.storage.put(KEY_CHECK_KEY, sealKeyCheck(this.master, this.config.id, new Date().toISOString()), { ifAbsent: true });
    } catch (error) {
      if (!(error instanceof AlreadyExistsError)) throw error;
    }
  }

  get id(): string {
    return this.config.id;
  }

  /** Whether backups may store page files (format 2; core/page-file.ts). */
  get pageFiles(): boolean {
    return this.config.version >= 2;
  }

  /** Piece id: HMAC-SHA256 under a repository key, so ids reveal nothing about content to whoever lacks the key. */
  pieceId(data: Buffer): Buffer {
    return hmac(this.idKey, data);
  }

  /** The key under which piece ids are computed, for threads that check pieces off the main thread (pipeline/frame-threads.ts). */
  pieceIdKey(): Buffer {
    return this.idKey;
  }

  /** Key that seeds the content-defined chunker, so cut points do not leak content either. */
  chunkerSeed(): Buffer {
    return this.chunkerKey;
  }

  masterKey(): Buffer {
    return this.master;
  }

  seal(kind: EnvelopeKindName, name: string, payload: Buffer): Buffer {
    return sealObject(this.master, kind, name, payload);
  }

  unseal(kind: EnvelopeKindName, name: string, data: Buffer): Buffer {
    return openObject(this.master, kind, name, data);
  }

  /**
   * Every index file's entries. One that does not open or decode (damage: a storage error still
   * throws) is skipped, listed in `unreadable` and reported through `warn`: one junk object must not
   * stop every backup and restore (docs/repository-format.md, "Index files").
   */
  async loadIndex(concurrency = 8, warn?: (message: string) => void): Promise<PieceIndex> {
    const index = new PieceIndex();
    const ids: string[] = [];
    for await (const object of this.storage.list(INDEX_PREFIX)) {
      const id = idFromKey(object.key, INDEX_PREFIX);
      if (id) ids.push(id);
    }
    await mapLimit(ids, concurrency, async (id) => {
      const name = indexKey(id);
      const data = await this.storage.get(name);
      let entries: IndexEntry[];
      try {
        entries = decodeIndexEntries(this.unseal('index', name, data), name);
      } catch (error) {
        if (!(error instanceof CairnError) || error.code !== 'Cairn.Damaged') throw error;
        index.unreadable.push({ name, error: errorMessage(error) });
        warn?.(
          `index file ${name} cannot be read and is skipped (${errorMessage(error)}); \`cairn repair index\` rebuilds the index from the packs`,
        );
        return;
      }
      for (const entry of entries) index.add(entry);
    });
    return index;
  }

  async writeIndex(entries: IndexEntry[]): Promise<string> {
    const id = randomBytes(32).toString('hex');
    const name = indexKey(id);
    await this.storage.put(name, this.seal('index', name, encodeIndexEntries(entries)), { ifAbsent: true });
    return id;
  }

  async saveSnapshot(snapshot: Snapshot): Promise<void> {
    const name = snapshotKey(snapshot.id);
    await this.storage.put(name, this.seal('snapshot', name, Buffer.from(JSON.stringify(snapshot))), { ifAbsent: true });
  }

  /** One manifest, its times bounded by the storage's (boundSnapshotTime). */
  async readSnapshot(id: string): Promise<Snapshot> {
    const [snapshot, stored] = await Promise.all([this.readManifest(id), this.storage.stat(snapshotKey(id))]);
    if (stored) boundSnapshotTime(snapshot, stored.modified);
    return snapshot;
  }

  /** One manifest as written, times unbounded. */
  private async readManifest(id: string): Promise<Snapshot> {
    const name = snapshotKey(id);
    const snapshot = decodeSnapshot(this.unseal('snapshot', name, await this.storage.get(name)), name);
    if (snapshot.id !== id) throw new DamagedError(`${name} claims to be snapshot ${snapshot.id}`);
    return snapshot;
  }

  async listSnapshotIds(): Promise<string[]> {
    return (await this.listSnapshotObjects()).map((o) => o.id);
  }

  /** The manifests' ids and their storage modification times. */
  private async listSnapshotObjects(): Promise<Array<{ id: string; modified: number }>> {
    const objects: Array<{ id: string; modified: number }> = [];
    for await (const object of this.storage.list(SNAPSHOTS_PREFIX)) {
      const id = idFromKey(object.key, SNAPSHOTS_PREFIX);
      if (id) objects.push({ id, modified: object.modified });
    }
    return objects;
  }

  /**
   * Every readable snapshot, oldest first, and the ones that could not be read. Times are
   * bounded by the storage (boundSnapshotTime): `clamped` lists the manifests dated later than
   * their storage time allows, with the time they claimed.
   */
  async listSnapshots(concurrency = 8): Promise<SnapshotListing> {
    const objects = await this.listSnapshotObjects();
    const snapshots: Snapshot[] = [];
    const unreadable: Array<{ id: string; error: string }> = [];
    const clamped: SnapshotListing['clamped'] = [];
    await mapLimit(objects, concurrency, async ({ id, modified }) => {
      try {
        const snapshot = await this.readManifest(id);
        const claimed = boundSnapshotTime(snapshot, modified);
        if (claimed) clamped.push({ id, claimed, bounded: snapshot.time });
        snapshots.push(snapshot);
      } catch (error) {
        if (error instanceof NotFoundError) return; // forgotten while we listed
        // A cancelled read says nothing about the manifest: stop, rather than call it unreadable.
        if (error instanceof CairnError && error.code === 'Cairn.Cancelled') throw error;
        unreadable.push({ id, error: errorMessage(error) });
      }
    });
    snapshots.sort((a, b) => a.time.localeCompare(b.time) || a.id.localeCompare(b.id));
    clamped.sort((a, b) => a.id.localeCompare(b.id));
    return { snapshots, unreadable, clamped };
  }

  /** Resolves "latest", a full id or a unique prefix of at least 4 hex digits. */
  async findSnapshot(ref: string, filter: (s: Snapshot) => boolean = () => true): Promise<Snapshot> {
    if (ref === 'latest') {
      const { snapshots } = await this.listSnapshots();
      const matching = snapshots.filter(filter);
      const latest = matching[matching.length - 1];
      if (!latest)
        throw new CairnError('Cairn.NotFound', `the repository at ${this.storage.location} has no snapshot yet`, {
          hint: 'run `cairn backup` first',
        });
      return latest;
    }
    return this.readSnapshot(resolveSnapshotId(ref, await this.listSnapshotIds(), `in ${this.storage.location}`));
  }
}

function chunkerWrapKey(master: Buffer): Buffer {
  return deriveKey(master, 'cairn/v1/chunker-wrap');
}

function chunkerWrapAad(repositoryId: string): Buffer {
  return Buffer.from(`cairn/v1/chunker-key|${repositoryId}`, 'utf8');
}

/** The chunker key a repository adopted from another one (config.chunkerKey), sealed under this one's master key. */
function unwrapChunkerKey(master: Buffer, config: RepositoryConfig): Buffer {
  const seed = openSealed(chunkerWrapKey(master), Buffer.from(config.chunkerKey ?? '', 'base64'), chunkerWrapAad(config.id));
  if (!seed || seed.length !== 32) throw new DamagedError(`the chunker key in the config of repository ${config.id} does not authenticate`);
  return seed;
}

export { boundSnapshotTime, MANIFEST_CLOCK_SKEW_MS, type SnapshotListing } from './snapshot-time.ts';
