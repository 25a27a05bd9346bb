import { z } from 'zod';
import { DamagedError } from './errors.ts';

const hexId = z.string().regex(/^[0-9a-f]{64}$/);
const decimal = z.string().regex(/^-?\d{1,30}$/);

/**
 * One directory of a snapshot, stored as a `tree` piece (JSON). Entry names are
 * single path components; the restorer re-checks them (a manifest is input like
 * any other). `dev`/`inode`/`ctimeNs` serve change detection on the next backup.
 */
export const treeEntrySchema = z.object({
  name: z.string().min(1),
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
  subtree: hexId.optional(),
  target: z.string().optional(),
  /** Files sharing this key were hard links to one inode at backup time. */
  hardlink: z.string().optional(),
});
export type TreeEntry = z.infer<typeof treeEntrySchema>;

export const treeSchema = z.object({
  version: z.literal(1),
  entries: z.array(treeEntrySchema),
});
export type Tree = z.infer<typeof treeSchema>;

/** Byte order of UTF-8 names, the same on every host: the order of a tree's entries. */
export function compareNames(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));
}

export function encodeTree(tree: Tree): Buffer {
  return Buffer.from(JSON.stringify(tree), 'utf8');
}

export function decodeTree(data: Buffer, id: string): Tree {
  let json: unknown;
  try {
    json = JSON.parse(data.toString('utf8'));
  } catch (cause) {
    throw new DamagedError(`tree ${id} is not valid JSON`, { cause });
  }
  const parsed = treeSchema.safeParse(json);
  if (!parsed.success) throw new DamagedError(`tree ${id} is invalid: ${z.prettifyError(parsed.error)}`);
  return parsed.data;
}
