import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { chmod, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { FileStorage } from '../../agent/storage/file.ts';
import { CairnError } from '../../agent/core/errors.ts';
import { tempDir } from '../helpers/repo.ts';
import { storageConformance } from './conformance.ts';

storageConformance('file://', async () => {
  const dir = await tempDir('file-storage');
  return { storage: new FileStorage(dir.path), teardown: dir.remove };
});

describe('file:// specifics', () => {
  it('a failed write leaves no object and no temporary file in listings', async () => {
    const dir = await tempDir('file-fail');
    const storage = new FileStorage(dir.path);
    await storage.put('ro/keep', Buffer.from('x'));
    await chmod(join(dir.path, 'ro'), 0o500);
    try {
      if (process.getuid?.() === 0) return; // root writes anyway; the check below needs a real permission error
      await assert.rejects(storage.put('ro/new', Buffer.from('y')), (e: CairnError) => e.code === 'Cairn.Storage' && /permission denied/.test(e.message));
      assert.deepEqual(await readdir(join(dir.path, 'tmp')), []);
    } finally {
      await chmod(join(dir.path, 'ro'), 0o700);
      await dir.remove();
    }
  });

  it('keys cannot escape the repository directory', async () => {
    const dir = await tempDir('file-keys');
    const storage = new FileStorage(dir.path);
    await assert.rejects(storage.put('../escape', Buffer.from('x')), /invalid object key/);
    await assert.rejects(storage.get('/etc/passwd'), /invalid object key/);
    await dir.remove();
  });
});
