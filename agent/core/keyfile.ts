import { randomBytes } from 'node:crypto';
import { z } from 'zod';
import {
  DEFAULT_SCRYPT,
  KEY_BYTES,
  KEY_FILE_SCRYPT,
  SALT_BYTES,
  open,
  passphraseKey,
  scryptParamsProblem,
  seal,
  type ScryptParams,
} from './crypto.ts';
import { CairnError } from './errors.ts';
import type { RepositoryConfig } from './config.ts';

/**
 * keys/<id>: the master key wrapped once. Each wrapping is its own object, so
 * adding or removing one never touches data. Two kinds (docs/keys.md):
 *
 * - `passphrase`: sealed under scrypt(passphrase);
 * - `kms`: the ciphertext blob of AWS KMS `Encrypt` of the master key under a
 *   KMS key, with the encryption context `{ "cairn:repository": <id> }`. This
 *   module only describes it; the KMS calls live in agent/keys/kms.ts (core
 *   makes no AWS calls).
 *
 * A recovery kit (recovery-kit.ts) is a wrapping kept outside the repository.
 */
const who = {
  created: z.string(),
  host: z.string(),
  user: z.string(),
};

export const passphraseKeyFileSchema = z.object({
  version: z.literal(1),
  kind: z.literal('passphrase'),
  kdf: z
    .object({
      name: z.literal('scrypt'),
      N: z.number().int().min(KEY_FILE_SCRYPT.minN).max(KEY_FILE_SCRYPT.maxN),
      r: z.number().int().min(1).max(KEY_FILE_SCRYPT.maxR),
      p: z.number().int().min(1).max(KEY_FILE_SCRYPT.maxP),
      salt: z.string().min(16),
    })
    .superRefine((kdf, ctx) => {
      // Checked before any scrypt runs: the parameters are unauthenticated (docs/keys.md, MAX_SCRYPT_MEMORY).
      const problem = scryptParamsProblem(kdf);
      if (problem) ctx.addIssue({ code: 'custom', message: problem });
    }),
  wrapped: z.string().min(40),
  ...who,
});

/** A KMS key ARN (or alias ARN): the region is taken from it. */
export const KMS_KEY_ARN = /^arn:aws[a-z-]*:kms:([a-z]{2}(?:-[a-z]+)+-\d+):(\d{12}):(?:key|alias)\/[A-Za-z0-9/_+=.@-]{1,256}$/;

export const kmsKeyFileSchema = z.object({
  version: z.literal(1),
  kind: z.literal('kms'),
  /** The key ARN KMS reported at Encrypt (an alias given by the user resolves to its key). */
  keyArn: z.string().regex(KMS_KEY_ARN),
  /** Base64 CiphertextBlob; decrypted with the same encryption context. */
  ciphertext: z.string().min(16),
  ...who,
});

export const keyFileSchema = z.discriminatedUnion('kind', [passphraseKeyFileSchema, kmsKeyFileSchema]);
export type KeyFile = z.infer<typeof keyFileSchema>;
export type PassphraseKeyFile = z.infer<typeof passphraseKeyFileSchema>;
export type KmsKeyFile = z.infer<typeof kmsKeyFileSchema>;

/** A key file as listed in a repository. */
export interface StoredKey {
  id: string;
  /** Its object name, keys/<id>. */
  name: string;
  file: KeyFile;
}

/** What an unlocker is given, and what it returns: the master key and which key file opened it. */
export interface UnlockRequest {
  config: RepositoryConfig;
  keys: StoredKey[];
  location: string;
  /**
   * Whether a master key unwrapped from `key` is the repository's own (it authenticates the
   * key-check anchor, core/key-check.ts). An unlocker that tries several key files skips a
   * rejected one and goes on; `accept` has already warned. Absent: every key is accepted.
   * Repository.openWith checks the result again, so an unlocker that ignores it is still safe.
   */
  accept?: ((master: Buffer, key: StoredKey) => boolean) | undefined;
}
export interface Unlocked {
  master: Buffer;
  /** The key file's id; a name that is no key file (e.g. `recovery-kit`) when opened otherwise. */
  keyId: string;
}
export type Unlocker = (request: UnlockRequest) => Promise<Unlocked>;

/** The encryption context every KMS call for this repository carries (docs/contracts.md, "Keys"). */
export function kmsEncryptionContext(repositoryId: string): Record<string, string> {
  return { 'cairn:repository': repositoryId };
}

