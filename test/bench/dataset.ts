import { mkdirSync, openSync, closeSync, writeSync, readSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Prng } from './prng.ts';

/**
 * The benchmark's dataset: deterministic (seeded), generated in seconds, shaped
 * like a database host's disk. By bytes:
 * - ~60% database-like files of 16 KiB pages (InnoDB-like: an FSP_HDR first page; header,
 *   rows of column-like text and numbers, zero free space at the end of pages): zstd
 *   compresses them ~2–3×, and
 *   every page is unique, as in a real tablespace (no free deduplication);
 * - ~25% incompressible files (a few large ones);
 * - ~15% small files, 1–64 KiB averaging ~8 KiB, half text half random, in nested
 *   directories (a 1 GiB dataset has ~20,000 of them).
 */

export const PAGE = 16384;
const WRITE_BATCH = 4 << 20; // bytes per write() call for the large files

export interface Layout {
  dbFiles: Array<{ path: string; pages: number }>;
  randomFiles: Array<{ path: string; size: number }>;
  smallFiles: number;
  smallBytes: number;
  dirs: number;
  bytes: number;
}

// ---------------------------------------------------------------- database pages

const FIRST = [
  'anna',
  'ben',
  'carla',
  'dmitri',
  'eva',
  'farid',
  'greta',
  'hiro',
  'ines',
  'jonas',
  'kim',
  'lena',
  'marco',
  'nora',
  'omar',
  'paula',
  'quinn',
  'rosa',
  'sven',
  'tara',
  'ugo',
  'vera',
  'wim',
  'xenia',
  'yusuf',
  'zoe',
];
const LAST = [
  'adams',
  'berger',
  'costa',
  'dubois',
  'eriksen',
  'fischer',
  'garcia',
  'horvat',
  'ivanova',
  'jensen',
  'kowalski',
  'lopez',
  'muller',
  'novak',
  'olsen',
  'petrov',
  'quispe',
  'rossi',
  'schmidt',
  'tanaka',
  'ustinov',
  'varga',
  'weber',
  'xu',
  'yilmaz',
  'zimmer',
];
const CITY = [
  'amsterdam',
  'berlin',
  'chicago',
  'dakar',
  'edinburgh',
  'frankfurt',
  'geneva',
  'helsinki',
  'istanbul',
  'jakarta',
  'kyoto',
  'lisbon',
  'madrid',
  'nairobi',
  'oslo',
  'porto',
];
const STATUS = ['active', 'closed', 'frozen', 'pending'];

// Column values are prebuilt, fixed-width byte strings: rows are assembled by copying
// and by writing digits from a block of random bytes, with no string formatting per row
// (string-built rows made a GiB take ~20 s to generate; this takes a few).
const fixed = (text: string, width: number): Buffer => Buffer.from(text.padEnd(width).slice(0, width), 'latin1');
const NAMES = FIRST.flatMap((f) => LAST.map((l) => fixed(`${f} ${l}`, 20)));
const CITIES = CITY.map((c) => fixed(c, 10));
const STATUSES = STATUS.map((s) => fixed(s, 7));
// A row: InnoDB-like binary system columns (record header, transaction id, roll
// pointer: partly random, as on disk), then the user columns as text.
const SYSTEM = 18;
const TEXT_TEMPLATE = '0000000000|' + ' '.repeat(20) + '|' + ' '.repeat(10) + '|0000000.00|       |2026-00-00 00:00:00|0000000000000000\n';
const ROW_TEMPLATE = Buffer.concat([Buffer.alloc(SYSTEM), Buffer.from(TEXT_TEMPLATE, 'latin1')]);
export const ROW = ROW_TEMPLATE.length; // 117 bytes
const RANDOM_PER_ROW = 40;
const ZERO = 0x30;
const HEX = Buffer.from('0123456789abcdef', 'latin1');
// Where the user columns start, from the template above.
const ID = SYSTEM;
const NAME = ID + 11;
const CITY_AT = NAME + 21;
const AMOUNT = CITY_AT + 11;
const STATUS_AT = AMOUNT + 11;
const DATE = STATUS_AT + 8;
const HASH = DATE + 20;

function writeDigits(out: Buffer, at: number, value: number, width: number): void {
  for (let i = width - 1; i >= 0; i--) {
    out[at + i] = ZERO + (value % 10);
    value = Math.floor(value / 10);
  }
}

