import type { Dirent } from 'node:fs';
import { chmod, lstat, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { CairnError, DamagedError } from '../core/errors.ts';
import { PieceReader } from '../core/piece-reader.ts';
import type { PieceIndex } from '../core/piece-index.ts';
import type { Repository } from '../core/repository.ts';
import type { Snapshot } from '../core/snapshot.ts';
import { decodeTree, entryName } from '../core/tree.ts';
import { timedCheck } from '../engines/drill-tools.ts';
import type { DrillCheck, DrillContext } from '../engines/engine.ts';
import { Restorer, fetchAheadFor, prepareTarget, readAheadFor } from '../files/restorer.ts';
import { contentPieces } from '../core/file-content.ts';

/**
 * The drill of a files snapshot: the whole tree restored into the scratch
 * directory, every piece read re-hashed to its keyed id (here, on top of the
 * reader's own check, and counted), then every file of the manifest found in
 * the scratch directory with the manifest's size.
 *
 * The scratch directory is the drill's alone (0700, commands/drill.ts), and the
 * restored tree loses its setuid, setgid and sticky bits as soon as it is
 * written: run as root, the restore recreates the snapshot's owners, and a
 * setuid-root program from a snapshot must not become runnable on this host.
 */

/** Clears the 07000 bits (setuid, setgid, sticky) of every file and directory under `dir`, `dir` included; links are skipped. */
export async function stripSpecialBits(dir: string): Promise<void> {
  const entries: Dirent[] = await readdir(dir, { withFileTypes: true, recursive: true });
  for (const path of [dir, ...entries.filter((e) => !e.isSymbolicLink()).map((e) => join(e.parentPath, e.name))]) {
    const { mode } = await lstat(path);
    if ((mode & 0o7000) !== 0 && !((mode & 0o170000) === 0o120000)) await chmod(path, mode & 0o777);
  }
}

/**
 * Whether restore errors are all this host's (no room, no permission, a read-only or failing
 * file system, too many open files) rather than the snapshot's: then the drill proved nothing.
 */
export function hostErrors(errors: ReadonlyArray<{ error: string }>): boolean {
  return errors.length > 0 && errors.every((e) => /\b(ENOSPC|EDQUOT|EACCES|EPERM|EROFS|EIO|EMFILE|ENFILE|ENOMEM)\b/.test(e.error));
}

/** A PieceReader that re-hashes each piece it returns and remembers which ids it has proven. */
class ProvingReader extends PieceReader {
  readonly proven = new Set<string>();
  bytes = 0;
  mismatches: string[] = [];
  private readonly repository: Repository;

  constructor(repo: Repository, index: PieceIndex, fetchBytes: number) {
    super(repo, index, { cacheFrames: 8, fetchBytes });
    this.repository = repo;
  }

  override async read(id: Buffer, options: { detach?: boolean } = {}): Promise<Buffer> {
    const data = await super.read(id, options);
    const hex = id.toString('hex');
    if (!this.repository.pieceId(data).equals(id)) {
      this.mismatches.push(hex);
      throw new DamagedError(`piece ${hex} read back with another keyed id`);
    }
    if (!this.proven.has(hex)) {
      this.proven.add(hex);
      this.bytes += data.length;
    }
    return data;
  }
}

export async function drillFiles(
  repo: Repository,
  snapshot: Snapshot,
  ctx: DrillContext & { concurrency: number },
  target: string,
): Promise<DrillCheck[]> {
  const index = await repo.loadIndex(ctx.concurrency * 2);
  const reader = new ProvingReader(repo, index, fetchAheadFor(ctx.concurrency));
  const checks: DrillCheck[] = [];
  checks.push(
    await timedCheck('restore', 'restore', ctx.signal, async () => {
      const state = await prepareTarget(target, false);
      const restorer = new Restorer(reader, {
        target,
        applyRoot: state !== 'holds-data',
        includes: [],
        force: false,
        // Every damaged file is reported, not only the first.
        ignoreErrors: true,
        readAheadBytes: readAheadFor(ctx.concurrency),
        progress: ctx.progress,
        signal: ctx.signal,
      });
      const result = await restorer.run(snapshot);
      await stripSpecialBits(target);
      const first = result.errors.slice(0, 5).map((e) => `${e.path}: ${e.error}`);
      return {
        ok: result.errors.length === 0,
        failure: hostErrors(result.errors) ? 'host' : 'data',
        found:
          result.errors.length === 0
            ? `${result.files} files, ${result.dirs} directories, ${result.symlinks} symlinks, ${result.bytes} bytes restored`
            : `${result.errors.length} file(s) could not be restored: ${first.join('; ')}`,
        details: {
          files: result.files,
          dirs: result.dirs,
          symlinks: result.symlinks,
          bytes: result.bytes,
          errors: result.errors.slice(0, 100),
        },
      };
    }),
  );
  // The manifest's files, their sizes and their pieces: data and every list (content, extent and page-hash
  // lists; a restore never reads page hashes, so this is where they are proven), reading trees proves those too.
  const files: Array<{ path: Buffer; display: string; size: number }> = [];
  const wanted = new Set<string>();
  const walk = async (treeId: string, dir: Buffer, display: string, ancestors: Set<string>): Promise<void> => {
    if (ancestors.has(treeId)) throw new DamagedError(`tree ${treeId} holds itself (a loop of directories) at ${display || '/'}`);
    ancestors.add(treeId);
    for (const entry of decodeTree(await reader.read(Buffer.from(treeId, 'hex')), treeId).entries) {
      const path = Buffer.concat([dir, Buffer.from('/'), entryName(entry)]);
      const shown = `${display}/${entry.name}`;
      if (entry.type === 'dir' && entry.subtree) await walk(entry.subtree, path, shown, ancestors);
      else if (entry.type === 'file') {
        files.push({ path, display: shown, size: entry.size ?? 0 });
        // Read here rather than left to the capped pass below: a database has a hash list per page file.
        for (const listId of entry.pageHashes ?? []) await reader.read(Buffer.from(listId, 'hex'));
        for await (const id of contentPieces(entry, reader)) wanted.add(id.toString('hex'));
      }
    }
    ancestors.delete(treeId);
  };
  checks.push(
    await timedCheck('pieces', 'check', ctx.signal, async () => {
      await walk(snapshot.tree, Buffer.from(target), '', new Set());
      const unread = [...wanted].filter((id) => !reader.proven.has(id));
      // A piece the restore could not read is already a restore error; one it never asked for is a gap in the drill itself.
      for (const id of unread.slice(0, 1000)) await reader.read(Buffer.from(id, 'hex'));
      return {
        ok: reader.mismatches.length === 0,
        found: `${reader.proven.size} pieces (${reader.bytes} bytes) re-hashed to their keyed ids${reader.mismatches.length ? `, ${reader.mismatches.length} did not match` : ''}`,
        details: { pieces: reader.proven.size, bytes: reader.bytes, mismatches: reader.mismatches.slice(0, 100) },
      };
    }),
  );
  checks.push(
    await timedCheck('file sizes', 'check', ctx.signal, async () => {
      if (files.length === 0 && snapshot.summary.totalFiles > 0)
        throw new CairnError('Cairn.Damaged', 'the manifest tree could not be read');
      const wrong: Array<{ path: string; expected: number; found: number | null }> = [];
      let bytes = 0;
      for (const file of files) {
        const stat = await lstat(file.path).catch(() => undefined);
        if (!stat?.isFile() || stat.size !== file.size)
          wrong.push({ path: file.display, expected: file.size, found: stat?.isFile() ? stat.size : null });
        else bytes += stat.size;
      }
      return {
        ok: wrong.length === 0,
        found:
          wrong.length === 0
            ? `${files.length} files, ${bytes} bytes, each the manifest's size`
            : `${wrong.length} of ${files.length} files differ from the manifest, e.g. ${wrong
                .slice(0, 3)
                .map((w) => `${w.path}: ${w.found === null ? 'missing' : `${w.found} bytes`}, manifest ${w.expected}`)
                .join('; ')}`,
        details: { files: files.length, bytes, wrong: wrong.slice(0, 100) },
      };
    }),
  );
  return checks;
}
