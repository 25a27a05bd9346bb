import { deriveKey, open, seal } from './crypto.ts';
import { CairnError, NotFoundError } from './errors.ts';
import { openObject, type EnvelopeKindName } from './envelope.ts';
import { CONFIG_KEY, HISTORY_PREFIX, INDEX_PREFIX, KEY_CHECK_KEY, LOCKS_PREFIX, PINS_PREFIX, SNAPSHOTS_PREFIX } from './layout.ts';
import type { ObjectInfo, Storage } from './storage.ts';
import type { RepositoryConfig } from './config.ts';
import type { StoredKey, Unlocked, Unlocker } from './keyfile.ts';

/**
 * Which master key is the repository's (docs/keys.md, "Which master key is the true one").
 *
 * A key file only proves that some passphrase (or KMS key) wraps some 32 bytes: a host that may
 * create objects and knows a passphrase can add a well-formed key file wrapping a master key of
 * its own. An unwrapped key is therefore accepted only when it opens an *anchor*: an object that
 * only the true master key could have sealed and that no later writer can replace.
 *
 * - `key-check`, sealed at `init` before the config is written: trusted when the storage's clock
 *   says it was stored no later than `config` (which exists from init on, so nobody can add a
 *   key-check object that old afterwards).
 * - Otherwise (a repository created before key-check existed, or a key-check added later): the
 *   oldest sealed object by storage modification time — normally `init`'s history event or the
 *   first lock. A forger's objects are all newer than the repository's first ones.
 * - No sealed object at all (an empty repository from before key-check): nothing to check
 *   against; the first key file that unwraps is taken, as before.
 */
export interface KeyAnchor {
  /** The object name, for messages. */
  name: string;
  /** What the anchor is: the key-check object, or a sealed object of this envelope kind. */
  kind: 'key-check' | EnvelopeKindName;
  data: Buffer;
}

const KEY_CHECK_INFO = 'cairn/v1/key-check';

function keyCheckAad(repositoryId: string): Buffer {
  return Buffer.from(`${KEY_CHECK_INFO}|${repositoryId}`, 'utf8');
}

/** The key-check object's content: sealed under HKDF(master, "cairn/v1/key-check"), bound to the repository id. */
export function sealKeyCheck(master: Buffer, repositoryId: string, created: string): Buffer {
  const payload = Buffer.from(JSON.stringify({ version: 1, repository: repositoryId, created }), 'utf8');
  return seal(deriveKey(master, KEY_CHECK_INFO), payload, keyCheckAad(repositoryId));
}

/** True when `master` sealed the anchor. */
export function authenticatesAnchor(master: Buffer, anchor: KeyAnchor, repositoryId: string): boolean {
  if (anchor.kind === 'key-check') {
    const plain = open(deriveKey(master, KEY_CHECK_INFO), anchor.data, keyCheckAad(repositoryId));
    if (!plain) return false;
    try {
      const parsed = JSON.parse(plain.toString('utf8')) as { repository?: unknown };
      return parsed.repository === repositoryId;
    } catch {
      return false;
    }
  }
  try {
    openObject(master, anchor.kind, anchor.name, anchor.data);
    return true;
  } catch {
    return false;
  }
}

/** The sealed prefixes a pre-key-check repository's anchor is looked for under, and their envelope kinds. */
const SEALED_PREFIXES: Array<[string, EnvelopeKindName]> = [
  [HISTORY_PREFIX, 'history'],
  [LOCKS_PREFIX, 'lock'],
  [SNAPSHOTS_PREFIX, 'snapshot'],
  [INDEX_PREFIX, 'index'],
  [PINS_PREFIX, 'pin'],
];

