import { randomBytes, randomInt } from 'node:crypto';
import { PieceType, type PieceTypeId } from '../../../agent/core/pack.ts';
import { PieceReader } from '../../../agent/core/piece-reader.ts';
import type { Repository } from '../../../agent/core/repository.ts';
import type { Snapshot } from '../../../agent/core/snapshot.ts';
import { decodeTree, encodeTree, type TreeEntry } from '../../../agent/core/tree.ts';
import { PackWriter } from '../../../agent/pipeline/pack-writer.ts';

/** Shared by the page-file-*.test.ts files: PostgreSQL-style files and snapshots crafted with the library. */

export const PAGE = 8192;

/**
 * One 8 KiB page a PostgreSQL relation file could hold (bufpage.h): pd_lower 24 (u16 LE at 12),
 * pd_upper (at 14), pd_special 8192 (at 16), pd_pagesize_version 0x2004 (at 18), the rest random.
 */
export function postgresPage(): Buffer {
  const page = randomBytes(PAGE);
  page.writeUInt16LE(24, 12);
  page.writeUInt16LE(24 + randomInt(PAGE - 24), 14);
  page.writeUInt16LE(PAGE, 16);
  page.writeUInt16LE(0x2004, 18);
  return page;
}

export function postgresFile(pages: number): Buffer {
  return Buffer.concat(Array.from({ length: pages }, () => postgresPage()));
}

/** A copy of `file` with the pages numbered in `pages` replaced by new ones. */
export function withChangedPages(file: Buffer, pages: readonly number[]): Buffer {
  const out = Buffer.from(file);
  for (const n of pages) postgresPage().copy(out, n * PAGE);
  return out;
}

/** The root tree entries of a snapshot. */
export async function rootEntries(repo: Repository, snapshot: Snapshot): Promise<TreeEntry[]> {
  const reader = new PieceReader(repo, await repo.loadIndex());
  return decodeTree(await reader.read(Buffer.from(snapshot.tree, 'hex')), snapshot.tree).entries;
}

/** Reads a piece of the repository. */
export async function readPiece(repo: Repository, id: string): Promise<Buffer> {
  return new PieceReader(repo, await repo.loadIndex()).read(Buffer.from(id, 'hex'));
}

/**
 * Commits a copy of `snapshot` (new id) whose root entry `name` is what `change` makes of it,
 * as a host holding the key could: `store` writes a piece (a list, say) and gives its id.
 */
export async function craftVariant(
  repo: Repository,
  snapshot: Snapshot,
  name: string,
  change: (entry: TreeEntry, store: (type: PieceTypeId, bytes: Buffer) => Promise<string>) => Promise<TreeEntry>,
): Promise<string> {
  const index = await repo.loadIndex();
  const writer = new PackWriter(repo, index, { compression: { codec: 'none' }, concurrency: 1 });
  const store = async (type: PieceTypeId, bytes: Buffer): Promise<string> => {
    const id = repo.pieceId(bytes);
    await writer.add(id, type, bytes);
    return id.toString('hex');
  };
  const entries: TreeEntry[] = [];
  for (const entry of await rootEntries(repo, snapshot)) entries.push(entry.name === name ? await change(entry, store) : entry);
  const tree = await store(PieceType.tree, encodeTree({ version: 2, entries }));
  await writer.flush();
  const id = randomBytes(32).toString('hex');
  await repo.saveSnapshot({ ...snapshot, id, tree });
  return id;
}
