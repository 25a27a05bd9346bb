import { createCipheriv, createDecipheriv, createHmac, hkdfSync, randomBytes, scrypt as scryptCb, timingSafeEqual } from 'node:crypto';
import { promisify } from 'node:util';
import { CairnError } from './errors.ts';

const scrypt = promisify(scryptCb) as (
  password: string | Buffer,
  salt: Buffer,
  keylen: number,
  options: { N: number; r: number; p: number; maxmem: number },
) => Promise<Buffer>;

export const KEY_BYTES = 32;
export const SALT_BYTES = 16;
export const NONCE_BYTES = 12;
export const TAG_BYTES = 16;
export const ID_BYTES = 32;

/** Derives a purpose-bound 256-bit key; `info` names the purpose so keys never serve two roles. */
export function deriveKey(master: Buffer, info: string, salt: Buffer = Buffer.alloc(0)): Buffer {
  return Buffer.from(hkdfSync('sha256', master, salt, Buffer.from(info, 'utf8'), KEY_BYTES));
}

/** AES-256-GCM with a random nonce; output = nonce | ciphertext | tag. */
export function seal(key: Buffer, plaintext: Buffer | Buffer[], aad: Buffer): Buffer {
  const nonce = randomBytes(NONCE_BYTES);
  const cipher = createCipheriv('aes-256-gcm', key, nonce);
  cipher.setAAD(aad);
  const parts = Array.isArray(plaintext) ? plaintext : [plaintext];
  const out: Buffer[] = [nonce];
  for (const part of parts) out.push(cipher.update(part));
  out.push(cipher.final(), cipher.getAuthTag());
  return Buffer.concat(out);
}

/** Inverse of seal; returns undefined when authentication fails (wrong key, tampering, truncation). */
export function open(key: Buffer, sealed: Buffer, aad: Buffer): Buffer | undefined {
  if (sealed.length < NONCE_BYTES + TAG_BYTES) return undefined;
  const nonce = sealed.subarray(0, NONCE_BYTES);
  const tag = sealed.subarray(sealed.length - TAG_BYTES);
  const body = sealed.subarray(NONCE_BYTES, sealed.length - TAG_BYTES);
  const decipher = createDecipheriv('aes-256-gcm', key, nonce);
  decipher.setAAD(aad);
  decipher.setAuthTag(tag);
  try {
    const first = decipher.update(body);
    const last = decipher.final();
    return last.length === 0 ? first : Buffer.concat([first, last]);
  } catch {
    return undefined;
  }
}

export function hmac(key: Buffer, data: Buffer): Buffer {
  return createHmac('sha256', key).update(data).digest();
}

export function equalBytes(a: Buffer, b: Buffer): boolean {
  return a.length === b.length && timingSafeEqual(a, b);
}

export interface ScryptParams {
  N: number;
  r: number;
  p: number;
}

/** 2^15 × 8 × 128 B = 32 MiB of memory and ~0.1 s per unlock on this machine's cores. */
export const DEFAULT_SCRYPT: ScryptParams = { N: 1 << 15, r: 8, p: 1 };

/**
 * The most one unlock may cost, whatever a key file or recovery kit asks for (both are read before any
 * key, so their parameters are unauthenticated): 256 MiB of scrypt memory (128·N·r bytes; a key file's
 * default takes 32 MiB, a recovery kit 128 MiB) and p ≤ 16 passes over it.
 */
export const MAX_SCRYPT_MEMORY = 256 << 20;
export const MAX_SCRYPT_P = 16;

/** Why scrypt parameters are refused (not runnable, or above the maximum), or undefined when they are fine. */
export function scryptParamsProblem({ N, r, p }: ScryptParams): string | undefined {
  if (!Number.isSafeInteger(N) || N < 2 || N > 2 ** 30 || (N & (N - 1)) !== 0) return `N=${N} is not a power of two`;
  if (!Number.isSafeInteger(r) || r < 1) return `r=${r} is not a positive integer`;
  if (!Number.isSafeInteger(p) || p < 1 || p > MAX_SCRYPT_P) return `p=${p} is not an integer from 1 to ${MAX_SCRYPT_P}`;
  if (128 * N * r > MAX_SCRYPT_MEMORY)
    return `N=${N}, r=${r} need ${Math.round((128 * N * r) / 2 ** 20)} MiB, above the maximum of ${MAX_SCRYPT_MEMORY / 2 ** 20} MiB`;
  return undefined;
}

/** The scrypt parameters a passphrase key file may name (its schema in keyfile.ts; the early unlock checks the same). */
export const KEY_FILE_SCRYPT = { minN: 1 << 10, maxN: 1 << 22, maxR: 32, maxP: MAX_SCRYPT_P } as const;

export async function passphraseKey(passphrase: string, salt: Buffer, params: ScryptParams): Promise<Buffer> {
  const started = takePrederived(passphrase, salt, params);
  if (started) return started;
  const problem = scryptParamsProblem(params);
  if (problem) throw new CairnError('Cairn.Damaged', `refusing scrypt parameters: ${problem}`);
  return scrypt(passphrase.normalize('NFC'), salt, KEY_BYTES, { ...params, maxmem: 256 * params.N * params.r + (1 << 20) });
}

/**
 * One derivation started ahead of its use (agent/cli/early-unlock.ts): the next passphraseKey call
 * takes it when its inputs are exactly these, and drops it either way; unasked for, it is dropped
 * after PREDERIVED_MS. So a derived key is not kept beyond its one use, nor by a long-running
 * command that never asked for it.
 */
let prederived: { passphrase: string; salt: Buffer; params: ScryptParams; key: Promise<Buffer> } | undefined;

/** Starts passphraseKey's scrypt now, on libuv's pool, for a caller known to ask for it soon. Refused parameters start nothing. */
export function prederivePassphraseKey(passphrase: string, salt: Buffer, params: ScryptParams): void {
  if (scryptParamsProblem(params)) return;
  const key = passphraseKey(passphrase, salt, params);
  // Its failure (if any) belongs to whoever takes it; unused, it must not become an unhandled rejection.
  key.catch(() => undefined);
  const started = { passphrase, salt: Buffer.from(salt), params: { N: params.N, r: params.r, p: params.p }, key };
  prederived = started;
  setTimeout(() => {
    if (prederived === started) prederived = undefined;
  }, PREDERIVED_MS).unref();
}

/** How long a derivation started ahead waits to be asked for: start-up takes well under a second. */
const PREDERIVED_MS = 30_000;

function takePrederived(passphrase: string, salt: Buffer, params: ScryptParams): Promise<Buffer> | undefined {
  const p = prederived;
  prederived = undefined;
  if (
    !p ||
    p.passphrase !== passphrase ||
    !p.salt.equals(salt) ||
    p.params.N !== params.N ||
    p.params.r !== params.r ||
    p.params.p !== params.p
  )
    return undefined;
  return p.key;
}
