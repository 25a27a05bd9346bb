import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { CairnError } from '../../agent/core/errors.ts';
import { parseKeyFile, type KmsKeyFile } from '../../agent/core/keyfile.ts';
import { CONFIG_KEY, KEYS_PREFIX } from '../../agent/core/layout.ts';
import { parsePlan } from '../../agent/core/plan.ts';
import { Repository } from '../../agent/core/repository.ts';
import type { Storage } from '../../agent/core/storage.ts';
import { kmsUnwrapMasterKey } from '../../agent/keys/kms.ts';
import { planKmsUnlocker } from '../../agent/orchestration/plan-source.ts';
import { openStorage } from '../../agent/storage/open.ts';
import { createRepository, ensureRepository, handler } from '../../functions/create-repository.ts';
import { fileRepo, tempDir } from '../helpers/repo.ts';
import { startKmsStandIn, type KmsStandIn } from '../helpers/kms-standin.ts';
import { startControlPlane, type ControlPlane } from './control-plane.ts';

/**
 * create-repository (the Backup and Retention machines' EnsureRepository state): a plan's
 * repository made on the first run with the plan's key source, and left alone afterwards.
 * Against s3rver and the SSM stand-in (./control-plane.ts); the KMS key source against the KMS
 * stand-in (../helpers/kms-standin.ts) on a local directory, since s3rver and the stand-in
 * accept different credentials.
 */
const PASSPHRASE = 'control plane passphrase, long enough';

async function keyFiles(storage: Storage): Promise<string[]> {
  const names: string[] = [];
  for await (const o of storage.list(KEYS_PREFIX)) names.push(o.key);
  return names.sort();
}

describe('create-repository with a passphrase plan', () => {
  let cp: ControlPlane;
  before(async () => {
    cp = await startControlPlane('crt');
  });
  after(async () => {
    await cp.stop();
  });

  it('creates the repository on the first call, with the passphrase from its parameter, and leaves it alone on the next', async () => {
    const plan = cp.addPlan({ id: 'fresh', engine: 'files', engineOptions: { paths: ['/srv'] } });
    cp.ssm.parameters.set('/cairn/crt/fresh/passphrase', PASSPHRASE);
    const storage = await openStorage(plan.repository.url, process.env);
    assert.equal(await storage.stat(CONFIG_KEY), undefined, 'no repository before the first run');

    const first = await createRepository({ planId: 'fresh' });
    assert.equal(first.created, true);
    assert.equal(first.keySource, 'passphrase');
    const repo = await Repository.open(storage, PASSPHRASE);
    assert.equal(repo.id, first.repositoryId, 'the passphrase parameter opens what was created');
    const keys = await keyFiles(storage);
    assert.equal(keys.length, 1);

    const second = await createRepository({ planId: 'fresh' });
    assert.deepEqual(second, { planId: 'fresh', created: false, repositoryId: first.repositoryId, keySource: 'passphrase' });
    assert.deepEqual(await keyFiles(storage), keys, 'no key file added by a second run');
  });

  it('leaves a repository an operator made (another passphrase) as it is', async () => {
    const plan = cp.addPlan({ id: 'by-hand', engine: 'files', engineOptions: { paths: ['/srv'] } });
    cp.ssm.parameters.set('/cairn/crt/by-hand/passphrase', PASSPHRASE);
    const storage = await openStorage(plan.repository.url, process.env);
    const made = await Repository.init(storage, 'an operator passphrase, also long', { host: 'ops', user: 'op' });
    const config = await storage.get(CONFIG_KEY);
    const result = await createRepository({ planId: 'by-hand' });
    assert.deepEqual(result, { planId: 'by-hand', created: false, repositoryId: made.id, keySource: 'passphrase' });
    assert.deepEqual(await storage.get(CONFIG_KEY), config);
    assert.equal((await keyFiles(storage)).length, 1);
  });

  it('refuses a damaged config instead of creating over it', async () => {
    const plan = cp.addPlan({ id: 'damaged', engine: 'files', engineOptions: { paths: ['/srv'] } });
    cp.ssm.parameters.set('/cairn/crt/damaged/passphrase', PASSPHRASE);
    const storage = await openStorage(plan.repository.url, process.env);
    await storage.put(CONFIG_KEY, Buffer.from('{"not":"a config"}'));
    await assert.rejects(
      () => createRepository({ planId: 'damaged' }),
      (e: unknown) => e instanceof CairnError && e.code === 'Cairn.Damaged',
    );
    assert.equal((await storage.get(CONFIG_KEY)).toString(), '{"not":"a config"}');
    assert.deepEqual(await keyFiles(storage), []);
  });

  it('fails naming the passphrase parameter when it was not created yet, and creates nothing', async () => {
    const plan = cp.addPlan({ id: 'no-secret', engine: 'files', engineOptions: { paths: ['/srv'] } });
    const storage = await openStorage(plan.repository.url, process.env);
    await assert.rejects(
      () => handler({ planId: 'no-secret' }),
      (e: unknown) =>
        e instanceof Error && e.name === 'Cairn.Config' && /\/cairn\/crt\/no-secret\/passphrase does not exist/.test(e.message),
    );
    assert.equal(await storage.stat(CONFIG_KEY), undefined);
    assert.deepEqual(await keyFiles(storage), []);
  });
});

