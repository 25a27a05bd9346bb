import type { Writable } from 'node:stream';
import { CairnError, DamagedError } from '../core/errors.ts';
import { PieceReader } from '../core/piece-reader.ts';
import type { Repository } from '../core/repository.ts';
import { shortId, type Snapshot } from '../core/snapshot.ts';
import { decodeTree, type TreeEntry } from '../core/tree.ts';
import { contentIds } from '../files/archiver.ts';
import { PathMatcher } from '../files/glob.ts';
import { groupKey, type GroupField } from './forget.ts';

/**
 * Browsing a snapshot without restoring it: `ls`, `find`, `diff`, `dump`.
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

// ---------------------------------------------------------------- ls

/** Lists `path`: a directory's entries (all below it with `recursive`), or the one entry a file or symlink is. */
export async function* ls(browser: SnapshotBrowser, snapshot: Snapshot, path: string, recursive: boolean): AsyncGenerator<ListedEntry> {
  const found = await browser.lookup(snapshot, path);
  if (found.entry.type !== 'dir') {
    yield listed(found.path, found.entry);
    return;
  }
  if (found.entry.subtree) yield* browser.walk(found.entry.subtree, found.path, recursive);
}

// ---------------------------------------------------------------- find

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

// ---------------------------------------------------------------- diff

export type DiffChange = 'added' | 'removed' | 'changed' | 'metadata';

export interface DiffItem {
  change: DiffChange;
  path: string;
  type: TreeEntry['type'];
  /** Size in the first snapshot (removed, changed, metadata). */
  sizeBefore?: number;
  /** Size in the second snapshot (added, changed, metadata). */
  sizeAfter?: number;
  /** For `metadata`: which of mode, owner, mtime changed; for `changed`: content or target. */
  fields?: string[];
}

export interface DiffSummary {
  added: { files: number; dirs: number; symlinks: number; bytes: number };
  removed: { files: number; dirs: number; symlinks: number; bytes: number };
  /** Content (or symlink target) changed. */
  changed: { entries: number; bytesBefore: number; bytesAfter: number };
  /** Same content, other mode, owner or mtime. */
  metadata: { entries: number };
}

export function emptyDiffSummary(): DiffSummary {
  return {
    added: { files: 0, dirs: 0, symlinks: 0, bytes: 0 },
    removed: { files: 0, dirs: 0, symlinks: 0, bytes: 0 },
    changed: { entries: 0, bytesBefore: 0, bytesAfter: 0 },
    metadata: { entries: 0 },
  };
}

export function countDiff(summary: DiffSummary, item: DiffItem): void {
  const kind = item.type === 'file' ? 'files' : item.type === 'dir' ? 'dirs' : 'symlinks';
  if (item.change === 'added') {
    summary.added[kind]++;
    summary.added.bytes += item.sizeAfter ?? 0;
  } else if (item.change === 'removed') {
    summary.removed[kind]++;
    summary.removed.bytes += item.sizeBefore ?? 0;
  } else if (item.change === 'changed') {
    summary.changed.entries++;
    summary.changed.bytesBefore += item.sizeBefore ?? 0;
    summary.changed.bytesAfter += item.sizeAfter ?? 0;
  } else {
    summary.metadata.entries++;
  }
}

/**
 * What changed from snapshot `a` to snapshot `b`, depth first in name order.
 * Subtrees with equal ids are equal and never read; so a diff of two backups
 * of a large, mostly unchanged tree reads only the directories on the way to
 * what changed. A changed type shows as removed + added. Directory mtimes
 * (they change with their contents) are not reported.
 */
export async function* diff(browser: SnapshotBrowser, a: Snapshot, b: Snapshot): AsyncGenerator<DiffItem> {
  yield* diffTrees(browser, a.tree, b.tree, '');
}