/**
 * One row at `at` (ROW bytes): system columns, a sequential id, a name and a city
 * from small vocabularies, a random amount, status, timestamp and a 64-bit hash in
 * hex. The random parts make pages compress like InnoDB's (~2.5× at zstd -3).
 */
function writeRow(out: Buffer, at: number, id: number, rnd: Buffer, r: number): void {
  ROW_TEMPLATE.copy(out, at);
  out.writeUInt16BE(id & 0xffff, at + 1); // heap number
  out.writeUInt16BE(ROW, at + 3); // next record
  rnd.copy(out, at + 8, r + 32, r + 40); // low bytes of the trx id (3) and of the roll pointer (4)
  out[at + 11] = 0x80; // roll pointer: insert flag
  writeDigits(out, at + ID, id, 10);
  NAMES[(rnd[r]! | (rnd[r + 1]! << 8)) % NAMES.length]!.copy(out, at + NAME);
  CITIES[rnd[r + 2]! % CITIES.length]!.copy(out, at + CITY_AT);
  for (let i = 0; i < 7; i++) out[at + AMOUNT + i] = ZERO + (rnd[r + 3 + i]! % 10);
  out[at + AMOUNT + 8] = ZERO + (rnd[r + 10]! % 10);
  out[at + AMOUNT + 9] = ZERO + (rnd[r + 11]! % 10);
  STATUSES[rnd[r + 12]! % STATUSES.length]!.copy(out, at + STATUS_AT);
  writeDigits(out, at + DATE + 5, 1 + (rnd[r + 13]! % 12), 2);
  writeDigits(out, at + DATE + 8, 1 + (rnd[r + 14]! % 28), 2);
  writeDigits(out, at + DATE + 11, rnd[r + 15]! % 24, 2);
  writeDigits(out, at + DATE + 14, rnd[r + 16]! % 60, 2);
  writeDigits(out, at + DATE + 17, rnd[r + 17]! % 60, 2);
  for (let i = 0; i < 8; i++) {
    const b = rnd[r + 18 + i]!;
    out[at + HASH + 2 * i] = HEX[b >> 4]!;
    out[at + HASH + 2 * i + 1] = HEX[b & 15]!;
  }
}

/** `count` rows into `out` from `at`, ids from `firstId`. */
function writeRows(out: Buffer, at: number, count: number, firstId: number, prng: Prng): void {
  const rnd = prng.bytes(count * RANDOM_PER_ROW);
  for (let i = 0; i < count; i++) writeRow(out, at + i * ROW, firstId + i, rnd, i * RANDOM_PER_ROW);
}

/**
 * A page: a 38-byte header (checksum, page number, LSN, type, space id) and an
 * 8-byte trailer like InnoDB's, rows in between, and a zeroed free area of
 * random size before the trailer (pages are rarely full).
 */
export function dbPage(prng: Prng, pageNo: number, lsn: bigint): Buffer {
  const page = Buffer.alloc(PAGE);
  writeHeader(page, prng, pageNo, lsn);
  const body = bodyStart(pageNo);
  const room = PAGE - body - 8 - prng.int(PAGE / 8);
  const rows = Math.floor(room / ROW);
  writeRows(page, body, rows, pageNo * 140, prng);
  return page;
}

// Page 0 of a tablespace is its FSP_HDR page, as in every real InnoDB file: after the 38-byte
// file header, the 112-byte FSP header (space id, size, FSP flags at 38 + 16: 0 means 16 KiB
// pages). Backup tools that read page sizes from a file's own header (Cairn's page files) see
// these files as the tablespaces they stand for.
const FSP_HEADER = 112;
const bodyStart = (pageNo: number): number => (pageNo === 0 ? 38 + FSP_HEADER : 38);

function writeHeader(page: Buffer, prng: Prng, pageNo: number, lsn: bigint): void {
  page.writeUInt32BE(prng.u32(), 0); // checksum: changes whenever the page does
  page.writeUInt32BE(pageNo, 4);
  page.writeUInt32BE(pageNo === 0 ? 0 : pageNo - 1, 8);
  page.writeUInt32BE(pageNo + 1, 12);
  page.writeBigUInt64BE(lsn, 16);
  page.writeUInt16BE(pageNo === 0 ? 8 : 0x45bf, 24); // FSP_HDR (8) or an index page
  page.writeUInt32BE(7, 34); // space id
  if (pageNo === 0) {
    page.fill(0, 38, 38 + FSP_HEADER);
    page.writeUInt32BE(7, 38); // FSP_SPACE_ID
    page.writeUInt32BE(0, 38 + 16); // FSP_SPACE_FLAGS: 16 KiB pages, no compression
  }
  page.writeUInt32BE(page.readUInt32BE(0), PAGE - 8);
  page.writeUInt32BE(Number(lsn & 0xffffffffn), PAGE - 4);
}

