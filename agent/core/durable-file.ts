import { link, open, rename, unlink } from 'node:fs/promises';
import { unlinkSync } from 'node:fs';

/** What the two writers below accept: what FileHandle.writeFile takes, a stream's chunks included. */
export type FileData = string | Uint8Array | Iterable<Uint8Array> | AsyncIterable<Uint8Array>;

/**
 * Replaces `path` with `data` through the temporary file `tmp` (beside it, on
 * the same file system), flushed to disk before the rename: a reader, even
 * after a crash, sees the old file or the whole new one, never a part.
 */
export async function writeFileDurably(path: string, data: FileData, tmp: string, mode: number): Promise<void> {
  await writeTemporary(tmp, data, mode, () => rename(tmp, path));
}

/**
 * Creates `path` with `data`, never over an existing file (EEXIST, as
 * open's 'wx'), and never leaves part of it: the data is written and flushed
 * to `tmp` first, then hard-linked to `path` (link(2) fails rather than
 * replace a file, where rename would replace it) and `tmp` removed. A failed
 * write removes `tmp`; so does a process.exit() while it is in flight (the
 * CLI's exit at a second SIGINT/SIGTERM). Only SIGKILL or a crash can leave
 * `tmp` behind, never a truncated file under `path`. On file systems
 * without hard links, data given whole (a string or bytes) is written in
 * place with 'wx' and removed again if the write fails; a stream, already
 * consumed, cannot be written twice, so that error is thrown.
 */
export async function writeNewFileDurably(path: string, data: FileData, tmp: string, mode: number): Promise<void> {
  try {
    await writeTemporary(tmp, data, mode, () => link(tmp, path));
  } catch (error) {
    if (!noHardLinks(error) || !(typeof data === 'string' || data instanceof Uint8Array)) throw error;
    await writeTemporary(path, data, mode, async () => undefined);
    return;
  }
  await unlink(tmp).catch(() => undefined);
}

function noHardLinks(error: unknown): boolean {
  const code = (error as NodeJS.ErrnoException).code;
  return (error as NodeJS.ErrnoException).syscall === 'link' && (code === 'EPERM' || code === 'ENOTSUP' || code === 'EOPNOTSUPP');
}

/** Files being written: removed if the process exits first. One listener for all, however many writes run at once. */
const inFlight = new Set<string>();
function removeInFlight(): void {
  for (const file of inFlight) {
    try {
      unlinkSync(file);
    } catch {
      // already gone
    }
  }
}

/** Writes and flushes `file` (created with 'wx'), then runs `publish`; on any failure, or at process exit meanwhile, removes `file`. */
async function writeTemporary(file: string, data: FileData, mode: number, publish: () => Promise<unknown>): Promise<void> {
  const handle = await open(file, 'wx', mode);
  if (inFlight.size === 0) process.once('exit', removeInFlight);
  inFlight.add(file);
  try {
    try {
      await handle.writeFile(data);
      await handle.sync();
    } finally {
      await handle.close();
    }
    await publish();
  } catch (error) {
    await unlink(file).catch(() => undefined);
    throw error;
  } finally {
    inFlight.delete(file);
    if (inFlight.size === 0) process.off('exit', removeInFlight);
  }
}