async function* diffTrees(browser: SnapshotBrowser, aTree: string, bTree: string, rel: string): AsyncGenerator<DiffItem> {
  if (aTree === bTree) return;
  const [aEntries, bEntries] = await Promise.all([browser.entries(aTree), browser.entries(bTree)]);
  const before = new Map(aEntries.map((e) => [e.name, e]));
  const after = new Map(bEntries.map((e) => [e.name, e]));
  const names = [...new Set([...before.keys(), ...after.keys()])].sort((x, y) => Buffer.compare(Buffer.from(x), Buffer.from(y)));
  for (const name of names) {
    const path = rel === '' ? name : `${rel}/${name}`;
    const old = before.get(name);
    const now = after.get(name);
    if (old && now && old.type === now.type) {
      if (old.type === 'dir') {
        const fields = metaFields(old, now, false);
        if (fields.length > 0) yield { change: 'metadata', path, type: 'dir', sizeBefore: 0, sizeAfter: 0, fields };
        if (old.subtree && now.subtree) yield* diffTrees(browser, old.subtree, now.subtree, path);
        else if (now.subtree) yield* everything(browser, now.subtree, path, 'added');
        else if (old.subtree) yield* everything(browser, old.subtree, path, 'removed');
        continue;
      }
      const sizes = { sizeBefore: old.size ?? 0, sizeAfter: now.size ?? 0 };
      if (old.type === 'symlink' ? old.target !== now.target : !sameContent(old, now)) {
        yield { change: 'changed', path, type: old.type, ...sizes, fields: [old.type === 'symlink' ? 'target' : 'content'] };
        continue;
      }
      const fields = metaFields(old, now, true);
      if (fields.length > 0) yield { change: 'metadata', path, type: old.type, ...sizes, fields };
      continue;
    }
    if (old) {
      yield { change: 'removed', path, type: old.type, sizeBefore: old.type === 'file' ? (old.size ?? 0) : 0 };
      if (old.type === 'dir' && old.subtree) yield* everything(browser, old.subtree, path, 'removed');
    }
    if (now) {
      yield { change: 'added', path, type: now.type, sizeAfter: now.type === 'file' ? (now.size ?? 0) : 0 };
      if (now.type === 'dir' && now.subtree) yield* everything(browser, now.subtree, path, 'added');
    }
  }
}

async function* everything(browser: SnapshotBrowser, treeId: string, rel: string, change: 'added' | 'removed'): AsyncGenerator<DiffItem> {
  for await (const e of browser.walk(treeId, rel, true)) {
    yield change === 'added'
      ? { change, path: e.path, type: e.type, sizeAfter: e.size }
      : { change, path: e.path, type: e.type, sizeBefore: e.size };
  }
}

function sameContent(a: TreeEntry, b: TreeEntry): boolean {
  const same = (x: string[] | undefined, y: string[] | undefined): boolean =>
    (x ?? []).length === (y ?? []).length && (x ?? []).every((id, i) => id === (y ?? [])[i]);
  return (a.size ?? 0) === (b.size ?? 0) && same(a.content, b.content) && same(a.contentLists, b.contentLists);
}

function metaFields(a: TreeEntry, b: TreeEntry, withMtime: boolean): string[] {
  const fields: string[] = [];
  if (a.mode !== b.mode) fields.push('mode');
  if (a.uid !== b.uid || a.gid !== b.gid) fields.push('owner');
  if (withMtime && a.mtimeNs !== b.mtimeNs) fields.push('mtime');
  return fields;
}

// ---------------------------------------------------------------- dump

/** Pieces fetched ahead of the writer: a few frames, whatever the file size. */
const DUMP_READ_AHEAD = 4;

/**
 * Writes one file's bytes to `out` in order, reading only that file's pieces
 * (and its content lists), a few pieces ahead, and waiting for `out` to drain
 * whenever it says so: memory stays bounded however slow the reader of `out`.
 */
