import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { S3Storage, parseS3Url } from '../../../agent/storage/s3.ts';
import { startS3rver, s3rverEnv, type S3rver } from '../../helpers/s3rver.ts';
import { startFaultProxy, type FaultProxy } from '../../helpers/fault-proxy.ts';
import { makeRandomTree, describeTree } from '../../helpers/tree.ts';
import { tempDir, initSmallRepo, backupDir, restoreTo, PASSPHRASE } from '../../helpers/repo.ts';
import { runCli, lastOfType } from '../../helpers/cli.ts';

// s3rver is a real S3-compatible server; the proxy is the conditional-write stand-in (see test/helpers/fault-proxy.ts).
describe('backup and restore on an s3:// repository (s3rver)', () => {
  let server: S3rver;
  let proxy: FaultProxy;
  let work: Awaited<ReturnType<typeof tempDir>>;
  before(async () => {
    Object.assign(process.env, s3rverEnv());
    server = await startS3rver();
    proxy = await startFaultProxy(server.endpoint);
    work = await tempDir('s3-roundtrip');
  });
  after(async () => {
    await proxy.stop();
    await server.stop();
    await work.remove();
  });

  for (const seed of [101, 102, 103, 104, 105]) {
    it(`restores random tree #${seed} byte for byte`, async () => {
      const source = join(work.path, `src-${seed}`);
      await makeRandomTree(source, seed);
      const storage = new S3Storage(parseS3Url(server.url(`repo-${seed}`, proxy.endpoint), process.env));
      const repo = await initSmallRepo(storage);
      const first = await backupDir(repo, source);
      const second = await backupDir(repo, source);
      assert.equal(second.summary.bytesAdded, 0, 'an unchanged re-backup adds nothing');
      const target = join(work.path, `dst-${seed}`);
      await restoreTo(repo, first.id, target);
      assert.deepEqual(await describeTree(target), await describeTree(source));
    });
  }

  it('the CLI works against s3:// with the standard credential chain', async () => {
    const source = join(work.path, 'cli-src');
    await makeRandomTree(source, 7, { files: 20, maxFileSize: 2_000_000 });
    const env = { ...s3rverEnv(), CAIRN_REPOSITORY: server.url('cli', proxy.endpoint), CAIRN_PASSWORD: PASSPHRASE };
    assert.equal((await runCli(['init'], env)).code, 0);
    const backup = await runCli(['backup', source], env);
    assert.equal(backup.code, 0, backup.stderr);
    assert.ok((lastOfType(backup, 'summary')?.bytesAdded as number) > 0);
    assert.equal((await runCli(['init'], env)).code, 17, 'a second init refuses to overwrite');
    const target = join(work.path, 'cli-dst');
    assert.equal((await runCli(['restore', 'latest', '--target', target], env)).code, 0);
    assert.deepEqual(await describeTree(target), await describeTree(source));
    assert.equal((await runCli(['verify', '--read-data'], env)).code, 0);
    const missing = await runCli(['snapshots'], { ...env, CAIRN_REPOSITORY: server.url('nothing-here', proxy.endpoint) });
    assert.equal(missing.code, 10);
    assert.match(missing.stderr, /no cairn repository at s3:\/\/cairn-test\/nothing-here/);
  });
});
