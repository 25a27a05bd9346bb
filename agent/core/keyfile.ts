import { randomBytes } from 'node:crypto';
import { z } from 'zod';
import { DEFAULT_SCRYPT, KEY_BYTES, SALT_BYTES, open, passphraseKey, seal, type ScryptParams } from './crypto.ts';
import { CairnError } from './errors.ts';

/**
 * keys/<id>: the master key wrapped by one passphrase. Each wrapping is its own
 * object, so adding or removing a passphrase never touches data; the `kind`
 * field leaves room for other wrappings (KMS, recovery kits).
 */
export const keyFileSchema = z.object({
  version: z.literal(1),
  kind: z.literal('passphrase'),
  kdf: z.object({
    name: z.literal('scrypt'),
    N: z.number().int().min(1 << 10).max(1 << 22),
    r: z.number().int().min(1).max(32),
    p: z.number().int().min(1).max(16),
    salt: z.string().min(16),
  }),
  wrapped: z.string().min(40),
  created: z.string(),
  host: z.string(),
  user: z.string(),
});
export type KeyFile = z.infer<typeof keyFileSchema>;

function wrapAad(repositoryId: string): Buffer {
  return Buffer.from(`cairn/v1/key|${repositoryId}`, 'utf8');
}

export async function wrapMasterKey(
  master: Buffer,
  passphrase: string,
  repositoryId: string,
  who: { host: string; user: string },
  params: ScryptParams = DEFAULT_SCRYPT,
): Promise<KeyFile> {
  const salt = randomBytes(SALT_BYTES);
  const kek = await passphraseKey(passphrase, salt, params);
  return {
    version: 1,
    kind: 'passphrase',
    kdf: { name: 'scrypt', ...params, salt: salt.toString('base64') },
    wrapped: seal(kek, master, wrapAad(repositoryId)).toString('base64'),
    created: new Date().toISOString(),
    host: who.host,
    user: who.user,
  };
}

/** The master key, or undefined when the passphrase does not open this wrapping. */
export async function unwrapMasterKey(keyFile: KeyFile, passphrase: string, repositoryId: string): Promise<Buffer | undefined> {
  const { N, r, p, salt } = keyFile.kdf;
  const kek = await passphraseKey(passphrase, Buffer.from(salt, 'base64'), { N, r, p });
  const master = open(kek, Buffer.from(keyFile.wrapped, 'base64'), wrapAad(repositoryId));
  return master && master.length === KEY_BYTES ? master : undefined;
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
