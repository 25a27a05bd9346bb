import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFile, writeFile, mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { sealKeyCheck } from '../../../agent/core/key-check.ts';
import { newMasterKey, unwrapMasterKey, wrapMasterKey } from '../../../agent/core/keyfile.ts';
import { KEY_CHECK_KEY, keyFileKey } from '../../../agent/core/layout.ts';
import { Repository, type Who } from '../../../agent/core/repository.ts';
import { CairnError } from '../../../agent/core/errors.ts';
import { MemoryStorage } from '../../helpers/memory-storage.ts';
import { PASSPHRASE, SMALL, backupDir, restoreTo, tempDir } from '../../helpers/repo.ts';
import { recordEvent } from '../../../agent/core/history.ts';

/**
 * Issue 16: a well-formed key file wrapping a *different* master key (written by a host that knows
 * the passphrase and may create objects) must not decide which key opens the repository.
 */
const who: Who = { host: 'test-host', user: 'tester' };
/** Sorts before any random key id, so an unlocker that tries key files in order meets it first. */
const FORGED_ID = '0'.repeat(32);

async function forgeKeyFile(storage: MemoryStorage, repositoryId: string, id = FORGED_ID): Promise<Buffer> {
  const forgedMaster = newMasterKey();
  const file = await wrapMasterKey(forgedMaster, PASSPHRASE, repositoryId, who);
  await storage.put(keyFileKey(id), Buffer.from(JSON.stringify(file)), { ifAbsent: true });
  return forgedMaster;
}

describe('the key-check object (issue 16)', () => {
  it('init writes key-check before the config; it is sealed under the master key and bound to the repository', async () => {
    const clock = { t: 1_000_000 };
    const storage = new MemoryStorage({ now: () => clock.t++ });
    const repo = await Repository.init(storage, PASSPHRASE, who);
    const check = await storage.stat(KEY_CHECK_KEY);
    const config = await storage.stat('config');
    assert.ok(check && config);
    assert.ok(check.modified < config.modified, 'key-check is stored before the config');
    const raw = await storage.get(KEY_CHECK_KEY);
    assert.ok(!raw.toString('latin1').includes(repo.id), 'nothing readable in it');
  });

  it('a forged key file with the same passphrase, listed first, is skipped with a warning; backup and restore work with the true key', async () => {
    const src = await tempDir('keycheck-src');
    const out = await tempDir('keycheck-out');
    try {
      const storage = new MemoryStorage();
      const repo = await Repository.init(storage, PASSPHRASE, who, SMALL);
      await mkdir(join(src.path, 'd'));
      await writeFile(join(src.path, 'd', 'a.txt'), 'the real data\n');
      const first = await backupDir(repo, src.path);
      await forgeKeyFile(storage, repo.id);

      const warnings: string[] = [];
      const opened = await Repository.open(storage, PASSPHRASE, { warn: (m) => void warnings.push(m) });
      assert.notEqual(opened.keyId, FORGED_ID);
      assert.ok(opened.masterKey().equals(repo.masterKey()), 'opened with the true master key');
      assert.ok(
        warnings.some((w) => w.includes(keyFileKey(FORGED_ID)) && w.includes(KEY_CHECK_KEY)),
        `a warning names the forged key file and the key-check object: ${warnings.join(' | ')}`,
      );

      await writeFile(join(src.path, 'd', 'b.txt'), 'written after the forgery\n');
      const second = await backupDir(opened, src.path);
      assert.equal(second.parent, first.id, 'the next backup found its parent');
      await restoreTo(await Repository.open(storage, PASSPHRASE, { warn: () => {} }), second.id, out.path);
      assert.equal(await readFile(join(out.path, 'd', 'a.txt'), 'utf8'), 'the real data\n');
      assert.equal(await readFile(join(out.path, 'd', 'b.txt'), 'utf8'), 'written after the forgery\n');
    } finally {
      await src.remove();
      await out.remove();
    }
  });

  it('an unlocker that ignores `accept` (as the KMS source does) is run again without the rejected key file', async () => {
    const storage = new MemoryStorage();
    const repo = await Repository.init(storage, PASSPHRASE, who);
    await forgeKeyFile(storage, repo.id);
    const tried: string[] = [];
    const warnings: string[] = [];
    const opened = await Repository.openWith(
      storage,
      async ({ config, keys }) => {
        // Takes the first key file it can open, whatever the repository thinks of it.
        for (const key of keys) {
          const master = await unwrapMasterKey(key.file, PASSPHRASE, config.id);
          if (master) {
            tried.push(key.id);
            return { master, keyId: key.id };
          }
        }
        throw new Error('no key opened');
      },
      { warn: (m) => void warnings.push(m) },
    );
    assert.equal(tried[0], FORGED_ID, 'the forged key file was offered first');
    assert.equal(tried.length, 2);
    assert.ok(opened.masterKey().equals(repo.masterKey()));
    assert.equal(warnings.filter((w) => w.includes(keyFileKey(FORGED_ID))).length, 1);
  });

  it('when only forged key files open, the error says the keys are not the repository’s (not "wrong passphrase")', async () => {
    const storage = new MemoryStorage();
    const repo = await Repository.init(storage, 'the true passphrase', who);
    await forgeKeyFile(storage, repo.id);
    await assert.rejects(
      Repository.open(storage, PASSPHRASE, { warn: () => {} }),
      (error: unknown) =>
        error instanceof CairnError &&
        error.code === 'Cairn.WrongKey' &&
        error.message.includes(keyFileKey(FORGED_ID)) &&
        error.message.includes('none of them authenticates'),
    );
  });

  it('a repository from before key-check: the oldest sealed object decides, and a key-check added later by a forger does not', async () => {
    const clock = { t: Date.parse('2026-01-01T00:00:00Z') };
    const storage = new MemoryStorage({ now: () => clock.t });
    const repo = await Repository.init(storage, PASSPHRASE, who);
    // What init wrote before key-check existed: no key-check object, and its history event.
    await storage.delete(KEY_CHECK_KEY);
    clock.t += 1000;
    await recordEvent(repo, who, 'cairn test', 'init', {});

    clock.t += 86_400_000; // a day later, a forger with create rights and the passphrase
    const forgedMaster = await forgeKeyFile(storage, repo.id);
    await storage.put(KEY_CHECK_KEY, sealKeyCheck(forgedMaster, repo.id, new Date(clock.t).toISOString()), { ifAbsent: true });

    const warnings: string[] = [];
    const opened = await Repository.open(storage, PASSPHRASE, { warn: (m) => void warnings.push(m) });
    assert.ok(opened.masterKey().equals(repo.masterKey()), 'the true key opens it');
    assert.ok(warnings.some((w) => w.includes(keyFileKey(FORGED_ID)) && w.includes('history/')));
  });

  it('a repository from before key-check with nothing sealed in it yet: key add writes key-check, which then anchors', async () => {
    const clock = { t: Date.parse('2026-01-01T00:00:00Z') };
    const storage = new MemoryStorage({ now: () => clock.t });
    const repo = await Repository.init(storage, PASSPHRASE, who);
    await storage.delete(KEY_CHECK_KEY);
    await repo.ensureKeyCheck();
    assert.ok(await storage.stat(KEY_CHECK_KEY));
    clock.t += 1000;
    await forgeKeyFile(storage, repo.id);
    const opened = await Repository.open(storage, PASSPHRASE, { warn: () => {} });
    assert.ok(opened.masterKey().equals(repo.masterKey()));
  });
});
