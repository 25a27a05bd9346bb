import { randomBytes } from 'node:crypto';
import { mkdir, open, readFile, readdir, rename, link, unlink, stat as fsStat } from 'node:fs/promises';
import { dirname, join, sep } from 'node:path';
import { CairnError, NotFoundError, AlreadyExistsError, errorMessage } from '../core/errors.ts';
import type { DeletableStorage, ObjectInfo, PutOptions } from '../core/storage.ts';
import { checkRange, shortRangeError } from './ranges.ts';

const TMP_DIR = 'tmp';

/**
 * A repository in a local directory or on an NFS mount. Writes go to a
 * temporary file in the repository's own tmp/ (same filesystem), are fsynced,
 * then renamed (or hard-linked, for create-if-absent) into place, and the
 * directory is fsynced, so a crash leaves either the whole object or none.
 * A directory created on the way (packs/ab/) is fsynced into its parent
 * before the object is placed in it: otherwise a crash could lose the new
 * directory's entry, and with it an object whose put had resolved.
 *
 * Modification times are the files' mtimes: the clock of the host that wrote
 * them, or on NFS usually the server's.
 */
export class FileStorage implements DeletableStorage {
  readonly location: string;
  readonly atomicCreate = true;
  private readonly root: string;

  constructor(root: string) {
    this.root = root;
    this.location = `file://${root}`;
  }

  async get(key: string): Promise<Buffer> {
    try {
      return await readFile(this.path(key));
    } catch (error) {
      throw this.translate(error, key, 'read');
    }
  }

  async getRange(key: string, offset: number, length: number): Promise<Buffer> {
    checkRange(key, offset, length);
    let handle;
    try {
      handle = await open(this.path(key), 'r');
      const buffer = Buffer.allocUnsafe(length);
      let done = 0;
      while (done < length) {
        const { bytesRead } = await handle.read(buffer, done, length - done, offset + done);
        if (bytesRead === 0) break;
        done += bytesRead;
      }
      if (done !== length) throw shortRangeError(this.location, key, offset, length, done);
      return buffer;
    } catch (error) {
      throw this.translate(error, key, 'read');
    } finally {
      await handle?.close();
    }
  }

  async put(key: string, data: Buffer, options: PutOptions = {}): Promise<void> {
    const target = this.path(key);
    const tmp = join(this.root, TMP_DIR, `${randomBytes(12).toString('hex')}.tmp`);
    try {
      await this.writeDurably(tmp, data);
      await makeDirectoryDurably(dirname(target));
      if (options.ifAbsent) {
        // link(2) fails with EEXIST instead of replacing: an atomic create-if-absent.
        try {
          await link(tmp, target);
        } catch (error) {
          if (isErrno(error, 'EEXIST')) throw new AlreadyExistsError(key, { cause: error });
          throw error;
        }
        await unlink(tmp);
      } else {
        await rename(tmp, target);
      }
      await syncDirectory(dirname(target));
    } catch (error) {
      await unlink(tmp).catch(() => undefined);
      throw this.translate(error, key, 'write');
    }
  }

  async stat(key: string): Promise<ObjectInfo | undefined> {
    try {
      const info = await fsStat(this.path(key));
      return { key, size: info.size, modified: Math.floor(info.mtimeMs) };
    } catch (error) {
      if (isErrno(error, 'ENOENT')) return undefined;
      throw this.translate(error, key, 'stat');
    }
  }

  async *list(prefix: string): AsyncIterable<ObjectInfo> {
    // The prefix may end inside a name ("packs/a"): walk its directory part, filter by the rest.
    const slash = prefix.lastIndexOf('/');
    const base = slash < 0 ? '' : prefix.slice(0, slash);
    yield* this.walk(base, prefix);
  }

  async delete(key: string): Promise<void> {
    try {
      await unlink(this.path(key));
    } catch (error) {
      if (isErrno(error, 'ENOENT')) return;
      throw this.translate(error, key, 'delete');
    }
  }