/** A page after a write: new checksum and LSN, a few fields of a few rows rewritten. The whole page counts as changed. */
function rewritePage(page: Buffer, prng: Prng, pageNo: number, lsn: bigint): void {
  writeHeader(page, prng, pageNo, lsn);
  const edits = 1 + prng.int(8);
  for (let i = 0; i < edits; i++) {
    const at = bodyStart(pageNo) + prng.int(PAGE / 2);
    writeDigits(page, at, prng.int(1e8), 8);
  }
}

// ---------------------------------------------------------------- generation

export function generateDataset(dir: string, totalBytes: number, seed = 1): Layout {
  const layout: Layout = { dbFiles: [], randomFiles: [], smallFiles: 0, smallBytes: 0, dirs: 0, bytes: 0 };
  const dbBytes = Math.floor(totalBytes * 0.6);
  const randomBytes = Math.floor(totalBytes * 0.25);
  writeDbFiles(dir, dbBytes, seed, layout);
  writeRandomFiles(dir, randomBytes, seed, layout);
  writeSmallFiles(dir, totalBytes - layout.bytes, seed, layout);
  return layout;
}

const clamp = (v: number, lo: number, hi: number): number => Math.min(hi, Math.max(lo, v));

/** A few tablespaces of ~100 MiB (at least 2), whole pages each. */
function writeDbFiles(dir: string, bytes: number, seed: number, layout: Layout): void {
  const prng = new Prng(seed, 'db');
  const count = clamp(Math.round(bytes / (100 << 20)), 2, 16);
  mkdirSync(join(dir, 'db'), { recursive: true });
  for (let f = 0; f < count; f++) {
    const pages = Math.max(1, Math.floor(bytes / count / PAGE));
    const path = join('db', `table${f}.ibd`);
    const fd = openSync(join(dir, path), 'w');
    const batch: Buffer[] = [];
    for (let p = 0; p < pages; p++) {
      batch.push(dbPage(prng, p, BigInt(1_000_000 + p * 37)));
      if (batch.length * PAGE >= WRITE_BATCH || p === pages - 1) {
        writeSync(fd, Buffer.concat(batch));
        batch.length = 0;
      }
    }
    closeSync(fd);
    layout.dbFiles.push({ path, pages });
    layout.bytes += pages * PAGE;
  }
}

/** A few large incompressible files (media, encrypted dumps), sizes not page-aligned. */
function writeRandomFiles(dir: string, bytes: number, seed: number, layout: Layout): void {
  const prng = new Prng(seed, 'random');
  const count = clamp(Math.round(bytes / (64 << 20)), 2, 8);
  mkdirSync(join(dir, 'blobs'), { recursive: true });
  for (let f = 0; f < count; f++) {
    const size = Math.floor(bytes / count) - prng.int(4096);
    const path = join('blobs', `blob${f}.bin`);
    const fd = openSync(join(dir, path), 'w');
    for (let at = 0; at < size; at += WRITE_BATCH) writeSync(fd, prng.bytes(Math.min(WRITE_BATCH, size - at)));
    closeSync(fd);
    layout.randomFiles.push({ path, size });
    layout.bytes += size;
  }
}

/**
 * Sizes 1–64 KiB with most files small: 1 KiB × 64^(u^2.6) averages ~8 KiB, so the
 * count comes out near one file per 8 KiB. About 64 files per directory, three levels.
 */
function writeSmallFiles(dir: string, bytes: number, seed: number, layout: Layout): void {
  const prng = new Prng(seed, 'small');
  let written = 0;
  let n = 0;
  while (written < bytes) {
    const size = Math.min(bytes - written, Math.floor(1024 * 64 ** (prng.float() ** 2.6)));
    writeSmallFile(dir, n, size, prng, layout);
    written += size;
    n++;
  }
  layout.smallFiles = n;
  layout.smallBytes = written;
  layout.bytes += written;
}

