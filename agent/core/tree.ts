import { isUtf8 } from 'node:buffer';
import { z } from 'zod';
import { DamagedError } from './errors.ts';

const hexId = z.string().regex(/^[0-9a-f]{64}$/);
const decimal = z.string().regex(/^-?\d{1,30}$/);
const base64 = z.string().regex(/^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/);

/**
 * One directory of a snapshot, stored as a `tree` piece (JSON). Entry names are
 * single path components, kept as the bytes the filesystem gave (see nameFields);
 * the restorer re-checks them with the same rule the archiver applied
 * (nameProblem), since a manifest is input like any other. `dev`/`inode`/`ctimeNs`
 * serve change detection on the next backup.
 */
export const treeEntrySchema = z.object({
  /** The name; when `nameBytes` is present, only a display form of it (invalid UTF-8 sequences as U+FFFD). */
  name: z.string().min(1),
  /** Base64 of the name's bytes, present only when they are not valid UTF-8. */
  nameBytes: base64.optional(),
  type: z.enum(['file', 'dir', 'symlink']),
  mode: z.number().int().min(0).max(0o7777),
  uid: z.number().int().min(0),
  gid: z.number().int().min(0),
  mtimeNs: decimal,
  ctimeNs: decimal.optional(),
  dev: decimal.optional(),
  inode: decimal.optional(),
  size: z.number().int().min(0).optional(),
  /** Piece ids of the content, in order, for files with few pieces. */
  content: z.array(hexId).optional(),
  /** For files with many pieces: ids of `list` pieces, each a run of 32-byte piece ids. */
  contentLists: z.array(hexId).optional(),
  /** Format 2, page files (core/page-file.ts): the page size the file's header states. */
  pageSize: z.number().int().min(512).max(65536).optional(),
  /** Format 2, page files: ids of `list` pieces of 40-byte extents (piece id, offset, length), in file order. */
  extentLists: z.array(hexId).min(1).optional(),
  /** Format 2, page files: ids of `list` pieces of 16-byte page hashes, one per page, for the next backup. */
  pageHashes: z.array(hexId).optional(),
  subtree: hexId.optional(),
  target: z.string().optional(),
  /** Base64 of a symlink target's bytes, present only when they are not valid UTF-8 (`target` is then for display). */
  targetBytes: base64.optional(),
  /** Files sharing this key were hard links to one inode at backup time. */
  hardlink: z.string().optional(),
});
export type TreeEntry = z.infer<typeof treeEntrySchema>;

/**
 * A tree's version says which fields a reader must understand: 2 when an entry
 * is a page file (extentLists). A reader that knows only version 1 refuses a
 * version-2 tree instead of dropping the fields it does not know, so a garbage
 * collector can never under-count the pieces a snapshot uses.
 */
export const treeSchema = z
  .object({
    version: z.union([z.literal(1), z.literal(2)]),
    entries: z.array(
      treeEntrySchema.refine(
        (e) => [e.content, e.contentLists, e.extentLists].filter((f) => f !== undefined).length <= 1,
        'an entry has more than one of content, contentLists and extentLists',
      ),
    ),
  })
  .refine((t) => t.version === 2 || t.entries.every((e) => e.extentLists === undefined && e.pageHashes === undefined), {
    message: 'a version-1 tree holds page-file fields',
  });
export type Tree = z.infer<typeof treeSchema>;

/**
 * The one rule for a name, applied by the archiver before it stores one and by
 * the restorer before it writes one (so a snapshot a backup commits is one a
 * restore accepts): any byte string a Linux filesystem allows as a directory
 * entry — not empty, not `.` or `..`, no `/`, no NUL. Everything else, `\`,
 * newlines and leading dashes included, is an ordinary name.
 */
export function nameProblem(name: Buffer): string | undefined {
  const shown = JSON.stringify(name.toString('utf8'));
  if (name.length === 0) return 'an empty name';
  if ((name.length === 1 && name[0] === DOT) || (name.length === 2 && name[0] === DOT && name[1] === DOT))
    return `the path component ${shown}`;
  if (name.includes(SLASH) || name.includes(0)) return `a name with a separator or NUL: ${shown}`;
  return undefined;
}

const DOT = 0x2e;
const SLASH = 0x2f;

/**
 * A name's fields in a tree entry: the name itself when it is valid UTF-8 (RFC 3629,
 * which a JSON string carries exactly), else a display form plus its bytes in base64. */
