import type { Readable } from 'node:stream';
import { CairnError } from '../core/errors.ts';
import { compareNames, nameProblem, type TreeEntry } from '../core/tree.ts';
import type { TreeStore } from '../pipeline/snapshot-writer.ts';
import type { FileMeta, SnapshotSink } from './engine.ts';

interface Dir {
  entries: Map<string, TreeEntry>;
  meta: FileMeta;
}

/**
 * Builds a snapshot tree from files an engine hands over by path, in any order
 * (a tar or xbstream stream, a set of dumps). Directories are kept as entry maps
 * and stored bottom-up at the end; file contents go through the snapshot
 * writer (the same one the files engine uses) as they arrive.
 */
export class TreeSink implements SnapshotSink {
  private readonly writer: TreeStore;
  private readonly dirs = new Map<string, Dir>([['', { entries: new Map(), meta: {} }]]);
  readonly counts = { files: 0, bytes: 0 };

  constructor(writer: TreeStore) {
    this.writer = writer;
  }

  async addStream(path: string, data: Readable | AsyncIterable<Buffer>, meta: FileMeta = {}): Promise<void> {
    const { parent, name } = this.place(path);
    const content = await this.writer.storeStream(data, path);
    this.counts.files++;
    this.counts.bytes += content.size ?? 0;
    parent.entries.set(name, { ...base(name, meta, 0o640), type: 'file', ...content });
  }

  async addDirectory(path: string, meta: FileMeta = {}): Promise<void> {
    const dir = this.dir(normalize(path));
    dir.meta = meta;
  }

  async addSymlink(path: string, target: string, meta: FileMeta = {}): Promise<void> {
    const { parent, name } = this.place(path);
    parent.entries.set(name, { ...base(name, meta, 0o777), type: 'symlink', target });
  }

  /** Stores every directory, deepest first; returns the root tree id. */
  async finish(): Promise<string> {
    const paths = [...this.dirs.keys()].sort((a, b) => depth(b) - depth(a) || compareNames(a, b));
    let root = '';
    for (const path of paths) {
      const dir = this.dirs.get(path) as Dir;
      const entries = [...dir.entries.values()].sort((a, b) => compareNames(a.name, b.name));
      const id = await this.writer.storeTree({ version: 1, entries });
      if (path === '') {
        root = id;
        continue;
      }
      const slash = path.lastIndexOf('/');
      const parent = this.dirs.get(slash < 0 ? '' : path.slice(0, slash)) as Dir;
      const name = path.slice(slash + 1);
      parent.entries.set(name, { ...base(name, dir.meta, 0o750), type: 'dir', subtree: id });
    }
    return root;
  }

  /** Where a file or symlink goes; a directory already at that path is an error (it would be lost silently at finish). */
  private place(path: string): { parent: Dir; name: string } {
    const clean = normalize(path);
    if (this.dirs.has(clean)) throw conflict(clean);
    const slash = clean.lastIndexOf('/');
    const name = clean.slice(slash + 1);
    return { parent: this.dir(slash < 0 ? '' : clean.slice(0, slash)), name };
  }

  private dir(path: string): Dir {
    let dir = this.dirs.get(path);
    if (!dir) {
      if (path !== '') {
        const slash = path.lastIndexOf('/');
        const parent = this.dir(slash < 0 ? '' : path.slice(0, slash));
        if (parent.entries.has(path.slice(slash + 1))) throw conflict(path);
      }
      dir = { entries: new Map(), meta: {} };
      this.dirs.set(path, dir);
    }
    return dir;
  }
}

function normalize(path: string): string {
  const parts = path.split('/').filter((p) => p !== '' && p !== '.');
  if (parts.some((p) => nameProblem(Buffer.from(p)) !== undefined))
    throw new CairnError('Cairn.Failure', `the engine produced an unsafe path ${JSON.stringify(path)}`);
  return parts.join('/');
}

function conflict(path: string): CairnError {
  return new CairnError('Cairn.Failure', `the engine produced both a directory and a file or symlink at ${JSON.stringify(path)}`, {
    hint: 'the source stream is inconsistent; nothing was committed',
  });
}

function depth(path: string): number {
  return path === '' ? -1 : path.split('/').length;
}

function base(name: string, meta: FileMeta, mode: number): Omit<TreeEntry, 'type'> {
  const mtime = BigInt(Math.round(meta.mtimeMs ?? Date.now())) * 1_000_000n;
  return {
    name,
    mode: meta.mode ?? mode,
    uid: meta.uid ?? process.getuid?.() ?? 0,
    gid: meta.gid ?? process.getgid?.() ?? 0,
    mtimeNs: mtime.toString(),
  };
}