describe('create-repository with a KMS plan', () => {
  let kms: KmsStandIn;
  let keyArn: string;
  const saved = { ...process.env };
  before(async () => {
    kms = await startKmsStandIn();
    Object.assign(process.env, kms.env());
    keyArn = kms.createKey();
  });
  after(async () => {
    await kms.close();
    // Back to the environment before the stand-in (Reflect.deleteProperty: these keys are computed).
    for (const name of Object.keys(kms.env())) {
      if (saved[name] === undefined) Reflect.deleteProperty(process.env, name);
      else process.env[name] = saved[name];
    }
  });

  const kmsPlan = (id: string) =>
    parsePlan(
      {
        id,
        targets: { instanceIds: ['i-0123456789abcdef0'] },
        engine: 'files',
        engineOptions: { paths: ['/srv'] },
        schedule: { expression: 'rate(1 day)' },
        retention: { keepLast: 3 },
        keySource: { kmsKeyArn: keyArn },
        rpo: '26h',
        repository: { url: `s3://unused-bucket/plans/${id}/` },
      },
      'test',
    );

  it("wraps the master key twice: one key file naming the plan (hosts'), one without (operators'); no passphrase is read", async () => {
    const dir = await tempDir('cairn-create-kms-');
    try {
      const storage = fileRepo(dir.path);
      const plan = kmsPlan('kms-plan');
      const noSecret = async (name: string): Promise<string> => assert.fail(`a KMS plan read the secret ${name}`);
      const made = await ensureRepository(plan, storage, noSecret);
      assert.equal(made.created, true);
      assert.equal(made.keySource, 'kms');
      assert.equal(kms.count('Encrypt', keyArn), 2);

      const files = await Promise.all((await keyFiles(storage)).map(async (k) => parseKeyFile(await storage.get(k), k) as KmsKeyFile));
      assert.equal(files.length, 2);
      const opens = async (file: KmsKeyFile, planId?: string): Promise<boolean> =>
        kmsUnwrapMasterKey(file, made.repositoryId, planId).then(
          () => true,
          () => false,
        );
      const withPlan = await Promise.all(files.map((f) => opens(f, 'kms-plan')));
      const withoutPlan = await Promise.all(files.map((f) => opens(f)));
      const withOtherPlan = await Promise.all(files.map((f) => opens(f, 'another-plan')));
      assert.deepEqual([...withPlan].sort(), [false, true], 'exactly one key file decrypts with the plan in the context');
      assert.deepEqual(
        withoutPlan,
        withPlan.map((x) => !x),
        'the other decrypts without it (an operator run)',
      );
      assert.deepEqual(withOtherPlan, [false, false], 'no key file decrypts naming another plan');

      // The agent and the functions open it through the plan source's unlocker (plan in the context first).
      const repo = await Repository.openWith(storage, planKmsUnlocker('kms-plan'));
      assert.equal(repo.id, made.repositoryId);

      const again = await ensureRepository(plan, storage, noSecret);
      assert.equal(again.created, false);
      assert.equal(kms.count('Encrypt', keyArn), 2, 'nothing wrapped again');
    } finally {
      await dir.remove();
    }
  });

  // The loser's key files stay behind (bound to its own repository id, they open nothing); the function may not delete.
  it('two runs racing create one repository, and both report it', async () => {
    const dir = await tempDir('cairn-create-race-');
    try {
      const storage = fileRepo(dir.path);
      const plan = kmsPlan('race-plan');
      const results = await Promise.all([ensureRepository(plan, storage), ensureRepository(plan, storage)]);
      const config = JSON.parse((await storage.get(CONFIG_KEY)).toString()) as { id: string };
      assert.deepEqual(
        results.map((r) => r.repositoryId),
        [config.id, config.id],
      );
      assert.equal(results.filter((r) => r.created).length, 1);
      assert.equal((await Repository.openWith(storage, planKmsUnlocker('race-plan'))).id, config.id);
    } finally {
      await dir.remove();
    }
  });
});
