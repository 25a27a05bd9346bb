import type { Dirent } from 'node:fs';
import { readdir, readlink, realpath } from 'node:fs/promises';
import { dirname, isAbsolute, join, relative, resolve, sep } from 'node:path';
import { CairnError } from '../core/errors.ts';

/**
 * A restored data directory's symbolic links, confined to the drill's scratch
 * directory. The restore writes a snapshot's symlinks as they are (it never
 * follows one while writing), but a server started on the data directory does
 * follow them: a crafted `pg_wal` or `pg_tblspc/<oid>` link (or any relation
 * file that is a link) would have the private server write, and crash-recover,
 * into production's files. So before a server is started on restored data,
 * every link is resolved (realpath, or, for a dangling one, its nearest
 * existing ancestor: a server would create the missing part) and one that
 * leads outside the scratch directory refuses the drill, naming it.
 */

/** Where `target` (a link's text, read at `link`) leads: the real path of its nearest existing ancestor, plus the missing rest. */
async function destination(link: string, target: string): Promise<string> {
  let path = isAbsolute(target) ? target : resolve(dirname(link), target);
  const missing: string[] = [];
  for (;;) {
    try {
      return join(await realpath(path), ...missing.reverse());
    } catch {
      const parent = dirname(path);
      if (parent === path) return path;
      missing.push(path.slice(parent.length + (parent.endsWith(sep) ? 0 : 1)));
      path = parent;
    }
  }
}

function inside(path: string, root: string): boolean {
  const rel = relative(root, path);
  return rel === '' || (!rel.startsWith(`..${sep}`) && rel !== '..' && !isAbsolute(rel));
}

/** Every symlink under `dir`, as paths relative to `dir`; a link is never followed (readdir's own recursion follows links to directories). */
async function links(dir: string, prefix = ''): Promise<string[]> {
  const found: string[] = [];
  const entries: Dirent[] = await readdir(join(dir, prefix), { withFileTypes: true });
  for (const entry of entries) {
    const rel = prefix ? join(prefix, entry.name) : entry.name;
    if (entry.isSymbolicLink()) found.push(rel);
    else if (entry.isDirectory()) found.push(...(await links(dir, rel)));
  }
  return found;
}

/**
 * Refuses (Cairn.Usage, naming the link and where it leads) a data directory holding a symbolic
 * link that resolves outside `scratchDir`; returns the links it found, all inside. A refusal, not a
 * finding: a real cluster with a tablespace or a relocated pg_wal holds such links too, so the
 * snapshot is not marked damaged (as the MariaDB drill refuses its `.isl` files and links).
 */
export async function confineDataDirLinks(dataDir: string, scratchDir: string): Promise<string[]> {
  const root = await realpath(scratchDir);
  const found = await links(dataDir);
  const outside: string[] = [];
  for (const rel of found) {
    const link = join(dataDir, rel);
    const target = await readlink(link);
    const to = await destination(link, target);
    if (!inside(to, root)) outside.push(`${rel} -> ${target}${to === target ? '' : ` (${to})`}`);
  }
  if (outside.length > 0)
    throw new CairnError(
      'Cairn.Usage',
      `the restored data directory holds ${outside.length === 1 ? 'a symbolic link' : `${outside.length} symbolic links`} leading outside the drill's scratch directory: ${outside.slice(0, 5).join(', ')}${outside.length > 5 ? ', …' : ''}; a server started on it would read and write there (production's files), so the drill refuses to start one`,
      {
        hint: 'a cluster with a tablespace or a relocated pg_wal cannot be drilled here (the drill never follows links out of its scratch directory); restore it with `cairn restore` into a directory you choose and check it there, and if the cluster has neither, the snapshot was crafted: do not restore it onto a host whose files it names',
      },
    );
  return found;
}
