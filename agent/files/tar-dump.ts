import type { Writable } from 'node:stream';
import { CairnError, DamagedError, errorMessage } from '../core/errors.ts';
import type { PieceReader } from '../core/piece-reader.ts';
import { TreeAncestors } from '../core/tree-walk.ts';
import { decodeTree, entryName, entryProblem, entryTarget, type TreeEntry } from '../core/tree.ts';
import { OutputWriter } from './output-writer.ts';
import { sliceReads, slicesSize } from './slice-reads.ts';
import { TAR_BLOCK, TAR_END, tarHeader, tarPadding, type TarEntry } from './tar-header.ts';

/** Piece reads started ahead of the writer, across files: a few frames, whatever the tree (a slice of a recent piece starts none). */
const PIECES_AHEAD = 4;
/** Headers queued ahead of the writer (a directory of empty files reads no pieces to wait on). */
const ITEMS_AHEAD = 256;

/** The directory dumped: its path in the archive (empty for the snapshot root) and what its own entry records. */
export interface TarDumpRoot {
  path: Buffer;
  /** Metadata of the directory's own entry (`./` for the snapshot root); none: the archive has no entry for it. */
  meta?: Pick<TreeEntry, 'mode' | 'uid' | 'gid' | 'mtimeNs'> | undefined;
  /** The directory's tree (none: an empty directory). */
  tree?: string | undefined;
}

type Item =
  | { kind: 'header'; data: Buffer; file?: { path: Buffer; size: number } }
  | { kind: 'piece'; data: Promise<Buffer>; reads: number }
  | { kind: 'end' };

/**
 * Writes a directory of a snapshot to `out` as a POSIX tar archive: directories,
 * files, symlinks, hard links (the first path of a group inside the archive holds
 * the data, later ones name it), modes, uid/gid and mtimes, names as their bytes.
 * Trees are read as the walk reaches them and data pieces a few ahead of the
 * writer, which waits whenever `out` asks: memory stays bounded whatever the size.
 * Any failure (a damaged piece, a tree that breaks the name rule, the output
 * closing) throws without the end-of-archive blocks, and, while the output
 * still takes bytes, after a block no tar reader takes for a header: GNU tar
 * accepts an archive cut at an entry's end as complete, so the end alone
 * would let a failure between two entries pass for a whole archive.
 */
export async function dumpTar(
  reader: PieceReader,
  root: TarDumpRoot,
  out: Writable,
  signal?: AbortSignal,
): Promise<{ entries: number; bytes: number }> {
  const writer = new OutputWriter(out, 'the whole archive');
  const queue: Item[] = [];
  let pieces = 0;
  let entries = 0;
  let bytes = 0;
  let file: { path: Buffer; size: number; written: number } | undefined;
  const write = async (data: Buffer): Promise<void> => {
    bytes += data.length;
    await writer.write(data);
  };
  const writeNext = async (): Promise<void> => {
    const item = queue.shift() as Item;
    if (item.kind === 'header') {
      entries++;
      file = item.file && { ...item.file, written: 0 };
      await write(item.data);
      return;
    }
    if (!file) throw new Error('tar dump: content outside a file');
    if (item.kind === 'piece') {
      pieces -= item.reads;
      const path = file.path;
      // Say which file the damaged piece belongs to: the reader's message names only the pack.
      const data = await item.data.catch((error: unknown) => {
        throw error instanceof CairnError
          ? new CairnError(error.code, `${path.toString('utf8')}: ${error.message}`, { hint: error.hint, cause: error })
          : error;
      });
      signal?.throwIfAborted();
      // The header promised `size` bytes: more would shift every entry after it.
      if (file.written + data.length > file.size) throw sizeMismatch(file.path, 'more than', file.size);
      file.written += data.length;
      await write(data);
      return;
    }
    if (file.written !== file.size) throw sizeMismatch(file.path, `${file.written} bytes,`, file.size);
    await write(tarPadding(file.size));
    file = undefined;
  };
  const items = archiveItems(reader, root);
  try {
    // A tree that cannot be read (or is refused) stops the walk: what was queued before it is still written.
    let walkFailure: Error | undefined;
    for (;;) {
      signal?.throwIfAborted();
      const next = await items.next().catch((error: unknown) => ({ failed: error instanceof Error ? error : new Error(String(error)) }));
      if ('failed' in next) walkFailure = next.failed;
      if ('failed' in next || next.done === true) break;
      queue.push(next.value);
      if (next.value.kind === 'piece') pieces += next.value.reads;
      while (pieces >= PIECES_AHEAD || queue.length >= ITEMS_AHEAD) await writeNext();
    }
    while (queue.length > 0) await writeNext();
    if (walkFailure !== undefined) throw walkFailure;
    await write(TAR_END);
    await writer.flush();
  } catch (error) {
    await writer.write(failureBlock(error)).catch(() => undefined);
    throw error;
  } finally {
    writer.release();
    await items.return(undefined);
  }
  return { entries, bytes };
}