export function nameFields(bytes: Buffer): Pick<TreeEntry, 'name' | 'nameBytes'> {
  if (isUtf8(bytes)) return { name: bytes.toString('utf8') };
  return { name: bytes.toString('utf8'), nameBytes: bytes.toString('base64') };
}

/** A symlink target's fields, encoded as names are. */
export function targetFields(bytes: Buffer): Pick<TreeEntry, 'target' | 'targetBytes'> {
  if (isUtf8(bytes)) return { target: bytes.toString('utf8') };
  return { target: bytes.toString('utf8'), targetBytes: bytes.toString('base64') };
}

/**
 * What a restore refuses in an entry it read: the name rule on the name's bytes,
 * and any second form that disagrees with them. `nameBytes` (and `targetBytes`)
 * exist only for bytes that are not UTF-8, with `name` (`target`) their display
 * form, exactly as nameFields writes them: a crafted entry whose display name says
 * one thing while its bytes say another would make messages, `--include` and
 * listings lie about what is written.
 */
export function entryProblem(entry: TreeEntry): string | undefined {
  const name = entryName(entry);
  const problem = nameProblem(name);
  if (problem) return problem;
  if (entry.nameBytes !== undefined && !sameForms(nameFields(name), entry.name, entry.nameBytes))
    return `a name whose two forms disagree: ${JSON.stringify(entry.name)} and the bytes ${name.toString('hex')}`;
  if (entry.type === 'symlink' && entry.targetBytes !== undefined) {
    const target = entryTarget(entry);
    if (!sameForms(targetFields(target), entry.target, entry.targetBytes))
      return `a symlink target whose two forms disagree: ${JSON.stringify(entry.target)} and the bytes ${target.toString('hex')}`;
  }
  return undefined;
}

function sameForms(
  canonical: { name?: string; nameBytes?: string; target?: string; targetBytes?: string },
  text?: string,
  bytes?: string,
): boolean {
  return (canonical.name ?? canonical.target) === text && (canonical.nameBytes ?? canonical.targetBytes) === bytes;
}

/** The bytes of an entry's name, as the filesystem had them. */
export function entryName(entry: Pick<TreeEntry, 'name' | 'nameBytes'>): Buffer {
  return entry.nameBytes === undefined ? Buffer.from(entry.name, 'utf8') : Buffer.from(entry.nameBytes, 'base64');
}

/** The bytes of a symlink's target. */
export function entryTarget(entry: Pick<TreeEntry, 'target' | 'targetBytes'>): Buffer {
  return entry.targetBytes === undefined ? Buffer.from(entry.target ?? '', 'utf8') : Buffer.from(entry.targetBytes, 'base64');
}

/** Byte order of names, the same on every host. */
export function compareNames(a: string | Buffer, b: string | Buffer): number {
  return Buffer.compare(typeof a === 'string' ? Buffer.from(a, 'utf8') : a, typeof b === 'string' ? Buffer.from(b, 'utf8') : b);
}

/** The order of a tree's entries: by the bytes of their names. */
export function compareEntries(a: Pick<TreeEntry, 'name' | 'nameBytes'>, b: Pick<TreeEntry, 'name' | 'nameBytes'>): number {
  return Buffer.compare(entryName(a), entryName(b));
}

/**
 * Encodes a tree, with the version its entries need: 2 when an entry holds a
 * page-file field (extent lists or page hashes: a version-1 tree may hold
 * neither, so either one needs 2, even the crafted hashes-only entry that
 * verify reports as damage, so that re-encoding never makes an undecodable tree).
 */
export function encodeTree(tree: Tree): Buffer {
  const version = tree.entries.some((e) => e.extentLists !== undefined || e.pageHashes !== undefined) ? 2 : 1;
  return Buffer.from(JSON.stringify({ ...tree, version }), 'utf8');
}

export function decodeTree(data: Buffer, id: string): Tree {
  let json: unknown;
  try {
    json = JSON.parse(data.toString('utf8'));
  } catch (cause) {
    throw new DamagedError(`tree ${id} is not valid JSON`, { cause });
  }
  const fast = validTree(json);
  if (fast) return fast;
  const parsed = treeSchema.safeParse(json);
  if (!parsed.success) throw new DamagedError(`tree ${id} is invalid: ${z.prettifyError(parsed.error)}`);
  return parsed.data;
}

