import { createHash, randomBytes } from 'node:crypto';
import { KEY_BYTES, SALT_BYTES, open, passphraseKey, scryptParamsProblem, seal, type ScryptParams } from './crypto.ts';
import { CairnError } from './errors.ts';

/**
 * A recovery kit: the master key wrapped by a recovery passphrase (scrypt,
 * like a passphrase key file), printed as text a person can keep on paper and
 * type back in. It lives outside the repository, so it still opens the
 * repository when every key file is gone, and it cannot be revoked: whoever
 * holds the kit *and* its passphrase holds the master key (docs/keys.md).
 *
 * Binary payload (115 bytes):
 *   "CRK" 0x01 | repository id (32) | log2 N, r, p (3) | salt (16) | sealed master key (60)
 * sealed = AES-256-GCM(scrypt(NFC(passphrase), salt), master, aad "cairn/v1/recovery-kit|<id>").
 *
 * Text: the payload in Crockford base32 (no I, L, O, U; I/L read as 1, O as 0,
 * case and spaces ignored), 16 characters a line in groups of 4, each line
 * followed by a 2-character checksum of its number and characters, and a
 * whole-kit checksum after the last line: a mistyped line is named, a
 * missing or swapped line is caught.
 */
const MAGIC = Buffer.from([0x43, 0x52, 0x4b, 0x01]); // "CRK" v1
const ID_BYTES = 32;
const SEALED_BYTES = 12 + KEY_BYTES + 16;
const PAYLOAD_BYTES = MAGIC.length + ID_BYTES + 3 + SALT_BYTES + SEALED_BYTES;
const LINE_CHARS = 16;
const BEGIN = '-----BEGIN CAIRN RECOVERY KEY-----';
const END = '-----END CAIRN RECOVERY KEY-----';

/** Stronger than a key file's default: a kit may sit on paper for years. 2^17 × 8 × 128 B = 128 MiB. */
export const RECOVERY_SCRYPT: ScryptParams = { N: 1 << 17, r: 8, p: 1 };

const ALPHABET = '0123456789ABCDEFGHJKMNPQRSTVWXYZ';
/** The characters of an ASCII string (kit text is ASCII once normalized). */
const charsOf = (text: string): string[] => Array.from({ length: text.length }, (_, i) => text.charAt(i));
const DECODE = new Map<string, number>(charsOf(ALPHABET).map((c, i) => [c, i]));
for (const [alias, value] of [
  ['I', 1],
  ['L', 1],
  ['O', 0],
] as const)
  DECODE.set(alias, value);

export function base32Encode(data: Buffer): string {
  let out = '';
  let bits = 0;
  let value = 0;
  for (const byte of data) {
    value = (value << 8) | byte;
    bits += 8;
    while (bits >= 5) {
      out += ALPHABET.charAt((value >>> (bits - 5)) & 31);
      bits -= 5;
    }
    value &= (1 << bits) - 1;
  }
  if (bits > 0) out += ALPHABET.charAt((value << (5 - bits)) & 31);
  return out;
}

/** Decodes normalized characters (see normalize); bits beyond the last whole byte are dropped. */
export function base32Decode(text: string): Buffer {
  const out: number[] = [];
  let bits = 0;
  let value = 0;
  for (const char of text) {
    value = (value << 5) | (DECODE.get(char) as number);
    bits += 5;
    if (bits >= 8) {
      out.push((value >>> (bits - 8)) & 0xff);
      bits -= 8;
    }
    value &= (1 << bits) - 1;
  }
  return Buffer.from(out);
}

function lineChecksum(lineNo: number, chars: string): string {
  const digest = createHash('sha256').update(`cairn-kit-line|${lineNo}|${chars}`).digest();
  return base32Encode(digest.subarray(0, 2)).slice(0, 2);
}

function kitChecksum(payload: Buffer): string {
  return base32Encode(createHash('sha256').update(payload).digest().subarray(0, 5));
}

