import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { chmod, chown, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { warnIfExposed } from '../../../agent/core/secret-file.ts';
import { tempDir } from '../../helpers/repo.ts';

/** The warning a secret's file gets when other users can read or change it (passphrase, database password, GCS key files). */
describe('files holding secrets', () => {
  let work: { path: string; remove: () => Promise<void> };
  before(async () => {
    work = await tempDir('secret-file');
  });
  after(() => work.remove());

  const warningFor = async (path: string): Promise<string | undefined> => {
    const seen: string[] = [];
    const listener = (warning: Error): void => void seen.push(`${warning.name}: ${warning.message}`);
    process.on('warning', listener);
    try {
      await warnIfExposed(path, 'the database password file');
      // Node emits process warnings on the next tick.
      await once(process, 'warning').then(
        () => undefined,
        () => undefined,
      );
    } finally {
      process.off('warning', listener);
    }
    return seen[0];
  };

  it('names the mode and an owner who is neither this user nor root, with the fix', async () => {
    const open = join(work.path, 'open');
    await writeFile(open, 'pw');
    await chmod(open, 0o666);
    if (process.getuid?.() === 0) await chown(open, 65534, 65534);
    const warning = await warningFor(open);
    assert.match(warning ?? '', /^SecretFileOpen: the database password file .*open: other users can change or read it \(mode 666\)/);
    if (process.getuid?.() === 0) assert.match(warning ?? '', /it belongs to uid 65534, who can change it/);
    assert.match(warning ?? '', /chmod 600/);
  });

  it('says nothing of a 0600 file of this user', async () => {
    const tight = join(work.path, 'tight');
    await writeFile(tight, 'pw', { mode: 0o600 });
    const seen: string[] = [];
    const listener = (warning: Error): void => void seen.push(warning.message);
    process.on('warning', listener);
    await warnIfExposed(tight, 'the database password file');
    await new Promise((resolve) => setImmediate(resolve));
    process.off('warning', listener);
    assert.deepEqual(seen, []);
  });
});