// ---------------------------------------------------------------- the fast path

/*
 * treeSchema takes ~8 µs per entry, and an unchanged re-backup of 20,000 files spent a fifth of
 * its time there, reading the parent's trees. validTree accepts exactly the trees treeSchema
 * accepts without changing (no unknown key to strip) and returns what treeSchema returns for
 * them (same fields, in the schema's order: copy and repair re-encode decoded trees); anything
 * else (an unknown key, an invalid field) goes to treeSchema, which strips or reports it.
 * test/fuzz/tree-fast.test.ts holds the two to the same answers. Exported for that test only.
 */
const HEX_ID = /^[0-9a-f]{64}$/;
const DECIMAL = /^-?\d{1,30}$/;
const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;
const ENTRY_KEYS = Object.keys(treeEntrySchema.shape) as Array<keyof TreeEntry>;
const KNOWN_KEYS = new Set<string>(ENTRY_KEYS);
const TYPES = new Set(['file', 'dir', 'symlink']);

type Json = Record<string, unknown>;
const isObject = (v: unknown): v is Json => typeof v === 'object' && v !== null && !Array.isArray(v);
const isInt = (v: unknown, min: number, max = Number.MAX_SAFE_INTEGER): boolean =>
  Number.isSafeInteger(v) && (v as number) >= min && (v as number) <= max;
const isMatch = (v: unknown, re: RegExp): boolean => typeof v === 'string' && re.test(v);
const optional = (v: unknown, ok: (v: unknown) => boolean): boolean => v === undefined || ok(v);
const hexIds = (v: unknown, min = 0): boolean => Array.isArray(v) && v.length >= min && v.every((id) => isMatch(id, HEX_ID));

export function validTree(json: unknown): Tree | undefined {
  if (!isObject(json) || (json.version !== 1 && json.version !== 2) || !Array.isArray(json.entries)) return undefined;
  for (const key in json) if (key !== 'version' && key !== 'entries') return undefined;
  const version = json.version;
  const entries: TreeEntry[] = [];
  for (const raw of json.entries as unknown[]) {
    const entry = validEntry(raw);
    if (!entry || (version === 1 && (entry.extentLists !== undefined || entry.pageHashes !== undefined))) return undefined;
    entries.push(entry);
  }
  return { version, entries };
}

function validEntry(e: unknown): TreeEntry | undefined {
  if (!isObject(e)) return undefined;
  for (const key in e) if (!KNOWN_KEYS.has(key)) return undefined;
  const ok =
    typeof e.name === 'string' &&
    e.name.length >= 1 &&
    optional(e.nameBytes, (v) => isMatch(v, BASE64)) &&
    typeof e.type === 'string' &&
    TYPES.has(e.type) &&
    isInt(e.mode, 0, 0o7777) &&
    isInt(e.uid, 0) &&
    isInt(e.gid, 0) &&
    isMatch(e.mtimeNs, DECIMAL) &&
    optional(e.ctimeNs, (v) => isMatch(v, DECIMAL)) &&
    optional(e.dev, (v) => isMatch(v, DECIMAL)) &&
    optional(e.inode, (v) => isMatch(v, DECIMAL)) &&
    optional(e.size, (v) => isInt(v, 0)) &&
    optional(e.content, (v) => hexIds(v)) &&
    optional(e.contentLists, (v) => hexIds(v)) &&
    optional(e.pageSize, (v) => isInt(v, 512, 65536)) &&
    optional(e.extentLists, (v) => hexIds(v, 1)) &&
    optional(e.pageHashes, (v) => hexIds(v)) &&
    optional(e.subtree, (v) => isMatch(v, HEX_ID)) &&
    optional(e.target, (v) => typeof v === 'string') &&
    optional(e.targetBytes, (v) => isMatch(v, BASE64)) &&
    optional(e.hardlink, (v) => typeof v === 'string') &&
    (e.content === undefined ? 0 : 1) + (e.contentLists === undefined ? 0 : 1) + (e.extentLists === undefined ? 0 : 1) <= 1;
  if (!ok) return undefined;
  const entry: Json = {};
  // The parsed JSON is this decode's own: its values are taken as they are, in the schema's key order.
  for (const key of ENTRY_KEYS) if (e[key] !== undefined) entry[key] = e[key];
  return entry as TreeEntry;
}
