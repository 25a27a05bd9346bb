import { randomBytes } from 'node:crypto';
import { PieceType } from '../../../agent/core/pack.ts';
import type { Repository } from '../../../agent/core/repository.ts';
import type { RootMeta } from '../../../agent/core/snapshot.ts';
import { encodeTree, type TreeEntry } from '../../../agent/core/tree.ts';
import { TOOL } from '../../../agent/core/version.ts';
import { PackWriter } from '../../../agent/pipeline/pack-writer.ts';

export const META = { mode: 0o644, uid: 0, gid: 0, mtimeNs: '1600000000000000000' };
export const CONTENT = Buffer.from('attacker controlled bytes\n');

export type AddTree = (entries: TreeEntry[]) => Promise<string>;
/** Stores a tree under an id of the caller's choosing (which no honest writer would use: ids are keyed hashes of the content). */
export type AddTreeAs = (id: Buffer, entries: TreeEntry[]) => Promise<void>;
/** Stores a data piece; returns its id (hex). */
export type AddData = (bytes: Buffer) => Promise<string>;

/**
 * Writes trees exactly as given — bypassing the archiver and any encoder check —
 * and commits a snapshot of them with the repository key, as a hostile host
 * could. `file` is a file entry holding CONTENT, to spread into crafted entries.
 */
export async function craftSnapshot(
  repo: Repository,
  build: (addTree: AddTree, file: TreeEntry, addTreeAs: AddTreeAs, addData: AddData) => Promise<TreeEntry[]>,
  root?: RootMeta,
): Promise<string> {
  const index = await repo.loadIndex();
  const writer = new PackWriter(repo, index, { compression: { codec: 'none' }, concurrency: 1 });
  const dataId = repo.pieceId(CONTENT);
  await writer.add(dataId, PieceType.data, CONTENT);
  const addTree: AddTree = async (entries) => {
    const bytes = encodeTree({ version: 1, entries });
    const id = repo.pieceId(bytes);
    await writer.add(id, PieceType.tree, bytes);
    return id.toString('hex');
  };
  const addTreeAs: AddTreeAs = async (id, entries) => {
    await writer.add(id, PieceType.tree, encodeTree({ version: 1, entries }));
  };
  const addData: AddData = async (bytes) => {
    const id = repo.pieceId(bytes);
    await writer.add(id, PieceType.data, bytes);
    return id.toString('hex');
  };
  const file: TreeEntry = { ...META, name: 'x', type: 'file', size: CONTENT.length, content: [dataId.toString('hex')] };
  const tree = await addTree(await build(addTree, file, addTreeAs, addData));
  await writer.flush();
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
    tree,
    ...(root ? { root } : {}),
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
