import { isUtf8 } from 'node:buffer';
import { CairnError } from '../core/errors.ts';
import { PieceReader } from '../core/piece-reader.ts';
import type { Repository } from '../core/repository.ts';
import { shortId, type Snapshot } from '../core/snapshot.ts';
import { TreeAncestors } from '../core/tree-walk.ts';
import { decodeTree, entryName, type TreeEntry } from '../core/tree.ts';
import { PathMatcher, relativeToRoots } from '../files/glob.ts';

/**
 * Browsing a snapshot without restoring it: the trees under `ls`, `find`, `diff` and `dump`.
 * Each starts from the small manifest root and reads only the tree pieces on
 * the way to what was asked (a path's ancestors, the directories a pattern can
 * match in, the subtrees whose ids differ), then only the data pieces of the
 * one file dumped. Nothing here writes to the repository.
 */

/**
 * One entry of a listing, with the path relative to the snapshot root ('/'-separated).
 * Names, paths and targets that are not valid UTF-8 are shown with U+FFFD for the
 * invalid bytes, so two of them can look alike: the `...Bytes` fields (base64 of
 * the exact bytes, present only then) tell them apart in JSON output.
 */
export interface ListedEntry {
  path: string;
  pathBytes?: string;
  name: string;
  nameBytes?: string;
  type: TreeEntry['type'];
  mode: number;
  uid: number;
  gid: number;
  size: number;
  /** Modification time, ISO-8601 to the millisecond; the nanoseconds as a decimal number if no date can hold them. */
  mtime: string;
  target?: string;
  targetBytes?: string;
}

/** The entry at `path` (its bytes: the names of its ancestors' entries and its own, '/'-separated). */
export function listed(path: Buffer, entry: TreeEntry): ListedEntry {
  return {
    ...pathFields(path),
    name: entry.name,
    ...(entry.nameBytes === undefined ? {} : { nameBytes: entry.nameBytes }),
    type: entry.type,
    mode: entry.mode,
    uid: entry.uid,
    gid: entry.gid,
    size: entry.type === 'file' ? (entry.size ?? 0) : 0,
    mtime: nsToIso(entry.mtimeNs),
    ...(entry.type === 'symlink'
      ? { target: entry.target ?? '', ...(entry.targetBytes === undefined ? {} : { targetBytes: entry.targetBytes }) }
      : {}),
  };
}

/** A path's display form, plus its bytes (base64) when they are not UTF-8. */
export function pathFields(path: Buffer): { path: string; pathBytes?: string } {
  return isUtf8(path) ? { path: path.toString('utf8') } : { path: path.toString('utf8'), pathBytes: path.toString('base64') };
}

/** The path of `entry` below the directory at `rel` (bytes). */
export function childPath(rel: Buffer, entry: Pick<TreeEntry, 'name' | 'nameBytes'>): Buffer {
  return rel.length === 0 ? entryName(entry) : Buffer.concat([rel, SLASH, entryName(entry)]);
}

const SLASH = Buffer.from('/');

/** A time in nanoseconds since the epoch as ISO-8601; a crafted one no Date can hold (beyond ±8.64e21 ns) stays the raw number. */
export function nsToIso(ns: string): string {
  const ms = Number(BigInt(ns) / 1_000_000n);
  return Math.abs(ms) <= MAX_DATE_MS ? new Date(ms).toISOString() : ns;
}

