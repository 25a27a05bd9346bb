import { DamagedError } from './errors.ts';
import { ID_BYTES } from './crypto.ts';

/**
 * Page-granular file content (repository format 2, docs/repository-format.md,
 * "Page files"). A database file is an array of fixed-size pages, and a database
 * changes scattered pages: cut into 1 MiB pieces, every piece holds a changed
 * page and an incremental stores nearly the whole file again. A page file is
 * instead described by
 *
 * - `pageSize`: the page size its own header states (or its parent recorded);
 * - `extentLists`: `list` pieces of extents, each 40 bytes (piece id, u32 BE
 *   offset into the piece's bytes, u32 BE length), in file order: the file is
 *   the concatenation of the slices. A backup stores each run of consecutive
 *   changed pages as one piece and points at the parent's pieces for the rest,
 *   so the index grows with stored pieces, not with pages, and a restore reads
 *   pieces directly (no chain);
 * - `pageHashes`: `list` pieces of one 16-byte keyed hash per page (the first
 *   16 bytes of the page's piece id, HMAC-SHA256 under the repository's id key),
 *   which the next backup compares page by page while it reads the file.
 */

/** Bytes of one extent record: piece id, offset, length. */
export const EXTENT_BYTES = ID_BYTES + 8;
/** Bytes of one page hash (128 bits: a changed page goes unnoticed with probability 2^-128). */
export const PAGE_HASH_BYTES = 16;
/** Extent records per `list` piece (640 KiB). */
export const EXTENTS_PER_LIST = 16384;
/** Page hashes per `list` piece (512 KiB). */
export const HASHES_PER_LIST = 32768;
/** A run of changed pages is stored as pieces of at most this many bytes (the first backup's pieces). */
export const RUN_BYTES = 1 << 20;
/** Files smaller than this are stored as ordinary content: a handful of pages gains nothing. */
export const MIN_PAGE_FILE = 256 * 1024;
/**
 * A restore reads whole pieces; once a file's extents would make it read more
 * than this many times the bytes so far (plus its cache of recent pieces), the
 * backup stores the rest of the file afresh (bounded read amplification;
 * pipeline/page-writer.ts, docs/repository-format.md).
 */
export const MAX_READ_AMPLIFICATION = 2;

export interface Extent {
  id: Buffer;
  offset: number;
  length: number;
}

export function encodeExtent(extent: Extent, into: Buffer, at: number): void {
  extent.id.copy(into, at);
  into.writeUInt32BE(extent.offset, at + ID_BYTES);
  into.writeUInt32BE(extent.length, at + ID_BYTES + 4);
}

/** The extents of one `list` piece; a record that cannot be one is damage, never skipped. */
export function* decodeExtents(list: Buffer, listId: string): Generator<Extent> {
  if (list.length === 0 || list.length % EXTENT_BYTES !== 0)
    throw new DamagedError(`extent list ${listId} has a bad length (${list.length} bytes)`);
  for (let at = 0; at < list.length; at += EXTENT_BYTES) {
    const length = list.readUInt32BE(at + ID_BYTES + 4);
    if (length === 0) throw new DamagedError(`extent list ${listId} holds an empty extent`);
    yield { id: list.subarray(at, at + ID_BYTES), offset: list.readUInt32BE(at + ID_BYTES), length };
  }
}

/** Checks a page-hash `list` piece's shape. */
export function checkHashList(list: Buffer, listId: string): void {
  if (list.length === 0 || list.length % PAGE_HASH_BYTES !== 0)
    throw new DamagedError(`page hash list ${listId} has a bad length (${list.length} bytes)`);
}

/** The slice of a piece an extent names, refused when it reaches past the piece. */
export function extentSlice(piece: Buffer, extent: Extent): Buffer {
  if (extent.offset + extent.length > piece.length)
    throw new DamagedError(
      `an extent names bytes ${extent.offset}-${extent.offset + extent.length} of piece ${extent.id.toString('hex')}, which has ${piece.length}`,
    );
  return piece.subarray(extent.offset, extent.offset + extent.length);
}

const PAGE_SIZES = new Set([1024, 2048, 4096, 8192, 16384, 32768, 65536]);

/**
 * The page size a database file's first page states, or undefined when it is
 * not a page the detector knows. Only efficiency depends on this answer: any page
 * size gives exact restores (extents are byte ranges), a wrong one only dedupes
 * worse.
 *
 * - PostgreSQL (bufpage.h): `pd_pagesize_version` (u16 LE at 18) is the page
 *   size | layout version 4, and pd_lower ≤ pd_upper ≤ pd_special ≤ page size.
 * - InnoDB (fsp0types.h): the first page of a tablespace has FIL_PAGE_TYPE
 *   FSP_HDR (8, u16 BE at 24), and the FSP flags (u32 BE at 38 + 16 = 54) give the
 *   physical page size: MariaDB's full_crc32 format (marker bit 4) as
 *   512 << ssize (bits 0-3); otherwise a compressed size 512 << zip_ssize (bits
 *   1-4) when set, else 512 << ssize (bits 6-9), 0 meaning 16 KiB.
 */
export function detectPageSize(first: Buffer): number | undefined {
  return postgresPageSize(first) ?? innodbPageSize(first);
}

function postgresPageSize(page: Buffer): number | undefined {
  if (page.length < 24) return undefined;
  const sizeVersion = page.readUInt16LE(18);
  const size = sizeVersion & 0xff00;
  if ((sizeVersion & 0xff) !== 4 || !PAGE_SIZES.has(size) || size > 32768) return undefined;
  const lower = page.readUInt16LE(12);
  const upper = page.readUInt16LE(14);
  const special = page.readUInt16LE(16);
  if (lower < 24 || lower > upper || upper > special || special > size) return undefined;
  return size;
}

const FIL_PAGE_TYPE_FSP_HDR = 8;

function innodbPageSize(page: Buffer): number | undefined {
  if (page.length < 58 || page.readUInt16BE(24) !== FIL_PAGE_TYPE_FSP_HDR) return undefined;
  const flags = page.readUInt32BE(54);
  let size: number;
  if (flags & 0x10) size = 512 << (flags & 0xf);
  else {
    const zip = (flags >>> 1) & 0xf;
    const ssize = (flags >>> 6) & 0xf;
    size = zip !== 0 ? 512 << zip : ssize === 0 ? 16384 : 512 << ssize;
  }
  return PAGE_SIZES.has(size) ? size : undefined;
}
