import { constants, type Stats } from 'node:fs';
import { type FileHandle, lstat, mkdir, open, readdir, realpath, rm, rmdir, stat, unlink } from 'node:fs/promises';
import { join, resolve, sep } from 'node:path';
import { CairnError } from '../core/errors.ts';
import { firstMissingCause, unwritable } from './target-errors.ts';
import type { TreeEntry } from '../core/tree.ts';

/** What the restore found at its target: it decides whether the snapshot's own directory metadata is applied to it. */
export type TargetState = 'created' | 'empty' | 'holds-data';

/**
 * Refuses a non-empty target unless forced, and (as root) a target another user could turn
 * against the restore (assertTargetSafe), before anything is written.
 */
export async function prepareTarget(target: string, force: boolean, uid = process.getuid?.() ?? -1): Promise<TargetState> {
  try {
    return await checkTarget(target, force, uid);
  } catch (error) {
    // A system error on the way (ENOTDIR, EACCES, ELOOP): the target named, with the usual fix.
    if (error instanceof CairnError || typeof (error as NodeJS.ErrnoException).code !== 'string') throw error;
    throw unwritable(target, 'use', error);
  }
}

async function checkTarget(target: string, force: boolean, uid: number): Promise<TargetState> {
  await assertTargetSafe(target, uid);
  let isDir: boolean;
  try {
    isDir = (await stat(target)).isDirectory();
  } catch (error) {
    if (!isErrno(error, 'ENOENT')) throw error;
    await mkdir(target, { recursive: true }).catch(async (cause: unknown) => {
      throw unwritable(target, 'create', await firstMissingCause(target, cause));
    });
    // Whoever could have put something at the path between the check and mkdir is caught here.
    await assertTargetSafe(target, uid);
    return 'created';
  }
  if (!isDir) throw new CairnError('Cairn.Usage', `restore target ${target} exists and is not a directory`, { hint: 'choose a directory' });
  const empty = (await readdir(target)).length === 0;
  if (!force && !empty) {
    throw new CairnError('Cairn.TargetNotEmpty', `restore target ${target} is not empty; nothing was written`, {
      hint: 'restore into an empty or new directory, or pass --force to overwrite what is there',
    });
  }
  return empty ? 'empty' : 'holds-data';
}

/**
 * The restore target's directories: paths under the target are built from
 * checked names only (keys: a path's bytes below the target as a latin1
 * string, one character per byte, so names that are not UTF-8 stay exact), and
 * every directory on the way is created by us or, with --force, checked to be a
 * real directory (a symlink or file in its place is removed, never followed).
 *
 * As root with --force, a directory that is already there and that another user
 * can write (their home, say) is taken over before anything is written in it:
 * root's, mode 0700, through a descriptor opened without following a symlink.
 * Otherwise that user could swap a subdirectory root has just made for a symlink
 * and have root write, replace and chown files anywhere (the target check covers
 * only the target and what lies above it). It gets the snapshot's owner and mode
 * back with the other directories' metadata at the end. Directories removed
 * with --force are taken over the same way, each before it is read, so none of
 * their entries can be swapped while they are removed.
 */
export class TargetTree {
  /** Directories created, in creation order, with the entry whose metadata they get at the end. */
  readonly createdDirs: Array<{ path: Buffer; entry: TreeEntry; rel: string }> = [];
  private readonly root: Buffer;
  private readonly force: boolean;
  private readonly onCreated: () => void;
  private readonly created = new Set<string>(['']);
  private readonly dirEntries = new Map<string, TreeEntry>();

  private readonly asRoot: boolean;
  /** Directories taken over (as root, with --force), with the owner and mode they had: given back if the restore fails. */
  private readonly takenOver: TakenOver[] = [];

  constructor(target: string, force: boolean, onCreated: () => void, uid = process.getuid?.() ?? -1) {
    this.root = Buffer.from(target);
    this.force = force;
    this.onCreated = onCreated;
    this.asRoot = uid === 0;
  }

  /** The target path of a key ('' is the target itself). */
  path(key: string): Buffer {
    return key === '' ? this.root : Buffer.concat([this.root, Buffer.from(`/${key}`, 'latin1')]);
  }

  /** Records a directory's entry, for its metadata once it is created. */
  noteDir(key: string, entry: TreeEntry): void {
    this.dirEntries.set(key, entry);
  }

