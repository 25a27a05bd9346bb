import { randomBytes } from 'node:crypto';
import { zstdCompressSync, zstdDecompressSync } from 'node:zlib';
import { SALT_BYTES, deriveKey, open, seal } from './crypto.ts';
import { DamagedError } from './errors.ts';

/**
 * Small encrypted objects (snapshot manifests, index files):
 *   "CRN" | version (1) | kind (1 byte) | salt (16) | nonce (12) | ciphertext | tag (16)
 * The key is HKDF(master, salt, "cairn/v1/object"); the header and the object's
 * own name are authenticated, so an object cannot be swapped for another.
 * Plaintext = codec byte (0 raw, 1 zstd) | payload.
 */
export const EnvelopeKind = { snapshot: 1, index: 2, lock: 3, history: 4, pin: 5, log: 6, logBatch: 7 } as const;
export type EnvelopeKindName = keyof typeof EnvelopeKind;

const MAGIC = Buffer.from('CRN\x01', 'latin1');
const HEADER_BYTES = MAGIC.length + 1 + SALT_BYTES;
const CODEC_RAW = 0;
const CODEC_ZSTD = 1;

export function sealObject(master: Buffer, kind: EnvelopeKindName, name: string, payload: Buffer): Buffer {
  const compressed = payload.length > 256 ? zstdCompressSync(payload) : undefined;
  return sealCompressed(master, kind, name, payload, compressed);
}

/**
 * sealObject for a payload the caller compressed already (off the event loop,
 * for large objects such as WAL segments): the smaller of the two is stored.
 */
export function sealCompressed(
  master: Buffer,
  kind: EnvelopeKindName,
  name: string,
  payload: Buffer,
  compressed: Buffer | undefined,
): Buffer {
  const salt = randomBytes(SALT_BYTES);
  const header = Buffer.concat([MAGIC, Buffer.from([EnvelopeKind[kind]]), salt]);
  const body =
    compressed && compressed.length < payload.length ? [Buffer.from([CODEC_ZSTD]), compressed] : [Buffer.from([CODEC_RAW]), payload];
  const key = deriveKey(master, 'cairn/v1/object', salt);
  return Buffer.concat([header, seal(key, body, aad(header, name))]);
}

export function openObject(master: Buffer, kind: EnvelopeKindName, name: string, data: Buffer): Buffer {
  if (data.length < HEADER_BYTES || !data.subarray(0, MAGIC.length).equals(MAGIC)) {
    throw new DamagedError(`${name} is not a cairn v1 object (bad header)`);
  }
  if (data[MAGIC.length] !== EnvelopeKind[kind]) throw new DamagedError(`${name} is not a ${kind} object`);
  const header = data.subarray(0, HEADER_BYTES);
  const key = deriveKey(master, 'cairn/v1/object', header.subarray(MAGIC.length + 1));
  const plain = open(key, data.subarray(HEADER_BYTES), aad(header, name));
  if (!plain || plain.length < 1)
    throw new DamagedError(`${name} failed authentication: it was altered, truncated, or written by another repository`);
  const body = plain.subarray(1);
  if (plain[0] === CODEC_RAW) return body;
  if (plain[0] === CODEC_ZSTD) return decompress(body, kind, name);
  throw new DamagedError(`${name} uses unknown codec ${plain[0]}`);
}

/**
 * The most an object may expand to: log segments (WAL, binlogs) up to 2 GiB, every other object 1 GiB, far
 * above any real one. A host with the key can seal any bytes, so a body that is not zstd, or one that would
 * expand without bound, is damage (Cairn.Damaged), never a zlib error or an allocation that takes the process down.
 */
const MAX_PLAIN_BYTES: Record<EnvelopeKindName, number> = {
  snapshot: 1 << 30,
  index: 1 << 30,
  lock: 1 << 30,
  history: 1 << 30,
  pin: 1 << 30,
  log: 2 ** 31,
  logBatch: 1 << 30,
};

function decompress(body: Buffer, kind: EnvelopeKindName, name: string): Buffer {
  try {
    return zstdDecompressSync(body, { maxOutputLength: MAX_PLAIN_BYTES[kind] });
  } catch (cause) {
    throw new DamagedError(
      `${name} has a compressed body that does not decompress: ${cause instanceof Error ? cause.message : String(cause)}`,
      {
        cause,
      },
    );
  }
}

function aad(header: Buffer, name: string): Buffer {
  return Buffer.concat([header, Buffer.from(name, 'utf8')]);
}