  private async *walk(relDir: string, prefix: string): AsyncIterable<ObjectInfo> {
    let entries;
    try {
      entries = await readdir(relDir === '' ? this.root : join(this.root, relDir), { withFileTypes: true });
    } catch (error) {
      if (isErrno(error, 'ENOENT')) return;
      throw this.translate(error, relDir, 'list');
    }
    for (const entry of entries) {
      const key = relDir === '' ? entry.name : `${relDir}/${entry.name}`;
      if (entry.isDirectory()) {
        if (key === TMP_DIR) continue;
        if (prefix.startsWith(`${key}/`) || `${key}/`.startsWith(prefix)) yield* this.walk(key, prefix);
      } else if (entry.isFile() && key.startsWith(prefix)) {
        const info = await this.stat(key);
        if (info) yield info;
      }
    }
  }

  private async writeDurably(path: string, data: Buffer): Promise<void> {
    await mkdir(dirname(path), { recursive: true });
    const handle = await open(path, 'wx', 0o600);
    try {
      let done = 0;
      while (done < data.length) {
        const { bytesWritten } = await handle.write(data, done, data.length - done);
        done += bytesWritten;
      }
      await handle.sync();
    } finally {
      await handle.close();
    }
  }

  private path(key: string): string {
    if (key.includes('..') || key.startsWith('/') || key.includes('\\') || key.includes(`${sep}${sep}`)) {
      throw new CairnError('Cairn.Usage', `invalid object key ${JSON.stringify(key)}`);
    }
    return join(this.root, key);
  }

  private translate(error: unknown, key: string, action: string): Error {
    if (error instanceof CairnError) return error;
    if (isErrno(error, 'ENOENT')) return new NotFoundError(key, { cause: error });
    if (isErrno(error, 'EEXIST') || isErrno(error, 'ENOTDIR')) {
      return new CairnError('Cairn.Storage', `cannot ${action} ${key} in ${this.location}: a file is in the way of its directory`, {
        hint: 'something other than cairn wrote into the repository directory; move that file away',
        cause: error,
      });
    }
    if (isErrno(error, 'ENOSPC') || isErrno(error, 'EDQUOT')) {
      return new CairnError('Cairn.Storage', `cannot ${action} ${key} in ${this.location}: no space left on the device`, {
        hint: "free space on the repository's filesystem and run the command again; nothing was committed",
        cause: error,
      });
    }
    if (isErrno(error, 'EACCES') || isErrno(error, 'EPERM') || isErrno(error, 'EROFS')) {
      return new CairnError('Cairn.Storage', `cannot ${action} ${key} in ${this.location}: permission denied`, {
        hint: 'check the ownership and mode of the repository directory',
        cause: error,
      });
    }
    return new CairnError('Cairn.Storage', `cannot ${action} ${key} in ${this.location}: ${errorMessage(error)}`, { cause: error });
  }
}

/**
 * mkdir -p, then fsync the parent of every directory it created (top down),
 * so each new entry is on disk before anything is placed below it.
 */
async function makeDirectoryDurably(path: string): Promise<void> {
  const first = await mkdir(path, { recursive: true });
  if (first === undefined) return;
  const created = [path];
  for (let dir = path; dir !== first && dirname(dir) !== dir;) {
    dir = dirname(dir);
    created.unshift(dir);
  }
  for (const dir of created) await syncDirectory(dirname(dir));
}

async function syncDirectory(path: string): Promise<void> {
  const handle = await open(path, 'r');
  try {
    await handle.sync();
  } catch (error) {
    // Some filesystems (and NFS servers) refuse fsync on a directory; the rename is still ordered after the data fsync.
    if (!isErrno(error, 'EINVAL') && !isErrno(error, 'EISDIR')) throw error;
  } finally {
    await handle.close();
  }
}

export function isErrno(error: unknown, code: string): boolean {
  return typeof error === 'object' && error !== null && (error as { code?: unknown }).code === code;
}