/** Small file `n` (text for even n, random for odd), 64 to a directory, three levels under small/. */
function writeSmallFile(dir: string, n: number, size: number, prng: Prng, layout: Layout): void {
  const d = Math.floor(n / 64);
  const parent = join(dir, 'small', `a${d % 8}`, `b${Math.floor(d / 8) % 8}`, `c${Math.floor(d / 64)}`);
  if (n % 64 === 0) {
    mkdirSync(parent, { recursive: true });
    layout.dirs++;
  }
  const text = n % 2 === 0;
  writeFileSync(join(parent, `f${n}.${text ? 'log' : 'bin'}`), text ? textBytes(prng, size, n) : prng.bytes(size));
}

/**
 * Dataset C of PERFORMANCE.md: `files` small files of `totalBytes` in all (50,000 and 535 MB
 * there), half compressible text, half random, sizes uniform from 1 byte to twice the mean.
 */
export function generateSmallFilesDataset(dir: string, files: number, totalBytes: number, seed = 3): Layout {
  const layout: Layout = { dbFiles: [], randomFiles: [], smallFiles: files, smallBytes: 0, dirs: 0, bytes: 0 };
  const prng = new Prng(seed, 'small-files');
  const mean = totalBytes / files;
  for (let n = 0; n < files; n++) {
    // The last file takes what is left, so the total is exact.
    const size = n === files - 1 ? Math.max(0, totalBytes - layout.bytes) : 1 + Math.floor(prng.float() * (2 * mean - 1));
    writeSmallFile(dir, n, size, prng, layout);
    layout.bytes += size;
  }
  layout.smallBytes = layout.bytes;
  return layout;
}

/** Table-dump-like text of exactly `size` bytes. */
function textBytes(prng: Prng, size: number, n: number): Buffer {
  const rows = Math.ceil(size / ROW);
  const out = Buffer.alloc(rows * ROW);
  writeRows(out, 0, rows, n * 1000, prng);
  return out.subarray(0, size);
}

// ---------------------------------------------------------------- changes

/**
 * Overwrites about `fraction` of the dataset's bytes in place, sizes unchanged:
 * scattered distinct 16 KiB pages of the tablespaces (as a database's writes do) and
 * a few ranges of the random files. Returns the bytes changed (whole pages counted).
 */
export function mutateDataset(dir: string, layout: Layout, fraction: number, seed = 2): number {
  const prng = new Prng(seed, 'mutate');
  // The small files stay as they are, so the big files take the whole share.
  const bigBytes = layout.bytes - layout.smallBytes;
  const share = Math.min(1, (fraction * layout.bytes) / bigBytes);
  let changed = 0;
  for (const file of layout.dbFiles) changed += rewritePages(join(dir, file.path), file.pages, share, prng);
  for (const file of layout.randomFiles) changed += overwriteRanges(join(dir, file.path), file.size, share, prng);
  return changed;
}

function rewritePages(path: string, pages: number, share: number, prng: Prng): number {
  const chosen = new Set<number>();
  const count = Math.round(pages * share);
  while (chosen.size < count) chosen.add(prng.int(pages));
  const fd = openSync(path, 'r+');
  const page = Buffer.alloc(PAGE);
  for (const pageNo of [...chosen].sort((a, b) => a - b)) {
    readSync(fd, page, 0, PAGE, pageNo * PAGE);
    rewritePage(page, prng, pageNo, BigInt(9_000_000 + pageNo));
    writeSync(fd, page, 0, PAGE, pageNo * PAGE);
  }
  closeSync(fd);
  return count * PAGE;
}

/** Ranges of 256 KiB–1 MiB at unaligned offsets, at most one per 2 MiB slot so none overlap. */
function overwriteRanges(path: string, size: number, share: number, prng: Prng): number {
  const SLOT = 2 << 20;
  const slots = Math.floor(size / SLOT);
  const target = size * share;
  const used = new Set<number>();
  const fd = openSync(path, 'r+');
  let changed = 0;
  while (changed < target && used.size < slots) {
    const slot = prng.int(slots);
    if (used.has(slot)) continue;
    used.add(slot);
    const length = Math.min((256 << 10) + prng.int(768 << 10), Math.ceil(target - changed));
    writeSync(fd, prng.bytes(length), 0, length, slot * SLOT + prng.int(SLOT - length));
    changed += length;
  }
  closeSync(fd);
  return changed;
}
