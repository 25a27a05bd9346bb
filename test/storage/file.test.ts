import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readdir, writeFile } from 'node:fs/promises';
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
  it('a failed write leaves no object and no temporary file behind', async () => {
    const dir = await tempDir('file-fail');
    const storage = new FileStorage(dir.path);
    // A file where the object's directory should be: the data is written to tmp/, then placing it fails.
    await writeFile(join(dir.path, 'blocked'), 'not a directory');
    await assert.rejects(storage.put('blocked/object', Buffer.from('y')), (e: CairnError) => e.code === 'Cairn.Storage' && /cannot write blocked\/object/.test(e.message));
    assert.deepEqual(await readdir(join(dir.path, 'tmp')), [], 'the temporary file was removed');
    const listed: string[] = [];
    for await (const o of storage.list('')) listed.push(o.key);
    assert.deepEqual(listed, ['blocked']);
    await dir.remove();
  });

  it('keys cannot escape the repository directory', async () => {
    const dir = await tempDir('file-keys');
    const storage = new FileStorage(dir.path);
    await assert.rejects(storage.put('../escape', Buffer.from('x')), /invalid object key/);
    await assert.rejects(storage.get('/etc/passwd'), /invalid object key/);
    await dir.remove();
  });
});