export function kmsRegion(keyArn: string): string {
  const match = KMS_KEY_ARN.exec(keyArn);
  if (!match) {
    throw new CairnError('Cairn.Usage', `${JSON.stringify(keyArn)} is not a KMS key ARN`, {
      hint: 'give the full ARN, e.g. arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab (the region is read from it)',
    });
  }
  return match[1] as string;
}

function wrapAad(repositoryId: string): Buffer {
  return Buffer.from(`cairn/v1/key|${repositoryId}`, 'utf8');
}

export async function wrapMasterKey(
  master: Buffer,
  passphrase: string,
  repositoryId: string,
  owner: { host: string; user: string },
  params: ScryptParams = DEFAULT_SCRYPT,
): Promise<PassphraseKeyFile> {
  const salt = randomBytes(SALT_BYTES);
  const kek = await passphraseKey(passphrase, salt, params);
  return {
    version: 1,
    kind: 'passphrase',
    kdf: { name: 'scrypt', ...params, salt: salt.toString('base64') },
    wrapped: seal(kek, master, wrapAad(repositoryId)).toString('base64'),
    created: new Date().toISOString(),
    host: owner.host,
    user: owner.user,
  };
}

export function kmsKeyFile(keyArn: string, ciphertext: Buffer, owner: { host: string; user: string }): KmsKeyFile {
  return {
    version: 1,
    kind: 'kms',
    keyArn,
    ciphertext: ciphertext.toString('base64'),
    created: new Date().toISOString(),
    host: owner.host,
    user: owner.user,
  };
}

/** The master key, or undefined when the passphrase does not open this wrapping (or it is not a passphrase wrapping). */
export async function unwrapMasterKey(keyFile: KeyFile, passphrase: string, repositoryId: string): Promise<Buffer | undefined> {
  if (keyFile.kind !== 'passphrase') return undefined;
  const { N, r, p, salt } = keyFile.kdf;
  const kek = await passphraseKey(passphrase, Buffer.from(salt, 'base64'), { N, r, p });
  const master = open(kek, Buffer.from(keyFile.wrapped, 'base64'), wrapAad(repositoryId));
  return master && master.length === KEY_BYTES ? master : undefined;
}

/** Tries every passphrase wrapping; the error says what to do when none opens. */
export function passphraseUnlocker(passphrase: string): Unlocker {
  return async ({ config, keys, location, accept }) => {
    const candidates = keys.filter((k) => k.file.kind === 'passphrase');
    if (keys.length === 0) {
      throw new CairnError('Cairn.WrongKey', `the repository at ${location} has no key files`, {
        hint: 'if you exported a recovery kit, `cairn key import --recovery-kit FILE` adds a passphrase from it',
      });
    }
    if (candidates.length === 0) {
      throw new CairnError(
        'Cairn.WrongKey',
        `the repository at ${location} has no passphrase key: it is opened through KMS (${kmsArns(keys).join(', ')})`,
        {
          hint: 'unset CAIRN_PASSWORD / --password-file so that the KMS key is used, with AWS credentials allowed kms:Decrypt on it',
        },
      );
    }
    const rejected: string[] = [];
    for (const key of candidates) {
      const master = await unwrapMasterKey(key.file, passphrase, config.id);
      if (!master) continue;
      if (!accept || accept(master, key)) return { master, keyId: key.id };
      rejected.push(key.name);
    }
    if (rejected.length > 0) {
      throw new CairnError(
        'Cairn.WrongKey',
        `the passphrase opens ${rejected.join(', ')}, but the master key wrapped there is not this repository's (it does not authenticate the repository's key-check object)`,
        {
          hint: 'those key files were forged or copied from another repository: remove them with `cairn key remove`; check CAIRN_PASSWORD / --password-file',
        },
      );
    }
    throw new CairnError('Cairn.WrongKey', `the passphrase does not open the repository at ${location}`, {
      hint: 'check CAIRN_PASSWORD / --password-file; nothing was read or written',
    });
  };
}

export function kmsArns(keys: StoredKey[]): string[] {
  return keys.flatMap((k) => (k.file.kind === 'kms' ? [k.file.keyArn] : []));
}

export function parseKeyFile(raw: Buffer, name: string): KeyFile {
  let json: unknown;
  try {
    json = JSON.parse(raw.toString('utf8'));
  } catch (cause) {
    throw new CairnError('Cairn.Damaged', `key file ${name} is not valid JSON`, { cause });
  }
  const parsed = keyFileSchema.safeParse(json);
  if (!parsed.success) throw new CairnError('Cairn.Damaged', `key file ${name} is invalid: ${z.prettifyError(parsed.error)}`);
  return parsed.data;
}

export function newMasterKey(): Buffer {
  return randomBytes(KEY_BYTES);
}
