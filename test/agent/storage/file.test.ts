import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { FileStorage } from '../../../agent/storage/file.ts';
import { CairnError } from '../../../agent/core/errors.ts';
import { tempDir } from '../../helpers/repo.ts';
import { storageConformance } from './conformance.ts';

storageConformance('file:// storage', async () => {
  const dir = await tempDir('file-storage');
  return { storage: new FileStorage(dir.path), teardown: dir.remove };
});

async function listAll(storage: FileStorage, prefix = ''): Promise<string[]> {
  const keys: string[] = [];
  for await (const info of storage.list(prefix)) keys.push(info.key);
  return keys.sort();
}

describe('file:// storage specifics', () => {
  it('a failed write leaves no object and no temporary file behind', async () => {
    const dir = await tempDir('file-fail');
    try {
      const storage = new FileStorage(dir.path);
      // A file where the object's directory should be: the data reaches tmp/, then placing it fails.
      await writeFile(join(dir.path, 'blocked'), 'not a directory');
      await assert.rejects(
        storage.put('blocked/object', Buffer.from('y')),
        (e: CairnError) => e.code === 'Cairn.Storage' && /blocked\/object/.test(e.message) && e.hint !== undefined,
      );
      assert.deepEqual(await readdir(join(dir.path, 'tmp')), [], 'the temporary file was removed');
      assert.deepEqual(await listAll(storage), ['blocked']);
    } finally {
      await dir.remove();
    }
  });

  it('a write interrupted by a crash (a temporary file left in tmp/) is no object and is not listed', async () => {
    const dir = await tempDir('file-crash');
    try {
      const storage = new FileStorage(dir.path);
      await storage.put('packs/kept', Buffer.from('whole'));
      // What a crash between writing the temporary file and renaming it leaves.
      await mkdir(join(dir.path, 'tmp'), { recursive: true });
      await writeFile(join(dir.path, 'tmp', '0123abcd.tmp'), 'half an obj');
      assert.deepEqual(await listAll(storage), ['packs/kept']);
      assert.deepEqual(await listAll(storage, 'tmp'), []);
      await storage.put('packs/next', Buffer.from('next'), { ifAbsent: true });
      assert.equal((await storage.get('packs/next')).toString(), 'next');
    } finally {
      await dir.remove();
    }
  });

  it('keys cannot escape the repository directory', async () => {
    const dir = await tempDir('file-keys');
    try {
      const storage = new FileStorage(dir.path);
      await assert.rejects(storage.put('../escape', Buffer.from('x')), /invalid object key/);
      await assert.rejects(storage.get('/etc/passwd'), /invalid object key/);
    } finally {
      await dir.remove();
    }
  });
});