function aad(repositoryId: string): Buffer {
  return Buffer.from(`cairn/v1/recovery-kit|${repositoryId}`, 'utf8');
}

const groups = (chars: string): string => chars.match(/.{1,4}/g)?.join(' ') ?? '';

export interface RecoveryKitInfo {
  repositoryId: string;
  location?: string | undefined;
  created?: Date;
}

/** The printable kit for this master key under a recovery passphrase. */
export async function createRecoveryKit(
  master: Buffer,
  passphrase: string,
  info: RecoveryKitInfo,
  params: ScryptParams = RECOVERY_SCRYPT,
): Promise<string> {
  if (!/^[0-9a-f]{64}$/.test(info.repositoryId)) throw new CairnError('Cairn.Usage', `invalid repository id ${info.repositoryId}`);
  const log2N = Math.log2(params.N);
  if (!Number.isInteger(log2N) || log2N < 10 || log2N > 22 || params.r > 32 || params.p > 16 || scryptParamsProblem(params))
    throw new CairnError('Cairn.Usage', 'unsupported scrypt parameters for a recovery kit');
  const salt = randomBytes(SALT_BYTES);
  const sealed = seal(await passphraseKey(passphrase, salt, params), master, aad(info.repositoryId));
  const payload = Buffer.concat([MAGIC, Buffer.from(info.repositoryId, 'hex'), Buffer.from([log2N, params.r, params.p]), salt, sealed]);
  const encoded = base32Encode(payload);
  const lines: string[] = [];
  for (let at = 0, n = 1; at < encoded.length; at += LINE_CHARS, n++) {
    const chars = encoded.slice(at, at + LINE_CHARS);
    lines.push(`${String(n).padStart(2, '0')}: ${groups(chars).padEnd(19)}  [${lineChecksum(n, chars)}]`);
  }
  const created = (info.created ?? new Date()).toISOString();
  return [
    'CAIRN RECOVERY KIT (version 1)',
    '',
    `Repository: ${info.repositoryId}`,
    ...(info.location ? [`Location:   ${info.location}`] : []),
    `Created:    ${created}`,
    '',
    "This kit is the repository's master key, encrypted with a recovery passphrase that",
    'is NOT written here. Keep the kit and the passphrase in different safe places:',
    'together they read every backup of this repository, and they cannot be revoked.',
    '',
    'When every other key is lost, type the lines below into a file (case and spaces',
    'do not matter; each line ends with its own checksum in brackets) and run:',
    '  cairn --repo <location> key import --recovery-kit <file>',
    'It asks for the recovery passphrase (or CAIRN_RECOVERY_PASSWORD) and a new',
    'passphrase (or CAIRN_NEW_PASSWORD), and adds a key that opens the repository.',
    '',
    BEGIN,
    ...lines,
    END,
    `Kit checksum: ${groups(kitChecksum(payload))}`,
    '',
  ].join('\n');
}

export interface RecoveryKit {
  repositoryId: string;
  params: ScryptParams;
  salt: Buffer;
  sealed: Buffer;
}

function bad(message: string, hint = 'compare the kit with the printed original, line by line'): CairnError {
  return new CairnError('Cairn.Usage', message, { hint });
}

function normalize(text: string): string {
  return text.toUpperCase().replace(/[\s-]/g, '');
}

