import { randomBytes } from 'node:crypto';
import { PieceType } from '../../../agent/core/pack.ts';
import { EXTENT_BYTES, encodeExtent, type Extent } from '../../../agent/core/page-file.ts';
import type { Repository } from '../../../agent/core/repository.ts';
import { encodeTree, type TreeEntry } from '../../../agent/core/tree.ts';
import { TOOL } from '../../../agent/core/version.ts';
import { PackWriter } from '../../../agent/pipeline/pack-writer.ts';

const META = { mode: 0o644, uid: 0, gid: 0, mtimeNs: '1600000000000000000' };
export const OK_CONTENT = Buffer.from('an ordinary file after the page file\n');

/**
 * Commits a snapshot whose root holds a page file written exactly as given — random data pieces
 * of the lengths in `pieces`, one extent `list` piece of what `extents` makes of the first two,
 * and the entry's `size` — and `ok.txt`, an ordinary file after it in name order, as a hostile
 * host with the repository key could (bypassing the page writer).
 */
export async function craftPageFileSnapshot(
  repo: Repository,
  file: { name: string; size: number; pieces: number[]; extents: (a: Buffer, b: Buffer) => Extent[] },
): Promise<string> {
  const index = await repo.loadIndex();
  const writer = new PackWriter(repo, index, { compression: { codec: 'none' }, concurrency: 1 });
  const add = async (type: (typeof PieceType)[keyof typeof PieceType], bytes: Buffer): Promise<Buffer> => {
    const id = repo.pieceId(bytes);
    await writer.add(id, type, bytes);
    return id;
  };
  const ids: Buffer[] = [];
  for (const length of file.pieces) ids.push(await add(PieceType.data, randomBytes(length)));
  const extents = file.extents(ids[0] as Buffer, ids[1] as Buffer);
  const list = Buffer.alloc(extents.length * EXTENT_BYTES);
  extents.forEach((extent, i) => encodeExtent(extent, list, i * EXTENT_BYTES));
  const listId = await add(PieceType.list, list);
  const okId = await add(PieceType.data, OK_CONTENT);
  const entries: TreeEntry[] = [
    { ...META, name: file.name, type: 'file', size: file.size, pageSize: 8192, extentLists: [listId.toString('hex')] },
    { ...META, name: 'ok.txt', type: 'file', size: OK_CONTENT.length, content: [okId.toString('hex')] },
  ];
  const tree = await add(PieceType.tree, encodeTree({ version: 2, entries }));
  await writer.flush();
  return commitCraftedSnapshot(repo, tree);
}

/** Commits a snapshot of the tree `tree` (already stored), as a host with the repository key could. */
export async function commitCraftedSnapshot(repo: Repository, tree: Buffer): Promise<string> {
  const id = randomBytes(32).toString('hex');
  const now = new Date().toISOString();
  await repo.saveSnapshot({
    version: 1,
    id,
    time: now,
    endTime: now,
    host: 'attacker',
    user: 'x',
    paths: ['/'],
    tags: [],
    engine: 'files',
    engineMetadata: {},
    tree: tree.toString('hex'),
    summary: {
      filesNew: 0,
      filesChanged: 0,
      filesUnchanged: 0,
      dirs: 0,
      bytesNew: 0,
      bytesChanged: 0,
      bytesUnchanged: 0,
      totalFiles: 0,
      totalBytes: 0,
      bytesRead: 0,
      piecesAdded: 0,
      rawBytesAdded: 0,
      bytesAdded: 0,
      durationMs: 0,
      errors: 0,
    },
    tool: TOOL,
  });
  return id;
}