  async ensureDir(key: string): Promise<void> {
    if (this.created.has(key)) return;
    await this.ensureParent(key);
    const path = this.path(key);
    try {
      await mkdir(path, { mode: 0o700 });
    } catch (error) {
      if (!isErrno(error, 'EEXIST')) throw error;
      const existing = await lstat(path);
      if (!existing.isDirectory()) {
        // Only reachable with --force: replace what is there, never follow it.
        await unlink(path);
        await mkdir(path, { mode: 0o700 });
      } else if (this.asRoot && !(await takeOver(path, this.dirEntries.has(key), this.takenOver))) {
        // Swapped for something else since the lstat: by a user who can write its parent only if that is the
        // target, which the target check refuses. Replace it as above.
        await unlink(path);
        await mkdir(path, { mode: 0o700 });
      }
    }
    this.created.add(key);
    this.onCreated();
    const entry = this.dirEntries.get(key);
    if (entry) this.createdDirs.push({ path, entry, rel: Buffer.from(key, 'latin1').toString('utf8') });
  }

  async ensureParent(key: string): Promise<void> {
    const slash = key.lastIndexOf('/');
    await this.ensureDir(slash < 0 ? '' : key.slice(0, slash));
  }

  /**
   * After a failed restore (the snapshot's directory metadata is not applied then): gives the
   * directories taken over back their owner and mode, deepest first, never through a symlink.
   * Returns what could not be given back.
   */
  async giveBack(): Promise<string[]> {
    const failures: string[] = [];
    for (const { path, uid, gid, mode } of this.takenOver.splice(0).reverse()) {
      try {
        const handle = await openDirectory(path);
        try {
          await handle.chown(uid, gid);
          await handle.chmod(mode);
        } finally {
          await handle.close();
        }
      } catch (error) {
        failures.push(`${path.toString()} (owner ${uid}:${gid}, mode ${mode.toString(8).padStart(4, '0')}): ${(error as Error).message}`);
      }
    }
    return failures;
  }

  /** With --force: removes whatever is at a path before an entry is written there. */
  async clearForEntry(path: Buffer): Promise<void> {
    if (!this.force) return;
    try {
      const existing = await lstat(path);
      if (!existing.isDirectory()) await unlink(path);
      else if (this.asRoot) await removeTree(path);
      else await rm(path, { recursive: true, force: true });
    } catch (error) {
      if (!isErrno(error, 'ENOENT')) throw error;
    }
  }
}

/**
 * As root: makes an existing directory root's, mode 0700, if another user can write it (TargetTree).
 * False if what is at `path` is no longer a directory. A directory the snapshot has no metadata for
 * would stay root's after the restore: refused instead.
 */
async function takeOver(path: Buffer, hasMetadata: boolean, taken?: TakenOver[]): Promise<boolean> {
  let handle;
  try {
    handle = await openDirectory(path);
  } catch (error) {
    if (isErrno(error, 'ELOOP') || isErrno(error, 'ENOTDIR')) return false;
    throw error;
  }
  try {
    const info = await handle.stat();
    const writers = otherWriters(info);
    if (!writers) return true;
    if (!hasMetadata)
      throw new CairnError(
        'Cairn.Usage',
        `refusing to restore as root into ${path.toString()}: it is ${writers}, and the snapshot has no owner or mode to give back to it`,
        {
          hint: 'restore into an empty directory and move the files, or run the restore as that user',
        },
      );
    try {
      await handle.chown(0, 0);
      await handle.chmod(0o700);
    } catch (error) {
      throw new CairnError(
        'Cairn.Failure',
        `cannot take over ${path.toString()} (it is ${writers}) before restoring into it: ${(error as Error).message}`,
        {
          hint: 'as root, cairn makes such a directory its own for the restore, so that its owner cannot redirect what is written in it; restore into an empty directory and move the files, or run the restore as that user',
          cause: error,
        },
      );
    }
    taken?.push({ path, uid: info.uid, gid: info.gid, mode: info.mode & 0o7777 });
    return true;
  } finally {
    await handle.close();
  }
}

/** A directory taken over, with the owner and mode it had. */
interface TakenOver {
  path: Buffer;
  uid: number;
  gid: number;
  mode: number;
}

/** A directory, never through a symbolic link at `path` itself (ELOOP or ENOTDIR then). */
function openDirectory(path: Buffer): Promise<FileHandle> {
  return open(path, constants.O_RDONLY | constants.O_DIRECTORY | constants.O_NOFOLLOW);
}

/** As root: removes a directory tree, taking each directory over (as above) before reading it. */
async function removeTree(path: Buffer): Promise<void> {
  if (!(await takeOver(path, true))) {
    await unlink(path).catch((error: unknown) => {
      if (!isErrno(error, 'ENOENT')) throw error;
    });
    return;
  }
  for (const name of await readdir(path, { encoding: 'buffer' })) {
    const child = Buffer.concat([path, Buffer.from('/'), name]);
    if ((await lstat(child)).isDirectory()) await removeTree(child);
    else await unlink(child);
  }
  await rmdir(path);
}

