import { describe, it, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { CairnError } from '../../../agent/core/errors.ts';
import { kmsKeyFile, kmsRegion, parseKeyFile, passphraseUnlocker, unwrapMasterKey, wrapMasterKey } from '../../../agent/core/keyfile.ts';
import { Repository } from '../../../agent/core/repository.ts';
import { openRepository, type UnlockSource } from '../../../agent/cli/open-repository.ts';
import { fileRepo, tempDir } from '../../helpers/repo.ts';

/** Written by the key file code before KMS keys existed (commit 8ec5ac3), byte for byte. */
const LEGACY_PASSPHRASE_FILE = `{
  "version": 1,
  "kind": "passphrase",
  "kdf": {
    "name": "scrypt",
    "N": 1024,
    "r": 8,
    "p": 1,
    "salt": "1Je50cvKD6+ca9rBPOyGYA=="
  },
  "wrapped": "vGHf04USjpVshZhafDxt1jJ3XM7NDGQ3bEYQ0vXIldAmH0wYzRm1q5Wn087bPYloLUD79iNZknhSpZqD",
  "created": "2026-11-23T16:33:53.354Z",
  "host": "old-host",
  "user": "old-user"
}`;
const LEGACY_MASTER = Buffer.from(Array.from({ length: 32 }, (_, i) => i));
const WHO = { host: 'h', user: 'u' };
const ARN = 'arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab';

describe('key files', () => {
  const dirs: Array<() => Promise<void>> = [];
  after(async () => {
    for (const remove of dirs) await remove();
  });

  it('a passphrase key file written before KMS keys existed still opens', async () => {
    const file = parseKeyFile(Buffer.from(LEGACY_PASSPHRASE_FILE), 'keys/legacy');
    assert.equal(file.kind, 'passphrase');
    assert.deepEqual(await unwrapMasterKey(file, 'legacy passphrase', 'ab'.repeat(32)), LEGACY_MASTER);
    assert.equal(await unwrapMasterKey(file, 'other', 'ab'.repeat(32)), undefined);
  });

  it('a kms key file parses; a bad ARN or an unknown kind is damage; the region comes from the ARN', () => {
    const file = kmsKeyFile(ARN, randomBytes(180), WHO);
    const parsed = parseKeyFile(Buffer.from(JSON.stringify(file)), 'keys/k');
    assert.equal(parsed.kind, 'kms');
    assert.equal(parsed.kind === 'kms' ? parsed.keyArn : '', ARN);
    assert.throws(
      () => parseKeyFile(Buffer.from(JSON.stringify({ ...file, keyArn: 'alias/foo' })), 'keys/k'),
      (e: unknown) => e instanceof CairnError && e.code === 'Cairn.Damaged' && /keyArn/.test(e.message),
    );
    assert.throws(
      () => parseKeyFile(Buffer.from(JSON.stringify({ ...file, kind: 'hsm' })), 'keys/k'),
      (e: unknown) => e instanceof CairnError && e.code === 'Cairn.Damaged',
    );
    assert.equal(kmsRegion(ARN), 'eu-west-1');
    assert.equal(kmsRegion('arn:aws-us-gov:kms:us-gov-west-1:111122223333:alias/cairn'), 'us-gov-west-1');
    assert.throws(
      () => kmsRegion('1234abcd-12ab-34cd-56ef-1234567890ab'),
      (e: unknown) => e instanceof CairnError && e.code === 'Cairn.Usage' && /full ARN/.test(e.hint ?? ''),
    );
  });

  it('init writes every wrapping it is given; a passphrase opens only passphrase keys and says when there are none', async () => {
    const dir = await tempDir('keyfile');
    dirs.push(dir.remove);
    const storage = fileRepo(join(dir.path, 'repo'));
    const fakeKms = kmsKeyFile(ARN, randomBytes(64), WHO);
    const repo = await Repository.init(
      storage,
      async (master, id) => [await wrapMasterKey(master, 'pw', id, WHO, { N: 1024, r: 8, p: 1 }), fakeKms],
      WHO,
    );
    const names = await readdir(join(dir.path, 'repo', 'keys'));
    assert.equal(names.length, 2);
    const kinds = await Promise.all(names.map(async (n) => parseKeyFile(await readFile(join(dir.path, 'repo', 'keys', n)), n).kind));
    assert.deepEqual(kinds.sort(), ['kms', 'passphrase']);
    const reopened = await Repository.open(storage, 'pw');
    assert.deepEqual(reopened.masterKey(), repo.masterKey());
    assert.equal(reopened.keyId, repo.keyId, 'the passphrase key file opened it');
    await assert.rejects(Repository.open(storage, 'wrong'), (e: unknown) => e instanceof CairnError && e.code === 'Cairn.WrongKey');

    const onlyKms = passphraseUnlocker('pw');
    await assert.rejects(
      onlyKms({ config: repo.config, keys: [{ id: 'k', name: 'keys/k', file: fakeKms }], location: 'here' }),
      (e: unknown) =>
        e instanceof CairnError && e.code === 'Cairn.WrongKey' && e.message.includes(ARN) && /no passphrase key/.test(e.message),
    );
  });

  it('unlock sources are tried in order and the first that applies decides, with no fall-through', async () => {
    const dir = await tempDir('unlock');
    dirs.push(dir.remove);
    const storage = fileRepo(join(dir.path, 'repo'));
    const repo = await Repository.init(
      storage,
      async (master, id) => [await wrapMasterKey(master, 'pw', id, WHO, { N: 1024, r: 8, p: 1 })],
      WHO,
    );
    const tried: string[] = [];
    const source = (name: string, result: 'skip' | 'open' | 'fail'): UnlockSource => ({
      name,
      unlock(request) {
        tried.push(name);
        if (result === 'skip') return Promise.resolve(undefined);
        if (result === 'fail') return Promise.reject(new CairnError('Cairn.WrongKey', `${name} failed`));
        return passphraseUnlocker('pw')(request);
      },
    });
    const opened = await openRepository(storage, [source('a', 'skip'), source('b', 'open'), source('c', 'open')]);
    assert.deepEqual(opened.masterKey(), repo.masterKey());
    assert.deepEqual(tried, ['a', 'b']);

    tried.length = 0;
    await assert.rejects(openRepository(storage, [source('a', 'fail'), source('b', 'open')]), /a failed/);
    assert.deepEqual(tried, ['a'], 'a failing source that applies is final');

    await assert.rejects(
      openRepository(storage, [source('a', 'skip')]),
      (e: unknown) => e instanceof CairnError && e.code === 'Cairn.Usage' && /no passphrase given/.test(e.message),
    );
  });
});
