import { createCipheriv, randomBytes } from 'node:crypto';
import { ID_BYTES, NONCE_BYTES, SALT_BYTES, TAG_BYTES, deriveKey, open, seal } from './crypto.ts';
import { DamagedError } from './errors.ts';

/**
 * Pack format v1 (docs/repository-format.md, "Packs"):
 *
 *   pack    = "CPK" 0x01 | salt (16) | frame* | trailer | u32le trailerLength | "CPKT"
 *   frame   = header (8) | nonce (12) | AES-256-GCM(ids | lengths | payload) | tag (16)
 *   header  = version 0x01 | codec (0 none, 1 zstd) | u16le pieceCount | u32le rawLength
 *   trailer = nonce | AES-256-GCM(index entries of this pack) | tag
 *
 * The frame header is the GCM additional data, and the ids of the pieces inside
 * are encrypted with them, so a frame proves which pieces it holds and in which
 * format and codec. The data key is HKDF(master, salt, "cairn/v1/pack"), fresh
 * per pack. The trailer repeats the pack's index so a lost index can be rebuilt.
 */
export const PACK_MAGIC = Buffer.from('CPK\x01', 'latin1');
export const PACK_END = Buffer.from('CPKT', 'latin1');
export const PACK_HEADER_BYTES = PACK_MAGIC.length + SALT_BYTES;
export const FRAME_HEADER_BYTES = 8;
export const FRAME_VERSION = 1;

export const Codec = { none: 0, zstd: 1 } as const;
export type CodecId = (typeof Codec)[keyof typeof Codec];

export const PieceType = { data: 0, tree: 1, list: 2 } as const;
export type PieceTypeId = (typeof PieceType)[keyof typeof PieceType];

export interface PieceLocation {
  packId: string;
  type: PieceTypeId;
  frameOffset: number;
  frameLength: number;
  offsetInFrame: number;
  length: number;
}

export interface IndexEntry extends PieceLocation {
  id: Buffer;
}

export function newPackHeader(): { header: Buffer; salt: Buffer } {
  const salt = randomBytes(SALT_BYTES);
  return { header: Buffer.concat([PACK_MAGIC, salt]), salt };
}

export function packDataKey(master: Buffer, salt: Buffer): Buffer {
  return deriveKey(master, 'cairn/v1/pack', salt);
}

export function packSaltFromHeader(header: Buffer, packId: string): Buffer {
  if (header.length < PACK_HEADER_BYTES || !header.subarray(0, PACK_MAGIC.length).equals(PACK_MAGIC)) {
    throw new DamagedError(`pack ${packId} has a bad header`);
  }
  return header.subarray(PACK_MAGIC.length, PACK_HEADER_BYTES);
}

export function encodeFrame(key: Buffer, codec: CodecId, ids: Buffer[], lengths: number[], payload: Buffer): Buffer {
  const frame = Buffer.allocUnsafe(frameBytes(ids.length, payload.length));
  encodeFrameInto(frame, 0, key, codec, ids, lengths, payload);
  return frame;
}

/** Bytes a frame of `count` pieces with a `payloadLength`-byte (compressed) payload takes in its pack. */
export function frameBytes(count: number, payloadLength: number): number {
  return FRAME_HEADER_BYTES + NONCE_BYTES + count * (ID_BYTES + 4) + payloadLength + TAG_BYTES;
}

/** Plaintext bytes encrypted per cipher call: its output is the only buffer a frame allocates, and stays small. */
const SEAL_STEP = 256 << 10;

/**
 * encodeFrame written straight into `target` at `offset` (the pack being
 * built), without assembling the frame elsewhere first; returns its length.
 * The bytes are the same as encodeFrame's (AES-256-GCM as core/crypto.ts seal).
 */
