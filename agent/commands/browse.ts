import type { Writable } from 'node:stream';
import type { Repository } from '../core/repository.ts';
import type { Snapshot } from '../core/snapshot.ts';
import { dump, type DumpResult } from './file-dump.ts';
import { underLock, operationContext, type OperationOptions } from './operation.ts';
import { SnapshotBrowser, find, ls, type ListedEntry } from './snapshot-browser.ts';
import { latestAmong, selectSnapshot, selectSnapshots, type SnapshotFilter } from './snapshot-selector.ts';
import { countDiff, diff, emptyDiffSummary, type DiffItem, type DiffSummary } from './tree-diff.ts';

/**
 * The browsing commands: `ls`, `find`, `diff`, `dump`. They only read, under
 * the shared lock so that a prune cannot take the data from under them, and
 * hand each entry to the caller as it is found (a listing of a large tree is
 * never held whole).
 */

export interface BrowseOptions extends OperationOptions {
  /** Tree and index reads at once. */
  concurrency: number;
  /** What `latest` is narrowed to (--host, --path, --tag); an id is taken as it is. */
  latestFilter?: SnapshotFilter | undefined;
}

async function browsing<T>(
  repo: Repository,
  options: BrowseOptions,
  operation: string,
  fn: (browser: () => Promise<SnapshotBrowser>) => Promise<T>,
): Promise<T> {
  return underLock(operationContext(repo, options), operation, false, () => fn(() => SnapshotBrowser.open(repo, options.concurrency * 2)));
}

/** `ls`: the entries of a directory of a snapshot (all below it with `recursive`), or the one entry a file is. */
export async function listSnapshotPath(
  repo: Repository,
  options: BrowseOptions & { snapshot: string; path: string; recursive: boolean },
  onEntry: (snapshot: Snapshot, entry: ListedEntry) => void,
): Promise<{ snapshot: Snapshot; entries: number; bytes: number }> {
  return browsing(repo, options, 'ls', async (open) => {
    const snapshot = await selectSnapshot(repo, options.snapshot, latestAmong(options.latestFilter));
    const browser = await open();
    let entries = 0;
    let bytes = 0;
    for await (const entry of ls(browser, snapshot, options.path, options.recursive)) {
      entries++;
      bytes += entry.size;
      onEntry(snapshot, entry);
    }
    return { snapshot, entries, bytes };
  });
}

/** `find`: paths matching the patterns in the selected snapshots (all of them by default), oldest snapshot first. */
export async function findInSnapshots(
  repo: Repository,
  options: BrowseOptions & SnapshotFilter & { snapshots: string[]; patterns: string[] },
  onMatch: (snapshot: Snapshot, entry: ListedEntry) => void,
): Promise<{ searched: number; snapshots: number; matches: number }> {
  return browsing(repo, options, 'find', async (open) => {
    const snapshots = await selectSnapshots(repo, { ...options, refs: options.snapshots }, (u) =>
      options.progress.warn(`snapshot ${u.id} cannot be read: ${u.error}`, { snapshot: u.id }),
    );
    const browser = await open();
    let matches = 0;
    const holding = new Set<string>();
    for await (const { snapshot, entry } of find(browser, snapshots, options.patterns)) {
      matches++;
      onMatch(snapshot, entry);
      holding.add(snapshot.id);
    }
    return { searched: snapshots.length, snapshots: holding.size, matches };
  });
}

/** `diff`: what changed from snapshot `a` to snapshot `b`, item by item, and the totals. */
export async function diffSnapshots(
  repo: Repository,
  options: BrowseOptions & { a: string; b: string },
  onItem: (item: DiffItem) => void,
): Promise<{ a: Snapshot; b: Snapshot; summary: DiffSummary }> {
  return browsing(repo, options, 'diff', async (open) => {
    const a = await selectSnapshot(repo, options.a, latestAmong(options.latestFilter));
    const b = await selectSnapshot(repo, options.b, latestAmong(options.latestFilter));
    const browser = await open();
    const summary = emptyDiffSummary();
    for await (const item of diff(browser, a, b)) {
      countDiff(summary, item);
      onItem(item);
    }
    return { a, b, summary };
  });
}

/** `dump`: one file of a snapshot written to `out` byte for byte, or a directory as a tar archive. */
export async function dumpSnapshotFile(
  repo: Repository,
  options: BrowseOptions & { snapshot: string; path: string; out: Writable; signal?: AbortSignal | undefined },
): Promise<DumpResult> {
  return browsing(repo, options, 'dump', async (open) => {
    const snapshot = await selectSnapshot(repo, options.snapshot, latestAmong(options.latestFilter));
    return dump(await open(), snapshot, options.path, options.out, options.signal);
  });
}