export async function dump(
  browser: SnapshotBrowser,
  snapshot: Snapshot,
  path: string,
  out: Writable,
  signal?: AbortSignal,
): Promise<{ path: string; bytes: number }> {
  const { path: found, entry } = await browser.lookup(snapshot, path);
  if (entry.type === 'dir') {
    throw new CairnError('Cairn.Usage', `${found || '/'} is a directory in snapshot ${shortId(snapshot.id)}; dump writes one file`, {
      hint: `list it with \`cairn ls ${shortId(snapshot.id)} ${found || '/'}\`, or restore it with \`cairn restore ${shortId(snapshot.id)} --include ${found || '/'} --target DIR\``,
    });
  }
  if (entry.type === 'symlink') {
    throw new CairnError(
      'Cairn.Usage',
      `${found} is a symlink to ${JSON.stringify(entry.target ?? '')} in snapshot ${shortId(snapshot.id)}; dump does not follow links`,
      { hint: 'dump the file it points to' },
    );
  }
  let failure: Error | undefined;
  const onError = (error: Error): void => {
    failure ??= error;
  };
  out.on('error', onError);
  const ahead: Array<Promise<Buffer>> = [];
  let bytes = 0;
  const writeNext = async (): Promise<void> => {
    const data = await (ahead.shift() as Promise<Buffer>);
    signal?.throwIfAborted();
    if (failure) throw failure;
    bytes += data.length;
    if (!out.write(data)) await drained(out);
  };
  try {
    for await (const id of contentIds(entry, browser.reader)) {
      const data = browser.reader.read(id);
      data.catch(() => undefined);
      ahead.push(data);
      if (ahead.length >= DUMP_READ_AHEAD) await writeNext();
    }
    while (ahead.length > 0) await writeNext();
  } finally {
    out.off('error', onError);
    for (const pending of ahead) pending.catch(() => undefined);
  }
  if (failure) throw failure;
  if (entry.size !== undefined && entry.size !== bytes)
    throw new DamagedError(`${found}: read ${bytes} bytes, the snapshot records ${entry.size}`);
  return { path: found, bytes };
}

function drained(out: Writable): Promise<void> {
  return new Promise((resolve, reject) => {
    const finish = (error?: Error): void => {
      out.off('drain', onDrain);
      out.off('error', onError);
      out.off('close', onClose);
      if (error) reject(error);
      else resolve();
    };
    const onDrain = (): void => finish();
    const onError = (error: Error): void => finish(error);
    const onClose = (): void => finish(new CairnError('Cairn.Failure', 'the output was closed before the whole file was written'));
    out.on('drain', onDrain);
    out.on('error', onError);
    out.on('close', onClose);
  });
}

// ---------------------------------------------------------------- snapshot selection

export interface SnapshotFilter {
  /** Any of these hosts (empty: any host). */
  hosts?: string[] | undefined;
  /** Any of these tag sets; each "a,b" needs both a and b (restic's rule). */
  tags?: string[] | undefined;
  /** Any of these plans. */
  plans?: string[] | undefined;
}

export function filterSnapshots(snapshots: Snapshot[], filter: SnapshotFilter): Snapshot[] {
  const hosts = filter.hosts ?? [];
  const tagSets = (filter.tags ?? []).map((t) =>
    t
      .split(',')
      .map((x) => x.trim())
      .filter(Boolean),
  );
  const plans = filter.plans ?? [];
  return snapshots.filter(
    (s) =>
      (hosts.length === 0 || hosts.includes(s.host)) &&
      (plans.length === 0 || (s.plan !== undefined && plans.includes(s.plan))) &&
      (tagSets.length === 0 || tagSets.some((set) => set.every((t) => s.tags.includes(t)))),
  );
}

export interface SnapshotGroup {
  group: Record<string, unknown>;
  snapshots: Snapshot[];
}

/** Snapshots grouped by host, paths, plan and/or tags (tags as a sorted set), groups in order of their oldest snapshot. */
export function groupSnapshots(snapshots: Snapshot[], fields: GroupField[]): SnapshotGroup[] {
  const groups = new Map<string, SnapshotGroup>();
  for (const s of snapshots) {
    const group = groupKey(s, fields);
    const key = JSON.stringify(group);
    const found = groups.get(key) ?? { group, snapshots: [] };
    found.snapshots.push(s);
    groups.set(key, found);
  }
  return [...groups.values()];
}

export function parseGroupBy(text: string): GroupField[] {
  const fields = text
    .split(',')
    .map((f) => f.trim())
    .filter(Boolean);
  for (const f of fields)
    if (!['host', 'paths', 'plan', 'tags'].includes(f))
      throw new CairnError('Cairn.Usage', `cannot group by ${JSON.stringify(f)}`, { hint: 'use host, paths, plan and/or tags' });
  return fields as GroupField[];
}
