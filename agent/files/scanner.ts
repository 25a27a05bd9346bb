import { lstatSync, readdirSync, type BigIntStats } from 'node:fs';
import { basename, resolve } from 'node:path';
import { setImmediate as nextTurn } from 'node:timers/promises';
import { PathMatcher } from './glob.ts';
import { WalkLimits, type WalkLimitOptions } from './walk-limits.ts';

export interface ScanTotals {
  files: number;
  bytes: number;
  done: boolean;
  /** Not counted but taken from the parent snapshot: shown only while the walk has not counted past it. */
  estimated?: boolean;
}

export interface ScanOptions extends WalkLimitOptions {
  signal?: AbortSignal | undefined;
}

/** Milliseconds of counting between two turns of the event loop (the backup's own work waits meanwhile). */
const SLICE_MS = 5;

/**
 * Counts files and bytes under the paths, beside the backup, so the progress
 * line can show a total and an ETA. Only lstat and readdir, and it leaves out
 * what the archiver leaves out (--exclude, --exclude-if-present, what lies
 * beyond a mount point under --one-file-system), so the total is the backup's.
 * Its errors are ignored (the backup reports its own).
 *
 * Synchronous calls in slices, yielding between them: the archiver reads small
 * files synchronously and turns the event loop rarely, and a scan that awaited
 * one lstat per turn would finish after the backup it is meant to measure.
 */
export async function scan(paths: string[], excludes: string[], totals: ScanTotals, options: ScanOptions = {}): Promise<void> {
  const matcher = new PathMatcher(
    excludes,
    paths.map((p) => resolve(p)),
  );
  const limits = new WalkLimits(options);
  // Depth first, names as bytes as the archiver reads them: a name that is not UTF-8 is counted too.
  // Paths as the snapshot holds them: one source is the root, several sit side by side under their names.
  const stack: Array<{ path: Buffer; rel: string; source: boolean; device: bigint | undefined }> = paths
    .map((p) => ({ path: Buffer.from(resolve(p)), rel: paths.length === 1 ? '' : basename(resolve(p)), source: true, device: undefined }))
    .reverse();
  let sliceEnd = performance.now() + SLICE_MS;
  while (stack.length > 0) {
    if (performance.now() > sliceEnd) {
      await nextTurn();
      sliceEnd = performance.now() + SLICE_MS;
    }
    if (options.signal?.aborted) return;
    const { path, rel, source, device } = stack.pop() as (typeof stack)[number];
    if (!source && matcher.matches(rel)) continue;
    const st = stat(path);
    if (!st) continue;
    if (st.isFile()) {
      totals.files++;
      totals.bytes += Number(st.size);
      continue;
    }
    if (!st.isDirectory()) continue;
    // A source itself is read whatever it holds; below it, the walk's limits apply as the archiver applies them.
    if (!source && (limits.markerIn(path, st) !== undefined || limits.isMountPoint(st, device))) continue;
    const names = list(path);
    const childDevice = limits.deviceOf(st);
    for (let i = names.length - 1; i >= 0; i--) {
      const name = names[i] as Buffer;
      const shown = name.toString('utf8');
      stack.push({
        path: path[path.length - 1] === SLASH[0] ? Buffer.concat([path, name]) : Buffer.concat([path, SLASH, name]),
        rel: rel === '' ? shown : `${rel}/${shown}`,
        source: false,
        device: childDevice,
      });
    }
  }
  totals.done = true;
}

function stat(path: Buffer): BigIntStats | undefined {
  try {
    return lstatSync(path, { bigint: true });
  } catch {
    return undefined;
  }
}

function list(path: Buffer): Buffer[] {
  try {
    return readdirSync(path, { encoding: 'buffer' });
  } catch {
    return [];
  }
}

const SLASH = Buffer.from('/');
