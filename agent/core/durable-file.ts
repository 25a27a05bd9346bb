import { open, rename, unlink } from 'node:fs/promises';

/**
 * Replaces `path` with `data` through the temporary file `tmp` (beside it, on
 * the same file system), flushed to disk before the rename: a reader, even
 * after a crash, sees the old file or the whole new one, never a part.
 */
export async function writeFileDurably(path: string, data: string | Uint8Array, tmp: string, mode: number): Promise<void> {
  try {
    const handle = await open(tmp, 'wx', mode);
    try {
      await handle.writeFile(data);
      await handle.sync();
    } finally {
      await handle.close();
    }
    await rename(tmp, path);
  } catch (error) {
    await unlink(tmp).catch(() => undefined);
    throw error;
  }
}
