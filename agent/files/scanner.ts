import { lstat, readdir } from 'node:fs/promises';
import { resolve } from 'node:path';
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
  const matcher = new PathMatcher(
    excludes,
    paths.map((p) => resolve(p)),
  );
  // Names as bytes, as the archiver reads them: a name that is not UTF-8 is counted too.
  const visit = async (path: Buffer, rel: string): Promise<void> => {
    if (signal?.aborted) return;
    if (rel !== '' && matcher.matches(rel)) return;
    const st = await lstat(path).catch(() => undefined);
    if (!st) return;
    if (st.isDirectory()) {
      const names = await readdir(path, { encoding: 'buffer' }).catch(() => [] as Buffer[]);
      for (const name of names) {
        const shown = name.toString('utf8');
        await visit(
          path[path.length - 1] === SLASH[0] ? Buffer.concat([path, name]) : Buffer.concat([path, SLASH, name]),
          rel === '' ? shown : `${rel}/${shown}`,
        );
      }
    } else if (st.isFile()) {
      totals.files++;
      totals.bytes += st.size;
    }
  };
  for (const path of paths) await visit(Buffer.from(resolve(path)), '');
  totals.done = true;
}

const SLASH = Buffer.from('/');
