import { CairnError } from './errors.ts';
import { doomedPieces, listGenerations, newGenerations, type StoredGeneration } from './gc-generation.ts';
import { INDEX_PREFIX, idFromKey } from './layout.ts';
import type { PieceIndex } from './piece-index.ts';
import type { PieceReader } from './piece-reader.ts';
import { collectReferences } from './references.ts';
import type { Repository } from './repository.ts';
import type { Snapshot } from './snapshot.ts';

/**
 * A backup's side of the two-phase garbage collection (core/gc-collect.ts,
 * docs/locks-and-gc.md). Nothing here reads a clock or a lock:
 *
 * - `begin`, right after the index is loaded: every piece a GC generation on
 *   storage names (pending, or settled less than a grace ago) is dropped from
 *   the backup's in-memory index, so the backup uploads it again instead of
 *   reusing it (an unchanged file whose pieces are doomed is read again);
 * - `beforeCommit`, just before the manifest is written: the generations are
 *   listed again. A generation that appeared while the backup ran and names a
 *   piece the new snapshot uses, or an index file the backup loaded that is gone
 *   (a collection settled meanwhile and replaced the index), fails the backup
 *   with nothing committed (Cairn.Locked: run it again; the rerun uploads those
 *   pieces anew). The rerun is what re-uploads: the pieces in question may
 *   already be gone, and only a fresh walk knows which files hold them.
 */
export class GcGuard {
  private readonly repo: Repository;
  private readonly known: StoredGeneration[];
  private readonly indexFiles: Set<string>;
  private readonly warn: (message: string) => void;
  /** How many pieces `begin` dropped from the index. */
  readonly dropped: number;

  private constructor(
    repo: Repository,
    known: StoredGeneration[],
    indexFiles: Set<string>,
    dropped: number,
    warn: (message: string) => void,
  ) {
    this.repo = repo;
    this.known = known;
    this.indexFiles = indexFiles;
    this.dropped = dropped;
    this.warn = warn;
  }

  static async begin(repo: Repository, index: PieceIndex, warn: (message: string) => void): Promise<GcGuard> {
    const known = await listGenerations(repo, warn);
    const doomed = doomedPieces(known);
    const dropped = doomed.size === 0 ? 0 : index.removeWhere((id) => doomed.has(id.toString('hex')));
    return new GcGuard(repo, known, await listIndexFiles(repo), dropped, warn);
  }

  async beforeCommit(tree: string, reader: PieceReader): Promise<void> {
    const appeared = newGenerations(this.known, await listGenerations(this.repo, this.warn));
    const present = await listIndexFiles(this.repo);
    const gone = [...this.indexFiles].filter((name) => !present.has(name));
    if (gone.length > 0) {
      throw new CairnError(
        'Cairn.Locked',
        `garbage collection replaced the repository index while this backup ran (${gone.length} index file(s) it loaded are gone); nothing was committed, since pieces it reused may have been deleted`,
        { hint: 'run the backup again: it starts from the new index and uploads whatever is no longer there' },
      );
    }
    if (appeared.length === 0) return;
    const doomed = doomedPieces(appeared);
    if (doomed.size === 0) return;
    const used = await collectReferences([{ tree } as Snapshot], reader);
    const reused = [...doomed].filter((hex) => used.has(Buffer.from(hex, 'hex'))).length;
    if (reused > 0) {
      throw new CairnError(
        'Cairn.Locked',
        `garbage collection (generation ${appeared.map((g) => g.generation).join(', ')}) marked ${reused} piece(s) this backup reused while it ran; nothing was committed`,
        { hint: 'run the backup again: it uploads those pieces anew' },
      );
    }
  }
}

async function listIndexFiles(repo: Repository): Promise<Set<string>> {
  const names = new Set<string>();
  for await (const object of repo.storage.list(INDEX_PREFIX)) if (idFromKey(object.key, INDEX_PREFIX)) names.add(object.key);
  return names;
}