/** Parses and checks a kit's text; every error names the line to look at. */
export function parseRecoveryKit(text: string): RecoveryKit {
  const all = text.split(/\r?\n/);
  const begin = all.findIndex((l) => l.trim() === BEGIN);
  const end = all.findIndex((l, i) => i > begin && l.trim() === END);
  if (begin < 0 || end < 0)
    throw bad(
      `this is not a cairn recovery kit: the lines "${BEGIN}" and "${END}" were not found`,
      'give the file written by `cairn key export --recovery-kit`',
    );
  let encoded = '';
  let expected = 1;
  for (const raw of all.slice(begin + 1, end)) {
    if (raw.trim() === '') continue;
    const match = /^\s*(\d{1,3})\s*:\s*(.*?)\s*\[\s*([0-9A-Za-z]{2})\s*\]\s*$/.exec(raw);
    if (!match)
      throw bad(
        `recovery kit line ${String(expected).padStart(2, '0')} is not of the form "NN: XXXX XXXX XXXX XXXX  [CC]": ${JSON.stringify(raw.trim())}`,
      );
    const lineNo = Number(match[1]);
    const label = String(lineNo).padStart(2, '0');
    if (lineNo !== expected)
      throw bad(
        `recovery kit line ${label} is out of place: line ${String(expected).padStart(2, '0')} was expected there (a line is missing or repeated)`,
      );
    const chars = normalize(match[2] as string);
    const invalid = charsOf(chars).findIndex((c) => !DECODE.has(c));
    if (invalid >= 0)
      throw bad(`recovery kit line ${label}: ${JSON.stringify(chars[invalid])} (character ${invalid + 1}) is not a recovery-kit character`);
    const canonical = charsOf(chars)
      .map((c) => ALPHABET.charAt(DECODE.get(c) as number))
      .join('');
    if (
      lineChecksum(lineNo, canonical) !==
      normalize(match[3] as string)
        .replace(/[IL]/g, '1')
        .replace(/O/g, '0')
    ) {
      throw bad(`recovery kit line ${label} does not match its checksum: a character on that line is mistyped`);
    }
    encoded += canonical;
    expected++;
  }
  const payload = base32Decode(encoded);
  const sumLine = all.slice(end + 1).find((l) => /^\s*Kit checksum:/i.test(l));
  if (!sumLine) throw bad('the recovery kit\'s "Kit checksum:" line is missing (it follows the END line)');
  if (payload.length !== PAYLOAD_BYTES || normalize(sumLine.replace(/^\s*Kit checksum:/i, '')) !== kitChecksum(payload)) {
    throw bad(
      `every line of the recovery kit checks out, but the whole kit does not (${expected - 1} lines read): a line is missing or the "Kit checksum:" line is mistyped`,
    );
  }
  if (!payload.subarray(0, MAGIC.length).equals(MAGIC))
    throw bad('the recovery kit is of a version this cairn does not know', 'use a newer cairn');
  let at = MAGIC.length;
  const repositoryId = payload.subarray(at, (at += ID_BYTES)).toString('hex');
  const [log2N, r, p] = [payload[at] as number, payload[at + 1] as number, payload[at + 2] as number];
  at += 3;
  if (log2N < 10 || log2N > 22 || r < 1 || r > 32 || p < 1 || p > 16 || scryptParamsProblem({ N: 2 ** log2N, r, p }))
    throw bad('the recovery kit has invalid scrypt parameters');
  const salt = payload.subarray(at, (at += SALT_BYTES));
  const sealed = payload.subarray(at);
  return { repositoryId, params: { N: 2 ** log2N, r, p }, salt, sealed };
}

/** The master key in the kit; refuses a kit of another repository and a wrong passphrase. */
export async function openRecoveryKit(kit: RecoveryKit, passphrase: string, repositoryId: string): Promise<Buffer> {
  if (kit.repositoryId !== repositoryId) {
    throw new CairnError(
      'Cairn.WrongKey',
      `this recovery kit belongs to repository ${kit.repositoryId.slice(0, 8)}, not to ${repositoryId.slice(0, 8)}`,
      {
        hint: "use the kit exported from this repository (its id is in the kit's header and in `cairn key list --json`)",
      },
    );
  }
  const master = open(await passphraseKey(passphrase, kit.salt, kit.params), kit.sealed, aad(repositoryId));
  if (!master || master.length !== KEY_BYTES) {
    throw new CairnError('Cairn.WrongKey', 'the recovery passphrase does not open this recovery kit', {
      hint: 'check CAIRN_RECOVERY_PASSWORD / --recovery-password-file; nothing was written',
    });
  }
  return master;
}