/** Finds the anchor (see the module comment), or undefined when the repository holds no sealed object. */
export async function findKeyAnchor(storage: Storage): Promise<KeyAnchor | undefined> {
  const [check, config] = await Promise.all([storage.stat(KEY_CHECK_KEY), storage.stat(CONFIG_KEY)]);
  if (check && config && check.modified <= config.modified) {
    const anchor = await readAnchor(storage, KEY_CHECK_KEY, 'key-check');
    if (anchor) return anchor;
  }
  // Oldest first; on a tie the key-check object, then the order of SEALED_PREFIXES, then the name.
  const candidates: Array<{ info: ObjectInfo; kind: KeyAnchor['kind']; rank: number }> = [];
  if (check) candidates.push({ info: check, kind: 'key-check', rank: 0 });
  for (const [i, [prefix, kind]] of SEALED_PREFIXES.entries()) {
    let oldest: ObjectInfo | undefined;
    for await (const object of storage.list(prefix)) {
      if (!oldest || object.modified < oldest.modified || (object.modified === oldest.modified && object.key < oldest.key)) oldest = object;
    }
    if (oldest) candidates.push({ info: oldest, kind, rank: i + 1 });
  }
  candidates.sort((a, b) => a.info.modified - b.info.modified || a.rank - b.rank || (a.info.key < b.info.key ? -1 : 1));
  for (const candidate of candidates) {
    const anchor = await readAnchor(storage, candidate.info.key, candidate.kind);
    if (anchor) return anchor; // undefined: removed since the listing (forgotten, unlocked); the next one is as old as it gets
  }
  return undefined;
}

async function readAnchor(storage: Storage, name: string, kind: KeyAnchor['kind']): Promise<KeyAnchor | undefined> {
  try {
    return { name, kind, data: await storage.get(name) };
  } catch (error) {
    if (error instanceof NotFoundError) return undefined;
    throw error;
  }
}

/** Why no key file was accepted: every master key that unwrapped failed the anchor. */
export function noTrueKeyError(location: string, anchor: KeyAnchor, rejected: string[]): CairnError {
  return new CairnError(
    'Cairn.WrongKey',
    `the repository at ${location} did not open: ${rejected.length} key file(s) unwrapped a master key (${rejected.join(', ')}), ` +
      `but none of them authenticates ${anchor.name}, which only the repository's own master key could have sealed`,
    {
      hint:
        `those key files wrap another master key (forged, or copied from another repository): remove them with \`cairn key remove\`; ` +
        `if ${anchor.name} itself is damaged, an operator may delete it, and opening then checks keys against the oldest remaining sealed object`,
    },
  );
}

/**
 * Runs the unlocker until it yields a master key that authenticates the repository's anchor
 * (core/key-check.ts). A key file whose master key does not is skipped with a warning and the
 * unlocker runs again over the others, so a forged key file listed first cannot decide which key
 * this repository is opened with.
 */
export async function unlockTrueKey(
  storage: Storage,
  config: RepositoryConfig,
  keys: StoredKey[],
  unlock: Unlocker,
  warn: (message: string) => void,
): Promise<Unlocked> {
  const anchor = await findKeyAnchor(storage);
  if (!anchor) return unlock({ config, keys, location: storage.location });
  const rejected: string[] = [];
  const accept = (master: Buffer, key: StoredKey): boolean => {
    if (authenticatesAnchor(master, anchor, config.id)) return true;
    if (!rejected.includes(key.name)) {
      rejected.push(key.name);
      warn(
        `skipped the key file ${key.name}: the master key it wraps does not authenticate ${anchor.name}, so it is not this repository's; the other key files are tried`,
      );
    }
    return false;
  };
  let remaining = keys;
  for (;;) {
    let unlocked: Unlocked;
    try {
      unlocked = await unlock({ config, keys: remaining, location: storage.location, accept });
    } catch (error) {
      // Every key the unlocker could open was rejected: say that, not "wrong passphrase".
      if (rejected.length > 0 && !(error instanceof CairnError && error.code === 'Cairn.Storage'))
        throw noTrueKeyError(storage.location, anchor, rejected);
      throw error;
    }
    if (authenticatesAnchor(unlocked.master, anchor, config.id)) return unlocked;
    const key = remaining.find((k) => k.id === unlocked.keyId);
    if (!key) {
      // Not a key file (a recovery kit): nothing else to try.
      throw noTrueKeyError(storage.location, anchor, [...rejected, unlocked.keyId]);
    }
    accept(unlocked.master, key);
    remaining = remaining.filter((k) => k !== key);
  }
}
