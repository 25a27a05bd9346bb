/**
 * POSIX tar (pax interchange format) headers for `cairn dump` of a directory,
 * built from the exact bytes a snapshot holds. tar-stream (used to read archives
 * in agent/engines/postgres.ts) is not used to write them: its encoder takes names
 * and pax values as JavaScript strings and writes them as UTF-8, so a name that is
 * not UTF-8 could not pass through it unchanged.
 *
 * Each entry is one ustar header, preceded by a pax extended header ('x') for what
 * the ustar fields cannot hold: a path or link target over 100 bytes, a size, uid
 * or gid past its octal field, an mtime with nanoseconds or outside 1970–2242.
 * Names go in as bytes, in both places; GNU tar and bsdtar take them as they are.
 */

export type TarEntryType = 'file' | 'dir' | 'symlink' | 'link';

export interface TarEntry {
  /** The path in the archive, '/'-separated bytes; a directory's trailing '/' is added here. */
  path: Buffer;
  type: TarEntryType;
  /** Permission bits with setuid, setgid and sticky (0..0o7777). */
  mode: number;
  uid: number;
  gid: number;
  mtimeNs: bigint;
  /** Bytes of content that follow the header (files only; 0 for the others). */
  size: number;
  /** A symlink's target, or the path of the file a hard link ('link') names. */
  linkTarget?: Buffer | undefined;
}

export const TAR_BLOCK = 512;

/** Two zero blocks: the end of an archive. Written only once everything before it was. */
export const TAR_END: Buffer = Buffer.alloc(2 * TAR_BLOCK);

const TYPEFLAG: Record<TarEntryType | 'pax', number> = { file: 0x30, link: 0x31, symlink: 0x32, dir: 0x35, pax: 0x78 };
const NAME_BYTES = 100;
/** The largest value of an 11-digit octal field (size, mtime) and of a 7-digit one (mode, uid, gid). */
const MAX_OCTAL_11 = 0o77777777777n;
const MAX_OCTAL_7 = 0o7777777n;
const NS_PER_S = 1_000_000_000n;

/** The zeros that pad `size` bytes of content to a whole block. */
export function tarPadding(size: number): Buffer {
  const rest = size % TAR_BLOCK;
  return rest === 0 ? Buffer.alloc(0) : Buffer.alloc(TAR_BLOCK - rest);
}

/** The header blocks of one entry: a pax header and its records when needed, then the ustar header. */
export function tarHeader(entry: TarEntry): Buffer {
  const path = entry.type === 'dir' && entry.path.at(-1) !== 0x2f ? Buffer.concat([entry.path, Buffer.from('/')]) : entry.path;
  const link = entry.linkTarget ?? Buffer.alloc(0);
  const size = entry.type === 'file' ? BigInt(entry.size) : 0n;
  const seconds = floorDiv(entry.mtimeNs, NS_PER_S);
  const pax: Array<[string, Buffer]> = [];
  if (path.length > NAME_BYTES) pax.push(['path', path]);
  if (link.length > NAME_BYTES) pax.push(['linkpath', link]);
  if (size > MAX_OCTAL_11) pax.push(['size', Buffer.from(String(size))]);
  if (BigInt(entry.uid) > MAX_OCTAL_7) pax.push(['uid', Buffer.from(String(entry.uid))]);
  if (BigInt(entry.gid) > MAX_OCTAL_7) pax.push(['gid', Buffer.from(String(entry.gid))]);
  if (entry.mtimeNs % NS_PER_S !== 0n || seconds < 0n || seconds > MAX_OCTAL_11) pax.push(['mtime', Buffer.from(paxTime(entry.mtimeNs))]);
  const header = ustar({ name: path, type: entry.type, mode: entry.mode, uid: entry.uid, gid: entry.gid, size, seconds, link });
  if (pax.length === 0) return header;
  const records = Buffer.concat(pax.map(([key, value]) => paxRecord(key, value)));
  const paxHeader = ustar({
    name: Buffer.from('PaxHeader'),
    type: 'pax',
    mode: 0o644,
    uid: 0,
    gid: 0,
    size: BigInt(records.length),
    seconds: 0n,
    link: Buffer.alloc(0),
  });
  return Buffer.concat([paxHeader, records, tarPadding(records.length), header]);
}

interface UstarFields {
  name: Buffer;
  type: TarEntryType | 'pax';
  mode: number;
  uid: number;
  gid: number;
  size: bigint;
  seconds: bigint;
  link: Buffer;
}

/** One 512-byte ustar header; what a field cannot hold was put in the pax header before it (which readers prefer). */
function ustar(f: UstarFields): Buffer {
  const block = Buffer.alloc(TAR_BLOCK);
  f.name.copy(block, 0, 0, Math.min(f.name.length, NAME_BYTES));
  numeric(block, 100, 8, BigInt(f.mode & 0o7777));
  numeric(block, 108, 8, BigInt(f.uid));
  numeric(block, 116, 8, BigInt(f.gid));
  numeric(block, 124, 12, f.size);
  numeric(block, 136, 12, f.seconds);
  block[156] = TYPEFLAG[f.type];
  f.link.copy(block, 157, 0, Math.min(f.link.length, NAME_BYTES));
  block.write('ustar\u000000', 257, 'latin1');
  // The checksum is the sum of all bytes with its own field taken as spaces.
  block.fill(0x20, 148, 156);
  let sum = 0;
  for (const byte of block) sum += byte;
  block.write(`${sum.toString(8).padStart(6, '0')}\u0000 `, 148, 'latin1');
  return block;
}

/**
 * A number in its field: octal with a NUL when it fits, else base-256 (the GNU extension every
 * current reader knows, two's complement for a negative mtime) so the header stays consistent
 * for a reader that ignores the pax record.
 */
function numeric(block: Buffer, offset: number, length: number, value: bigint): void {
  const max = 8n ** BigInt(length - 1) - 1n;
  if (value >= 0n && value <= max) {
    block.write(`${value.toString(8).padStart(length - 1, '0')}\u0000`, offset, 'latin1');
    return;
  }
  let rest = BigInt.asUintN(8 * (length - 1), value);
  for (let i = length - 1; i >= 1; i--) {
    block[offset + i] = Number(rest & 0xffn);
    rest >>= 8n;
  }
  block[offset] = value < 0n ? 0xff : 0x80;
}

/** "<length> <key>=<value>\n", where the length counts its own digits. */
function paxRecord(key: string, value: Buffer): Buffer {
  const base = key.length + value.length + 3;
  let length = base + String(base).length;
  if (String(length).length !== String(base).length) length = base + String(length).length;
  return Buffer.concat([Buffer.from(`${length} ${key}=`), value, Buffer.from('\n')]);
}

/** Nanoseconds since the epoch as pax writes a time: decimal seconds, the fraction to the nanosecond. */
function paxTime(ns: bigint): string {
  const sign = ns < 0n ? '-' : '';
  const abs = ns < 0n ? -ns : ns;
  const fraction = (abs % NS_PER_S).toString().padStart(9, '0').replace(/0+$/, '');
  return `${sign}${abs / NS_PER_S}${fraction === '' ? '' : `.${fraction}`}`;
}

function floorDiv(a: bigint, b: bigint): bigint {
  const q = a / b;
  return a % b !== 0n && a < 0n ? q - 1n : q;
}
