import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { S3Storage, parseS3Url } from '../../agent/storage/s3.ts';
import { startS3rver, s3rverEnv, type S3rver } from '../helpers/s3rver.ts';
import { startFaultProxy, type FaultProxy } from '../helpers/fault-proxy.ts';
import { startGcsTestServer, type GcsTestServer } from '../helpers/gcs-server.ts';
import { startForwardProxy, type ForwardProxy } from '../helpers/forward-proxy.ts';
import { makeRandomTree } from '../helpers/tree.ts';
import { tempDir, PASSPHRASE } from '../helpers/repo.ts';
import { runCli } from '../helpers/cli.ts';

// s3rver behind the fault proxy (the conditional-write stand-in), and the GCS test server (a stand-in
// for GCS), reached through a local forwarding proxy named by HTTP_PROXY.
Object.assign(process.env, s3rverEnv());
describe('cloud clients honour HTTP_PROXY, HTTPS_PROXY and NO_PROXY', () => {
  let s3rver: S3rver;
  let s3: FaultProxy;
  let gcs: GcsTestServer;
  let proxy: ForwardProxy;
  let work: Awaited<ReturnType<typeof tempDir>>;
  let source: string;
  before(async () => {
    s3rver = await startS3rver();
    s3 = await startFaultProxy(s3rver.endpoint);
    gcs = await startGcsTestServer({ buckets: ['cairn-proxied'] });
    proxy = await startForwardProxy();
    work = await tempDir('proxy');
    source = join(work.path, 'src');
    await makeRandomTree(source, 31, { files: 12, maxFileSize: 200_000 });
  });
  after(async () => {
    await proxy.stop();
    await gcs.stop();
    await s3.stop();
    await s3rver.stop();
    await work.remove();
  });

  const host = (endpoint: string): string => new URL(endpoint).host;

  it('S3: with HTTP_PROXY every request goes through the proxy and the backup succeeds; with NO_PROXY naming the host none does', async () => {
    const env = { ...s3rverEnv(), CAIRN_REPOSITORY: s3rver.url('proxied', s3.endpoint), CAIRN_PASSWORD: PASSPHRASE };
    const before = s3.requests;
    const init = await runCli(['init'], { ...env, HTTP_PROXY: proxy.url });
    assert.equal(init.code, 0, init.stderr);
    const backup = await runCli(['backup', source], { ...env, HTTP_PROXY: proxy.url });
    assert.equal(backup.code, 0, backup.stderr);
    const proxied = proxy.counts()[host(s3.endpoint)] ?? 0;
    assert.ok(proxied > 0, 'the proxy forwarded requests to the S3 endpoint');
    assert.equal(proxied, s3.requests - before, 'every request the endpoint saw came through the proxy');

    const total = proxy.total();
    const direct = await runCli(['backup', source], { ...env, HTTP_PROXY: proxy.url, NO_PROXY: '127.0.0.1' });
    assert.equal(direct.code, 0, direct.stderr);
    assert.equal(proxy.total(), total, 'NO_PROXY=127.0.0.1 bypasses the proxy');
  });

  it('S3 in-process: the storage reads the proxy variables from the env it is given, lowercase included', async () => {
    for (const name of ['HTTP_PROXY', 'http_proxy']) {
      const storage = new S3Storage({ ...parseS3Url(s3rver.url(`in-process-${name}`, s3.endpoint), {}), env: { [name]: proxy.url } });
      const before = proxy.counts()[host(s3.endpoint)] ?? 0;
      await storage.put('x', Buffer.from('x'));
      assert.equal((await storage.get('x')).toString(), 'x');
      assert.equal((proxy.counts()[host(s3.endpoint)] ?? 0) - before, 2, `${name}: both requests went through the proxy`);
      storage.destroy();
    }
    const direct = new S3Storage({ ...parseS3Url(s3rver.url('in-process-direct', s3.endpoint), {}), env: {} });
    const total = proxy.total();
    await direct.put('x', Buffer.from('x'));
    assert.equal(proxy.total(), total, 'no proxy variable, no proxy');
    direct.destroy();
  });

  it('GCS: with HTTP_PROXY the client goes through the proxy and the backup succeeds; with NO_PROXY naming the host none does', async () => {
    const env = { CAIRN_REPOSITORY: `gs://cairn-proxied/repo?endpoint=${encodeURIComponent(gcs.endpoint)}`, CAIRN_PASSWORD: PASSPHRASE };
    const before = gcs.requests;
    const init = await runCli(['init'], { ...env, HTTP_PROXY: proxy.url });
    assert.equal(init.code, 0, init.stderr);
    const backup = await runCli(['backup', source], { ...env, HTTP_PROXY: proxy.url });
    assert.equal(backup.code, 0, backup.stderr);
    const proxied = proxy.counts()[host(gcs.endpoint)] ?? 0;
    assert.ok(proxied > 0, 'the proxy forwarded requests to the GCS endpoint');
    assert.equal(proxied, gcs.requests - before, 'every request the server saw came through the proxy');

    const total = proxy.total();
    const direct = await runCli(['backup', source], { ...env, HTTPS_PROXY: proxy.url, NO_PROXY: '127.0.0.1' });
    assert.equal(direct.code, 0, direct.stderr);
    assert.equal(proxy.total(), total, 'NO_PROXY=127.0.0.1 bypasses the proxy');
  });
});
