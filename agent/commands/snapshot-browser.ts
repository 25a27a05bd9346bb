import { CairnError } from '../core/errors.ts';
import { PieceReader } from '../core/piece-reader.ts';
import type { Repository } from '../core/repository.ts';
import { shortId, type Snapshot } from '../core/snapshot.ts';
import { decodeTree, type TreeEntry } from '../core/tree.ts';
import { PathMatcher } from '../files/glob.ts';

/**
 * Browsing a snapshot without restoring it: the trees under `ls`, `find`, `diff` and `dump`.
 * Each starts from the small manifest root and reads only the tree pieces on
 * the way to what was asked (a path's ancestors, the directories a pattern can
 * match in, the subtrees whose ids differ), then only the data pieces of the
 * one file dumped. Nothing here writes to the repository.
 */

/** One entry of a listing, with the path relative to the snapshot root ('/'-separated). */
export interface ListedEntry {
  path: string;
  name: string;
  type: TreeEntry['type'];
  mode: number;
  uid: number;
  gid: number;
  size: number;
  /** Modification time, ISO-8601 to the millisecond. */
  mtime: string;
  target?: string;
}

export function listed(path: string, entry: TreeEntry): ListedEntry {
  return {
    path,
    name: entry.name,
    type: entry.type,
    mode: entry.mode,
    uid: entry.uid,
    gid: entry.gid,
    size: entry.type === 'file' ? (entry.size ?? 0) : 0,
    mtime: nsToIso(entry.mtimeNs),
    ...(entry.type === 'symlink' ? { target: entry.target ?? '' } : {}),
  };
}

export function nsToIso(ns: string): string {
  return new Date(Number(BigInt(ns) / 1_000_000n)).toISOString();
}

/** A snapshot's trees and pieces, read on demand. */
export class SnapshotBrowser {
  readonly repo: Repository;
  readonly reader: PieceReader;

  constructor(repo: Repository, reader: PieceReader) {
    this.repo = repo;
    this.reader = reader;
  }

  /** Loads the index (where each piece lives); no tree or data is read yet. */
  static async open(repo: Repository, concurrency = 8): Promise<SnapshotBrowser> {
    const index = await repo.loadIndex(concurrency);
    return new SnapshotBrowser(repo, new PieceReader(repo, index, { cacheFrames: 8 }));
  }

  async entries(treeId: string): Promise<TreeEntry[]> {
    return decodeTree(await this.reader.read(Buffer.from(treeId, 'hex')), treeId).entries;
  }

  /**
   * The entry at `path` (relative to the snapshot root, or one of the absolute
   * paths the snapshot was taken of), reading only the trees of its ancestors.
   * The root itself is a directory entry named "/".
   */
  async lookup(snapshot: Snapshot, path: string): Promise<{ path: string; entry: TreeEntry }> {
    const parts = snapshotPath(snapshot, path);
    let entry: TreeEntry = rootEntry(snapshot);
    const walked: string[] = [];
    for (const part of parts) {
      if (entry.type !== 'dir' || !entry.subtree) {
        throw new CairnError('Cairn.NotFound', `${walked.join('/')} is not a directory in snapshot ${shortId(snapshot.id)}`, {
          hint: `list it with \`cairn ls ${shortId(snapshot.id)} ${walked.join('/')}\``,
        });
      }
      const next = (await this.entries(entry.subtree)).find((e) => e.name === part);
      if (!next) {
        throw new CairnError('Cairn.NotFound', `no ${[...walked, part].join('/')} in snapshot ${shortId(snapshot.id)}`, {
          hint: `list what is there with \`cairn ls ${shortId(snapshot.id)} ${walked.join('/') || '/'}\``,
        });
      }
      walked.push(part);
      entry = next;
    }
    return { path: walked.join('/'), entry };
  }

  /** The entries of a directory tree, depth first; with `recursive`, everything below it. */
  async *walk(treeId: string, rel: string, recursive: boolean): AsyncGenerator<ListedEntry> {
    for (const entry of await this.entries(treeId)) {
      const path = rel === '' ? entry.name : `${rel}/${entry.name}`;
      yield listed(path, entry);
      if (recursive && entry.type === 'dir' && entry.subtree) yield* this.walk(entry.subtree, path, true);
    }
  }
}

function rootEntry(snapshot: Snapshot): TreeEntry {
  return {
    name: '/',
    type: 'dir',
    mode: 0o755,
    uid: 0,
    gid: 0,
    mtimeNs: String(BigInt(Date.parse(snapshot.time)) * 1_000_000n),
    subtree: snapshot.tree,
  };
}

/**
 * Splits a path into components relative to the snapshot root. A path under
 * one of the snapshot's own paths (`/srv/data/x` of a backup of /srv/data) is
 * taken relative to it, so what `cairn snapshots` shows can be pasted.
 */
export function snapshotPath(snapshot: Snapshot, path: string): string[] {
  let rel = path;
  for (const p of snapshot.paths) {
    const base = p.replace(/\/+$/, '');
    if (base !== '' && (path === base || path.startsWith(`${base}/`))) {
      const rest = path.slice(base.length);
      rel = snapshot.paths.length === 1 ? rest : `${base.slice(base.lastIndexOf('/') + 1)}${rest}`;
      break;
    }
  }
  const parts = rel.split('/').filter((p) => p !== '' && p !== '.');
  if (parts.includes('..'))
    throw new CairnError('Cairn.Usage', `invalid path ${JSON.stringify(path)}: ".." is not allowed`, {
      hint: 'give a path inside the snapshot, e.g. dir/file',
    });
  return parts;
}

/** Lists `path`: a directory's entries (all below it with `recursive`), or the one entry a file or symlink is. */
export async function* ls(browser: SnapshotBrowser, snapshot: Snapshot, path: string, recursive: boolean): AsyncGenerator<ListedEntry> {
  const found = await browser.lookup(snapshot, path);
  if (found.entry.type !== 'dir') {
    yield listed(found.path, found.entry);
    return;
  }
  if (found.entry.subtree) yield* browser.walk(found.entry.subtree, found.path, recursive);
}

export interface FindMatch {
  snapshot: Snapshot;
  entry: ListedEntry;
}

/**
 * Paths matching the patterns in each snapshot, oldest snapshot first. A
 * directory whose tree a pattern cannot reach is not read, and a directory
 * seen with the same tree at the same path in an earlier snapshot is not read
 * again (unchanged directories are the common case between backups).
 */
export async function* find(browser: SnapshotBrowser, snapshots: Snapshot[], patterns: string[]): AsyncGenerator<FindMatch> {
  const matcher = new PathMatcher(patterns);
  if (matcher.empty)
    throw new CairnError('Cairn.Usage', 'find needs a pattern', { hint: 'e.g. `cairn find "*.conf"` or `cairn find "etc/**/hosts"`' });
  const seen = new Map<string, ListedEntry[]>();
  const search = async (treeId: string, rel: string): Promise<ListedEntry[]> => {
    const key = `${rel}\0${treeId}`;
    const known = seen.get(key);
    if (known) return known;
    const out: ListedEntry[] = [];
    for (const entry of await browser.entries(treeId)) {
      const path = rel === '' ? entry.name : `${rel}/${entry.name}`;
      if (matcher.matches(path)) out.push(listed(path, entry));
      if (entry.type === 'dir' && entry.subtree && matcher.mayMatchBelow(path)) out.push(...(await search(entry.subtree, path)));
    }
    seen.set(key, out);
    return out;
  };
  for (const snapshot of snapshots) {
    for (const entry of await search(snapshot.tree, '')) yield { snapshot, entry };
  }
}
