import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { GcsStorage } from '../../../agent/storage/gcs.ts';
import { startGcsTestServer, type GcsTestServer } from '../../helpers/gcs-server.ts';
import { makeRandomTree, describeTree } from '../../helpers/tree.ts';
import { tempDir, initSmallRepo, backupDir, restoreTo, PASSPHRASE } from '../../helpers/repo.ts';
import { runCli, lastOfType } from '../../helpers/cli.ts';

// The GCS side is the protocol-level TEST SERVER (a stand-in for GCS, test/helpers/gcs-server.ts);
// the client is the real @google-cloud/storage, in this process and in the real `cairn` CLI.
describe('backup and restore on a gs:// repository (GCS test server)', () => {
  const bucket = 'cairn-roundtrip';
  let server: GcsTestServer;
  let work: Awaited<ReturnType<typeof tempDir>>;
  before(async () => {
    server = await startGcsTestServer({ buckets: [bucket] });
    work = await tempDir('gcs-roundtrip');
  });
  after(async () => {
    await server.stop();
    await work.remove();
  });

  for (const seed of [201, 202]) {
    it(`restores random tree #${seed} byte for byte, and an unchanged re-backup adds nothing`, async () => {
      const source = join(work.path, `src-${seed}`);
      await makeRandomTree(source, seed);
      const repo = await initSmallRepo(new GcsStorage({ bucket, prefix: `repo-${seed}`, endpoint: server.endpoint }));
      const first = await backupDir(repo, source);
      const second = await backupDir(repo, source);
      assert.equal(second.summary.bytesAdded, 0);
      const target = join(work.path, `dst-${seed}`);
      await restoreTo(repo, first.id, target);
      assert.deepEqual(await describeTree(target), await describeTree(source));
    });
  }

  it('the cairn CLI backs up to gs://, restores byte-identical, verifies, and refuses a second init', async () => {
    const source = join(work.path, 'cli-src');
    // Files up to 12 MB: packs above the 8 MiB threshold take the resumable path.
    await makeRandomTree(source, 9, { files: 20, maxFileSize: 12_000_000 });
    const env = { CAIRN_REPOSITORY: `gs://${bucket}/cli?endpoint=${encodeURIComponent(server.endpoint)}`, CAIRN_PASSWORD: PASSPHRASE };
    const init = await runCli(['init'], env);
    assert.equal(init.code, 0, init.stderr);
    const backup = await runCli(['backup', source], env);
    assert.equal(backup.code, 0, backup.stderr);
    assert.ok((lastOfType(backup, 'summary')?.bytesAdded as number) > 0);
    assert.ok(
      [...server.objects(bucket).keys()].some((name) => name.startsWith('cli/')),
      'objects landed under the prefix',
    );
    assert.equal((await runCli(['init'], env)).code, 17, 'a second init refuses to overwrite');
    const target = join(work.path, 'cli-dst');
    const restore = await runCli(['restore', 'latest', '--target', target], env);
    assert.equal(restore.code, 0, restore.stderr);
    assert.deepEqual(await describeTree(target), await describeTree(source));
    assert.equal((await runCli(['verify', '--read-data'], env)).code, 0);
    const missing = await runCli(['snapshots'], {
      ...env,
      CAIRN_REPOSITORY: `gs://${bucket}/nothing-here?endpoint=${encodeURIComponent(server.endpoint)}`,
    });
    assert.equal(missing.code, 10);
    assert.match(missing.stderr, /no cairn repository at gs:\/\/cairn-roundtrip\/nothing-here/);
    const noBucket = await runCli(['snapshots'], {
      ...env,
      CAIRN_REPOSITORY: `gs://no-such-bucket/x?endpoint=${encodeURIComponent(server.endpoint)}`,
    });
    assert.equal(noBucket.code, 16);
    assert.match(noBucket.stderr, /bucket no-such-bucket does not exist/);
  });
});
