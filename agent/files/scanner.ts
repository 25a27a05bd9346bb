import { lstat, readdir } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { PathMatcher } from './glob.ts';

export interface ScanTotals {
  files: number;
  bytes: number;
  done: boolean;
}

/**
 * Counts files and bytes under the paths, beside the backup, so the progress
 * line can show a total and an ETA. Only lstat and readdir: it never slows the
 * backup by much, and its errors are ignored (the backup reports its own).
 */
export async function scan(paths: string[], excludes: string[], totals: ScanTotals, signal?: AbortSignal): Promise<void> {
  const matcher = new PathMatcher(excludes);
  const visit = async (path: string, rel: string): Promise<void> => {
    if (signal?.aborted) return;
    if (rel !== '' && matcher.matches(rel)) return;
    const st = await lstat(path).catch(() => undefined);
    if (!st) return;
    if (st.isDirectory()) {
      const names = await readdir(path).catch(() => [] as string[]);
      for (const name of names) await visit(join(path, name), rel === '' ? name : `${rel}/${name}`);
    } else if (st.isFile()) {
      totals.files++;
      totals.bytes += st.size;
    }
  };
  for (const path of paths) await visit(resolve(path), '');
  totals.done = true;
}