const MAX_DATE_MS = 8.64e15;

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
   * paths the snapshot was taken of), reading only the trees of its ancestors,
   * and its path as bytes. The root itself is a directory entry named "/".
   * A command line cannot carry bytes that are not UTF-8, so a name is matched
   * by its display form; a component two entries share (U+FFFD standing for
   * different bytes) is refused rather than resolved to either of them.
   */
  async lookup(snapshot: Snapshot, path: string): Promise<{ path: string; pathBytes: Buffer; entry: TreeEntry }> {
    const parts = snapshotPath(snapshot, path);
    let entry: TreeEntry = rootEntry(snapshot);
    const walked: string[] = [];
    let pathBytes: Buffer = Buffer.alloc(0);
    for (const part of parts) {
      if (entry.type !== 'dir' || !entry.subtree) {
        throw new CairnError('Cairn.NotFound', `${walked.join('/')} is not a directory in snapshot ${shortId(snapshot.id)}`, {
          hint: `list it with \`cairn ls ${shortId(snapshot.id)} ${walked.join('/')}\``,
        });
      }
      const matching = (await this.entries(entry.subtree)).filter((e) => e.name === part);
      const next = matching[0];
      if (!next) {
        const missing = [...walked, part].join('/');
        const given = path.replace(/\/+$/, '') === missing ? '' : ` (the path given: ${path})`;
        throw new CairnError('Cairn.NotFound', `no ${missing} in snapshot ${shortId(snapshot.id)}${given}`, {
          hint: `list what is there with \`cairn ls ${shortId(snapshot.id)} ${walked.join('/') || '/'}\``,
        });
      }
      if (matching.length > 1) {
        const shown = [...walked, part].join('/');
        const dir = walked.join('/') || '/';
        throw new CairnError(
          'Cairn.Usage',
          `${JSON.stringify(shown)} is ambiguous in snapshot ${shortId(snapshot.id)}: ${matching.length} entries share that display name (their bytes differ where they are not UTF-8: ${matching.map((e) => entryName(e).toString('hex')).join(', ')})`,
          {
            hint: `\`cairn ls --json ${shortId(snapshot.id)} ${dir}\` shows each name's bytes (nameBytes); \`cairn restore ${shortId(snapshot.id)} --include ${dir} --target DIR\` writes them all under their own names`,
          },
        );
      }
      walked.push(part);
      pathBytes = childPath(pathBytes, next);
      entry = next;
    }
    return { path: walked.join('/'), pathBytes, entry };
  }

  /**
   * The entries of a directory tree, depth first; with `recursive`, everything
   * below it, failing (Cairn.Damaged) on a loop of trees or an absurd depth.
   */
  async *walk(treeId: string, rel: Buffer | string, recursive: boolean, ancestors = TreeAncestors.none): AsyncGenerator<ListedEntry> {
    const relBytes = typeof rel === 'string' ? Buffer.from(rel, 'utf8') : rel;
    const here = ancestors.enter(treeId, relBytes.toString('utf8'));
    for (const entry of await this.entries(treeId)) {
      const path = childPath(relBytes, entry);
      yield listed(path, entry);
      if (recursive && entry.type === 'dir' && entry.subtree) yield* this.walk(entry.subtree, path, true, here);
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
  const rel = relativeToRoots(path, snapshot.paths) ?? path;
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
    yield listed(found.pathBytes, found.entry);
    return;
  }
  if (found.entry.subtree) yield* browser.walk(found.entry.subtree, found.pathBytes, recursive);
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
  if (new PathMatcher(patterns).empty)
    throw new CairnError('Cairn.Usage', 'find needs a pattern', { hint: 'e.g. `cairn find "*.conf"` or `cairn find "etc/**/hosts"`' });
  // An absolute pattern is taken relative to the paths each snapshot was taken of: one matcher per set of paths,
  // compiled once, and what a directory held is remembered per matcher.
  const matchers = new Map<string, { matcher: PathMatcher; seen: Map<string, ListedEntry[]> }>();
  const search = async (
    at: { matcher: PathMatcher; seen: Map<string, ListedEntry[]> },
    treeId: string,
    rel: Buffer,
    ancestors: TreeAncestors,
  ): Promise<ListedEntry[]> => {
    const key = `${rel.toString('base64')}\0${treeId}`;
    const known = at.seen.get(key);
    if (known) return known;
    const here = ancestors.enter(treeId, rel.toString('utf8'));
    const out: ListedEntry[] = [];
    for (const entry of await browser.entries(treeId)) {
      const pathBytes = childPath(rel, entry);
      const path = pathBytes.toString('utf8');
      if (at.matcher.matches(path)) out.push(listed(pathBytes, entry));
      if (entry.type === 'dir' && entry.subtree && at.matcher.mayMatchBelow(path))
        out.push(...(await search(at, entry.subtree, pathBytes, here)));
    }
    at.seen.set(key, out);
    return out;
  };
  for (const snapshot of snapshots) {
    const roots = JSON.stringify(snapshot.paths);
    let at = matchers.get(roots);
    if (!at) {
      at = { matcher: new PathMatcher(patterns, snapshot.paths), seen: new Map() };
      matchers.set(roots, at);
    }
    for (const entry of await search(at, snapshot.tree, Buffer.alloc(0), TreeAncestors.none)) yield { snapshot, entry };
  }
}
