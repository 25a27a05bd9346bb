import { closeSync, constants, fstatSync, openSync, readdirSync, readSync } from 'node:fs';
import { join } from 'node:path';
import { KEY_FILE_SCRYPT, prederivePassphraseKey, scryptParamsProblem, type ScryptParams } from '../core/crypto.ts';
import { localRepositoryPath } from '../storage/repository-url.ts';

/**
 * Starts the passphrase's key derivation (scrypt: 32 MiB and 0.15–0.25 s of one core, on libuv's
 * pool) while the CLI is still loading its commands, when its inputs are already known: a local
 * repository in CAIRN_REPOSITORY, the passphrase in CAIRN_PASSWORD, and a command that opens the
 * repository. Every command that opens one paid that time after its start-up; now the two overlap
 * (issue 21: start-up and unchanged re-backups).
 *
 * Nothing else about opening changes: the unlock asks passphraseKey for the same derivation and is
 * handed this one (core/crypto.ts), and the key file's schema, its authenticated wrapping and the
 * key-check anchor are checked as before. Anything else (a flag naming another repository or
 * passphrase source, a storage hook, another backend, a key file this does not recognise) starts
 * nothing: a wrong guess costs one scrypt on the pool, never a different result.
 */

/** Commands that open the repository named by CAIRN_REPOSITORY with the given passphrase. */
const OPENING = new Set([
  'backup',
  'binlog-push',
  'check',
  'copy',
  'diff',
  'drill',
  'dump',
  'find',
  'forget',
  'history',
  'ls',
  'pin',
  'prune',
  'repair',
  'restore',
  'snapshots',
  'stats',
  'tag',
  'unlock',
  'unpin',
  'verify',
  'wal-daemon',
]);
/** Commands that do not open it (or not with these inputs): their name, met first, starts nothing. */
const NOT_OPENING = new Set(['agent', 'completion', 'engines', 'generate', 'help', 'init', 'key', 'wal-fetch', 'wal-push']);
/** Flags after which the guess would be wrong or wasted. */
const SKIP_FLAGS = /^(-r|-h|-V|--repo|--password-file|--password-command|--storage-hook|--help|--version)(=|$)/;

export interface EarlyUnlock {
  passphrase: string;
  salt: Buffer;
  params: ScryptParams;
}

/** What would be derived for this command line and environment, or undefined (see above). Reads only key files. */
export function earlyUnlockInput(args: string[], env: NodeJS.ProcessEnv): EarlyUnlock | undefined {
  const passphrase = env.CAIRN_PASSWORD;
  const url = env.CAIRN_REPOSITORY;
  if (!passphrase || !url || env.CAIRN_PASSWORD_FILE || env.CAIRN_PASSWORD_COMMAND || env.CAIRN_STORAGE_HOOK) return undefined;
  if (args.some((arg) => arg === '--' || SKIP_FLAGS.test(arg))) return undefined;
  // The first command name decides; a flag's value that happens to be one only costs a wasted guess.
  const command = args.find((arg) => OPENING.has(arg) || NOT_OPENING.has(arg));
  if (!command || !OPENING.has(command)) return undefined;
  const root = localRepositoryPath(url);
  if (!root) return undefined;
  try {
    // The unlocker tries the passphrase key files in id order: the first is the derivation it runs first.
    // Regular files only, as the unlocker reads (a FIFO, a symlink to a device or to stdin would block or
    // exhaust this synchronous read before any signal handler can run), and a bounded number of them.
    const names = readdirSync(join(root, 'keys'), { withFileTypes: true })
      .filter((entry) => entry.isFile() && /^([0-9a-f]{64}|[0-9a-f]{32})$/.test(entry.name))
      .map((entry) => entry.name)
      .sort((a, b) => a.localeCompare(b))
      .slice(0, MAX_KEY_FILES);
    for (const name of names) {
      const text = smallRegularFile(join(root, 'keys', name));
      if (text === undefined) return undefined;
      const file = JSON.parse(text) as { version?: unknown; kind?: unknown; kdf?: Record<string, unknown>; wrapped?: unknown };
      if (file.kind !== 'passphrase') continue;
      const { name: kdf, N, r, p, salt } = file.kdf ?? {};
      if (file.version !== 1 || typeof file.wrapped !== 'string' || kdf !== 'scrypt' || typeof salt !== 'string') return undefined;
      if (typeof N !== 'number' || typeof r !== 'number' || typeof p !== 'number') return undefined;
      // Only what a key file may name (keyfile.ts's schema): anything else is refused by the unlock, and
      // deriving it anyway would make every command, even one that fails at once, wait for it.
      const params = { N, r, p };
      if (N < KEY_FILE_SCRYPT.minN || N > KEY_FILE_SCRYPT.maxN || r > KEY_FILE_SCRYPT.maxR || scryptParamsProblem(params)) return undefined;
      return { passphrase, salt: Buffer.from(salt, 'base64'), params };
    }
  } catch {
    // No keys directory, a key file that is not JSON: the unlock will say what is wrong, not this guess.
  }
  return undefined;
}

/** Key files read at most, looking for the first passphrase one (a repository has a handful). */
const MAX_KEY_FILES = 16;
/** A key file is a few hundred bytes. */
const MAX_KEY_FILE_BYTES = 64 << 10;

/**
 * The file's text when it is a regular file of at most MAX_KEY_FILE_BYTES, else undefined. Opened
 * without following a symlink and without blocking (a FIFO put there since the listing), then
 * checked on the open descriptor.
 */
function smallRegularFile(path: string): string | undefined {
  const fd = openSync(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  try {
    const stat = fstatSync(fd);
    if (!stat.isFile() || stat.size > MAX_KEY_FILE_BYTES) return undefined;
    const buffer = Buffer.alloc(stat.size);
    let read = 0;
    while (read < buffer.length) {
      const n = readSync(fd, buffer, read, buffer.length - read, read);
      if (n === 0) break;
      read += n;
    }
    return buffer.toString('utf8', 0, read);
  } finally {
    closeSync(fd);
  }
}

/** Starts the derivation when earlyUnlockInput finds one; never throws. */
export function startEarlyUnlock(args: string[], env: NodeJS.ProcessEnv): void {
  try {
    const input = earlyUnlockInput(args, env);
    if (input) prederivePassphraseKey(input.passphrase, input.salt, input.params);
  } catch {
    // A guess, nothing more.
  }
}