/**
 * As root, a restore writes files and then gives them to their owners. A user who can rename
 * entries in the target, or in a directory above it, could swap a directory for a symlink
 * mid-restore and have root write (and chown to them) files anywhere. So, as root, refuse:
 *
 * - a symlink on the target's path that a user other than root owns;
 * - a target (existing) that a user other than root owns or can write (sticky bit or not: they
 *   could create the entries the restore is about to make);
 * - a directory above it that a user other than root owns, or that group or others can write
 *   without the sticky bit (with it, as in /tmp, they cannot move root's entries).
 *
 * Not as root: nothing is chowned, and the user can already write wherever they could be tricked into.
 */
export async function assertTargetSafe(target: string, uid = process.getuid?.() ?? -1): Promise<void> {
  if (uid !== 0) return;
  const absolute = resolve(target);
  // The path as given: every component that exists, a symlink among them owned by root only.
  let deepest: string = sep;
  for (const part of absolute.split(sep).filter(Boolean)) {
    const path = join(deepest, part);
    let info: Stats;
    try {
      info = await lstat(path);
    } catch (error) {
      if (isErrno(error, 'ENOENT')) break;
      throw error;
    }
    if (info.isSymbolicLink() && info.uid !== 0)
      throw unsafeTarget(
        target,
        `${path} is a symlink owned by uid ${info.uid}, who can point it anywhere`,
        `replace ${path} with a directory root owns, or restore as that user`,
      );
    deepest = path;
  }
  // The directories the path resolves to, from / down.
  const real = await realpath(deepest);
  const isTarget = deepest === absolute;
  let path: string = sep;
  const chain = [
    sep,
    ...real
      .split(sep)
      .filter(Boolean)
      .map((part) => (path = join(path, part))),
  ];
  for (const dir of chain) {
    const info = await stat(dir);
    const self = isTarget && dir === real;
    const writers = otherWriters(info);
    if (self && writers)
      throw unsafeTarget(
        target,
        `${dir === absolute ? 'it' : `it (${dir})`} is ${writers}`,
        `restore into a directory only root owns and can write (e.g. a new one: \`mkdir -m 700\` as root), or run the restore as that user`,
      );
    if (!self && writers && (info.uid !== 0 || (info.mode & 0o1000) === 0))
      throw unsafeTarget(
        target,
        `it lies under ${dir}, which is ${writers}${info.uid === 0 ? ' without the sticky bit' : ''}`,
        info.uid !== 0
          ? `restore under a directory root owns (\`chown root ${dir}\`), or run the restore as that user`
          : `remove the write access (\`chmod go-w ${dir}\`) or set the sticky bit (\`chmod +t ${dir}\`), or restore elsewhere`,
      );
  }
}

/**
 * Who other than root can rename entries in a directory: its owner, or its group or everyone through
 * the mode. Group write counts even for group 0: with a POSIX access control list, the group bits
 * are the list's mask, and a user the list names may write whenever the mask lets them (Node cannot
 * read the list itself).
 */
function otherWriters(info: Stats): string | undefined {
  const mode = (info.mode & 0o7777).toString(8).padStart(4, '0');
  if (info.uid !== 0) return `owned by uid ${info.uid} (mode ${mode})`;
  if (info.mode & 0o002) return `writable by every user (mode ${mode})`;
  if (info.mode & 0o020)
    return info.gid !== 0
      ? `writable by group ${info.gid} (mode ${mode})`
      : `writable through its group bits (mode ${mode}: group 0, or users an access control list names)`;
  return undefined;
}

function unsafeTarget(target: string, why: string, fix: string): CairnError {
  return new CairnError(
    'Cairn.Usage',
    `refusing to restore as root into ${target}: ${why}; that user could swap a directory for a symlink while the restore runs and have files written and given to them anywhere. Nothing was written`,
    { hint: fix },
  );
}

function isErrno(error: unknown, code: string): boolean {
  return error instanceof Error && (error as NodeJS.ErrnoException).code === code;
}

/**
 * The read-ahead a restore runs with: 4 MiB per unit of --concurrency (at least 2), counted as
 * PieceReader.readAhead counts a read (a frame's stored bytes for a read that fetches it, else the
 * piece). A frame fetched is held, decrypted and decompressed, in about three frame-sized buffers
 * on the way, so held memory is a few times the read-ahead: with 8 MiB per unit a 2-unit restore
 * held ~108 MiB of Buffers, with 4 MiB ~55 MiB, at the same speed from a local disk.
 */
export function readAheadFor(concurrency: number): number {
  return Math.max(2, concurrency) * (4 << 20);
}

/**
 * The frames a restore fetches and opens at once, in stored bytes (PieceReader's `fetchBytes`): twice
 * its read-ahead, so that on a store with latency the frames in flight, not the pieces waiting for
 * their writers, stay the limit they were before this bound existed (with as much as the read-ahead,
 * a restore of ~300 KiB files from a store answering in 100 ms took 5.6 s instead of 4.9 s).
 */
export function fetchAheadFor(concurrency: number): number {
  return 2 * readAheadFor(concurrency);
}
