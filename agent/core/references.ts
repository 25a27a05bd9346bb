import { decodeExtents } from './page-file.ts';
import { ID_BYTES } from './crypto.ts';
import { PieceType } from './pack.ts';
import { PieceIndex } from './piece-index.ts';
import type { PieceReader } from './piece-reader.ts';
import type { Snapshot } from './snapshot.ts';
import { decodeTree } from './tree.ts';

const NO_PACK = '0'.repeat(64);

/** A compact set of piece ids (the index's table without locations that matter). */
export class PieceSet {
  private readonly table = new PieceIndex();
  get size(): number {
    return this.table.size;
  }
  has(id: Buffer): boolean {
    return this.table.has(id);
  }
  add(id: Buffer): void {
    this.table.add({ id, packId: NO_PACK, type: PieceType.data, frameOffset: 0, frameLength: 0, offsetInFrame: 0, length: 0 });
  }
}

/**
 * Every piece the snapshots use: their trees, content lists and data. A tree
 * already seen is not walked again, so shared directories cost nothing extra.
 * Throws if any tree or list cannot be read: a caller about to delete data
 * must never act on an incomplete picture.
 */
export async function collectReferences(snapshots: readonly Snapshot[], reader: PieceReader, into = new PieceSet()): Promise<PieceSet> {
  const walk = async (treeId: Buffer): Promise<void> => {
    if (into.has(treeId)) return;
    into.add(treeId);
    const tree = decodeTree(await reader.read(treeId), treeId.toString('hex'));
    for (const entry of tree.entries) {
      if (entry.subtree) await walk(Buffer.from(entry.subtree, 'hex'));
      for (const id of entry.content ?? []) into.add(Buffer.from(id, 'hex'));
      for (const listId of entry.contentLists ?? []) {
        const idBuffer = Buffer.from(listId, 'hex');
        if (into.has(idBuffer)) continue;
        into.add(idBuffer);
        const list = await reader.read(idBuffer);
        for (let at = 0; at + ID_BYTES <= list.length; at += ID_BYTES) into.add(Buffer.from(list.subarray(at, at + ID_BYTES)));
      }
      // Page files: the hash lists, the extent lists and every piece an extent names (a list already
      // counted was walked through an earlier entry sharing it).
      for (const listId of entry.pageHashes ?? []) into.add(Buffer.from(listId, 'hex'));
      for (const listId of entry.extentLists ?? []) {
        const idBuffer = Buffer.from(listId, 'hex');
        if (into.has(idBuffer)) continue;
        into.add(idBuffer);
        for (const extent of decodeExtents(await reader.read(idBuffer), listId)) into.add(Buffer.from(extent.id));
      }
    }
  };
  for (const snapshot of snapshots) await walk(Buffer.from(snapshot.tree, 'hex'));
  return into;
}