export function encodeFrameInto(
  target: Buffer,
  offset: number,
  key: Buffer,
  codec: CodecId,
  ids: Buffer[],
  lengths: number[],
  payload: Buffer,
): number {
  const count = ids.length;
  const length = frameBytes(count, payload.length);
  if (offset + length > target.length) throw new RangeError('frame does not fit its target');
  const rawLength = lengths.reduce((a, b) => a + b, 0);
  const header = target.subarray(offset, offset + FRAME_HEADER_BYTES);
  header.fill(0);
  header.writeUInt8(FRAME_VERSION, 0);
  header.writeUInt8(codec, 1);
  header.writeUInt16LE(count, 2);
  header.writeUInt32LE(rawLength, 4);
  const table = Buffer.alloc(count * (ID_BYTES + 4));
  for (let i = 0; i < count; i++) {
    (ids[i] as Buffer).copy(table, i * ID_BYTES);
    table.writeUInt32LE(lengths[i] as number, count * ID_BYTES + i * 4);
  }
  const nonce = randomBytes(NONCE_BYTES);
  let at = offset + FRAME_HEADER_BYTES;
  at += nonce.copy(target, at);
  const cipher = createCipheriv('aes-256-gcm', key, nonce);
  cipher.setAAD(Buffer.from(header));
  at += cipher.update(table).copy(target, at);
  for (let from = 0; from < payload.length; from += SEAL_STEP) {
    at += cipher.update(payload.subarray(from, Math.min(payload.length, from + SEAL_STEP))).copy(target, at);
  }
  at += cipher.final().copy(target, at);
  at += cipher.getAuthTag().copy(target, at);
  return at - offset;
}

export interface DecodedFrame {
  codec: CodecId;
  ids: Buffer[];
  lengths: number[];
  rawLength: number;
  payload: Buffer;
}

/** A frame's cleartext header (authenticated as the AAD of what follows it, so trusted only once that opens). */
export interface FrameHeader {
  header: Buffer;
  codec: CodecId;
  count: number;
  rawLength: number;
}

/** Reads and checks a frame's cleartext header: its version, codec, piece count and raw length. */
export function frameHeader(frame: Buffer, where: string): FrameHeader {
  if (frame.length < FRAME_HEADER_BYTES) throw new DamagedError(`${where}: frame is truncated`);
  const header = frame.subarray(0, FRAME_HEADER_BYTES);
  const version = header.readUInt8(0);
  if (version !== FRAME_VERSION) throw new DamagedError(`${where}: unknown frame version ${version}`);
  const codec = header.readUInt8(1);
  if (codec !== Codec.none && codec !== Codec.zstd) throw new DamagedError(`${where}: unknown codec ${codec}`);
  return { header, codec, count: header.readUInt16LE(2), rawLength: header.readUInt32LE(4) };
}

/** Bytes of a frame's piece table (ids, then lengths), the start of its sealed content. */
export function frameTableBytes(count: number): number {
  return count * (ID_BYTES + 4);
}

export function frameAuthFailure(where: string): DamagedError {
  return new DamagedError(`${where}: frame failed authentication (altered or corrupted bytes)`);
}

/** The piece ids and lengths of a frame's opened table. */
export function frameTable(table: Buffer, count: number): { ids: Buffer[]; lengths: number[] } {
  const ids: Buffer[] = [];
  const lengths: number[] = [];
  for (let i = 0; i < count; i++) {
    ids.push(table.subarray(i * ID_BYTES, (i + 1) * ID_BYTES));
    lengths.push(table.readUInt32LE(count * ID_BYTES + i * 4));
  }
  return { ids, lengths };
}

export function decodeFrame(key: Buffer, frame: Buffer, where: string): DecodedFrame {
  const { header, codec, count, rawLength } = frameHeader(frame, where);
  const plain = open(key, frame.subarray(FRAME_HEADER_BYTES), header);
  const tableBytes = frameTableBytes(count);
  if (!plain || plain.length < tableBytes) throw frameAuthFailure(where);
  return { codec, ...frameTable(plain, count), rawLength, payload: plain.subarray(tableBytes) };
}

