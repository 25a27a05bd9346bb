import { Readable } from 'node:stream';
import { CairnError, DamagedError } from '../core/errors.ts';
import type { PieceReader } from '../core/piece-reader.ts';
import type { Snapshot } from '../core/snapshot.ts';
import { decodeTree, type TreeEntry } from '../core/tree.ts';
import { contentBytes } from '../core/file-content.ts';
import type { RestoreToOptions, SnapshotSource } from './engine.ts';

/** A snapshot's files as an engine sees them at restore time. */
export class RepositorySource implements SnapshotSource {
  readonly metadata: Record<string, unknown>;
  private readonly snapshot: Snapshot;
  private readonly reader: PieceReader;
  private readonly restoreDirectory: (directory: string, options: RestoreToOptions) => Promise<void>;
  private files: Map<string, TreeEntry> | undefined;

  constructor(snapshot: Snapshot, reader: PieceReader, restoreDirectory: (directory: string, options: RestoreToOptions) => Promise<void>) {
    this.snapshot = snapshot;
    this.metadata = snapshot.engineMetadata;
    this.reader = reader;
    this.restoreDirectory = restoreDirectory;
  }

  async list(): Promise<Array<{ path: string; size: number }>> {
    return [...(await this.index()).entries()].map(([path, entry]) => ({ path, size: entry.size ?? 0 }));
  }

  open(path: string): Readable {
    const reader = this.reader;
    const files = this.index();
    async function* pieces(): AsyncGenerator<Buffer> {
      const entry = (await files).get(path);
      if (!entry) throw new CairnError('Cairn.NotFound', `the snapshot has no file ${path}`);
      // The file's bytes, whatever its layout (a page file is extents of pieces, not whole pieces).
      yield* contentBytes(entry, reader);
    }
    return Readable.from(pieces(), { objectMode: false });
  }

  restoreTo(directory: string, options: RestoreToOptions = {}): Promise<void> {
    return this.restoreDirectory(directory, options);
  }

  private async index(): Promise<Map<string, TreeEntry>> {
    if (this.files) return this.files;
    const files = new Map<string, TreeEntry>();
    // `ancestors`: a crafted pack can claim a tree id for bytes that name it; such a loop would be walked forever.
    const walk = async (treeId: string, prefix: string, ancestors: Set<string>): Promise<void> => {
      if (ancestors.has(treeId)) throw new DamagedError(`tree ${treeId} holds itself (a loop of directories) at ${prefix}`);
      ancestors.add(treeId);
      for (const entry of decodeTree(await this.reader.read(Buffer.from(treeId, 'hex')), treeId).entries) {
        const path = prefix ? `${prefix}/${entry.name}` : entry.name;
        if (entry.type === 'dir' && entry.subtree) await walk(entry.subtree, path, ancestors);
        else if (entry.type === 'file') files.set(path, entry);
      }
      ancestors.delete(treeId);
    };
    await walk(this.snapshot.tree, '', new Set());
    this.files = files;
    return files;
  }
}