/**
 * The block written where a failed archive stops: text saying why, laid out so that the
 * header's checksum field (bytes 148–155) holds newlines, never a number, and `tar -x` or
 * `tar -t` ends with an error. Inside a file's content, tar fails at the end of the input
 * instead, the content being short.
 */
function failureBlock(error: unknown): Buffer {
  const block = Buffer.alloc(TAR_BLOCK, 0x0a);
  block.write('\ncairn dump failed here: the archive is incomplete (why, below)\n', 0, 'utf8');
  block.write(`${errorMessage(error)}\n`, 160, TAR_BLOCK - 160, 'utf8');
  return block;
}

function sizeMismatch(path: Buffer, read: string, size: number): DamagedError {
  return new DamagedError(`${path.toString('utf8')}: read ${read} the snapshot records ${size} bytes`, {
    hint: 'run `cairn verify --read-data` to find the damage, then `cairn repair` as it says',
  });
}

/** The archive's items in order: headers, each file's pieces (reads already started) and its end. */
async function* archiveItems(reader: PieceReader, root: TarDumpRoot): AsyncGenerator<Item> {
  if (root.meta) {
    const path = root.path.length === 0 ? Buffer.from('./') : root.path;
    yield { kind: 'header', data: tarHeader({ ...metaOf(root.meta), path, type: 'dir', size: 0 }) };
  }
  if (root.tree) yield* directoryItems(reader, root.tree, root.path, TreeAncestors.none, new Map());
}

async function* directoryItems(
  reader: PieceReader,
  treeId: string,
  dir: Buffer,
  ancestors: TreeAncestors,
  firstOfLink: Map<string, Buffer>,
): AsyncGenerator<Item> {
  const here = ancestors.enter(treeId, dir.toString('utf8'));
  const { entries } = decodeTree(await reader.read(Buffer.from(treeId, 'hex')), treeId);
  const names = new Set<string>();
  for (const entry of entries) {
    const name = entryName(entry);
    const path = dir.length === 0 ? name : Buffer.concat([dir, SLASH, name]);
    // A crafted tree must not make tar write outside where it extracts (`..`, `a/b` as one name) or twice to one path.
    const problem = entryProblem(entry) ?? (names.has(name.toString('latin1')) ? 'a name twice in one directory' : undefined);
    if (problem) throw new DamagedError(`tree ${treeId} at ${JSON.stringify(dir.toString('utf8') || '/')} holds ${problem}`);
    names.add(name.toString('latin1'));
    const meta = metaOf(entry);
    if (entry.type === 'dir') {
      yield { kind: 'header', data: tarHeader({ ...meta, path, type: 'dir', size: 0 }) };
      if (entry.subtree) yield* directoryItems(reader, entry.subtree, path, here, firstOfLink);
    } else if (entry.type === 'symlink') {
      yield { kind: 'header', data: tarHeader({ ...meta, path, type: 'symlink', size: 0, linkTarget: entryTarget(entry) }) };
    } else {
      const first = entry.hardlink === undefined ? undefined : firstOfLink.get(entry.hardlink);
      if (first) {
        yield { kind: 'header', data: tarHeader({ ...meta, path, type: 'link', size: 0, linkTarget: first }) };
        continue;
      }
      if (entry.hardlink !== undefined) firstOfLink.set(entry.hardlink, path);
      // The header's size is the entry's: the bytes its slices hold (a page file's extents), never its pieces' lengths.
      const size = entry.size ?? (await slicesSize(entry, reader));
      yield { kind: 'header', data: tarHeader({ ...meta, path, type: 'file', size }), file: { path, size } };
      for await (const read of sliceReads(entry, reader)) yield { kind: 'piece', data: read.data, reads: read.started > 0 ? 1 : 0 };
      yield { kind: 'end' };
    }
  }
}

const SLASH = Buffer.from('/');

function metaOf(entry: Pick<TreeEntry, 'mode' | 'uid' | 'gid' | 'mtimeNs'>): Omit<TarEntry, 'path' | 'type' | 'size'> {
  return { mode: entry.mode, uid: entry.uid, gid: entry.gid, mtimeNs: BigInt(entry.mtimeNs) };
}