const ENTRY_BYTES = ID_BYTES + 4 + 16;

/** Index entries grouped by pack: u32 packCount, then per pack: id | u32 count | entries. */
export function encodeIndexEntries(entries: IndexEntry[]): Buffer {
  const byPack = new Map<string, IndexEntry[]>();
  for (const entry of entries) {
    const list = byPack.get(entry.packId);
    if (list) list.push(entry);
    else byPack.set(entry.packId, [entry]);
  }
  let size = 4;
  for (const list of byPack.values()) size += ID_BYTES + 4 + list.length * ENTRY_BYTES;
  const out = Buffer.alloc(size);
  let at = out.writeUInt32LE(byPack.size, 0);
  for (const [packId, list] of byPack) {
    at += Buffer.from(packId, 'hex').copy(out, at);
    at = out.writeUInt32LE(list.length, at);
    for (const e of list) {
      at += e.id.copy(out, at);
      at = out.writeUInt8(e.type, at);
      at += 3;
      at = out.writeUInt32LE(e.frameOffset, at);
      at = out.writeUInt32LE(e.frameLength, at);
      at = out.writeUInt32LE(e.offsetInFrame, at);
      at = out.writeUInt32LE(e.length, at);
    }
  }
  return out;
}

export function decodeIndexEntries(data: Buffer, where: string): IndexEntry[] {
  const fail = (): never => {
    throw new DamagedError(`${where}: index entries are malformed`);
  };
  if (data.length < 4) fail();
  const packs = data.readUInt32LE(0);
  let at = 4;
  const entries: IndexEntry[] = [];
  for (let p = 0; p < packs; p++) {
    if (at + ID_BYTES + 4 > data.length) fail();
    const packId = data.toString('hex', at, at + ID_BYTES);
    at += ID_BYTES;
    const count = data.readUInt32LE(at);
    at += 4;
    if (at + count * ENTRY_BYTES > data.length) fail();
    for (let i = 0; i < count; i++) {
      const id = Buffer.from(data.subarray(at, at + ID_BYTES));
      const type = data.readUInt8(at + ID_BYTES);
      if (type > PieceType.list) fail();
      entries.push({
        id,
        packId,
        type: type as PieceTypeId,
        frameOffset: data.readUInt32LE(at + ID_BYTES + 4),
        frameLength: data.readUInt32LE(at + ID_BYTES + 8),
        offsetInFrame: data.readUInt32LE(at + ID_BYTES + 12),
        length: data.readUInt32LE(at + ID_BYTES + 16),
      });
      at += ENTRY_BYTES;
    }
  }
  if (at !== data.length) fail();
  return entries;
}

export function encodeTrailer(key: Buffer, entries: IndexEntry[]): Buffer {
  const sealed = seal(key, encodeIndexEntries(entries), Buffer.from('cairn/v1/pack-trailer'));
  const length = Buffer.alloc(4);
  length.writeUInt32LE(sealed.length, 0);
  return Buffer.concat([sealed, length, PACK_END]);
}

/** Reads the entries a pack lists for itself (used to rebuild a lost index and by verify). */
export function decodeTrailer(key: Buffer, pack: Buffer, packId: string): IndexEntry[] {
  const where = `pack ${packId}`;
  if (pack.length < PACK_HEADER_BYTES + 8 || !pack.subarray(pack.length - 4).equals(PACK_END))
    throw new DamagedError(`${where}: missing trailer`);
  const length = pack.readUInt32LE(pack.length - 8);
  const start = pack.length - 8 - length;
  if (start < PACK_HEADER_BYTES) throw new DamagedError(`${where}: bad trailer length`);
  const plain = open(key, pack.subarray(start, pack.length - 8), Buffer.from('cairn/v1/pack-trailer'));
  if (!plain) throw new DamagedError(`${where}: trailer failed authentication`);
  return decodeIndexEntries(plain, where);
}
