import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { S3Storage, parseS3Url } from '../../../agent/storage/s3.ts';
import { startS3rver, s3rverEnv, type S3rver } from '../../helpers/s3rver.ts';
import { startFaultProxy, type FaultKind, type FaultProxy } from '../../helpers/fault-proxy.ts';
import { startGcsTestServer, type GcsTestServer } from '../../helpers/gcs-server.ts';
import { startForwardProxy, type ForwardProxy } from '../../helpers/forward-proxy.ts';
import { makeRandomTree } from '../../helpers/tree.ts';
import { tempDir, PASSPHRASE } from '../../helpers/repo.ts';
import { runCli } from '../../helpers/cli.ts';
import { storageConformance, type ConformanceFault } from './conformance.ts';

// s3rver behind the fault proxy (the conditional-write stand-in), and the GCS test server (a stand-in
// for GCS), reached through a local forwarding proxy named by HTTP_PROXY.
Object.assign(process.env, s3rverEnv());

interface Services {
  s3rver: S3rver;
  s3: FaultProxy;
  gcs: GcsTestServer;
  proxy: ForwardProxy;
}
let started: Promise<Services> | undefined;
const created: S3Storage[] = [];

/** The servers, started once for the conformance suite and the tests below. */
function services(): Promise<Services> {
  started ??= (async () => {
    const s3rver = await startS3rver();
    return {
      s3rver,
      s3: await startFaultProxy(s3rver.endpoint),
      gcs: await startGcsTestServer({ buckets: ['cairn-proxied'] }),
      proxy: await startForwardProxy(),
    };
  })();
  return started;
}

after(async () => {
  for (const storage of created) storage.destroy();
  if (!started) return;
  const { proxy, gcs, s3, s3rver } = await started;
  await proxy.stop();
  await gcs.stop();
  await s3.stop();
  await s3rver.stop();
});

const S3_FAULTS: Record<ConformanceFault, FaultKind> = { unavailable: '503', reset: 'reset', denied: '403' };
const S3_REQUESTS = { read: 'GET', write: 'PUT', list: 'GET?list-type' } as const;
let conformanceServices: Services | undefined;
let proxiedBefore = 0;

// The whole Storage contract holds through a forward proxy too (S3Storage given HTTP_PROXY in its env):
// the fault proxy behind it injects the retry and permission faults.
storageConformance(
  's3:// storage through an HTTP proxy (HTTP_PROXY → the conditional-write stand-in → s3rver)',
  async () => {
    conformanceServices = await services();
    const { s3rver, s3, proxy } = conformanceServices;
    proxiedBefore = proxy.counts()[new URL(s3.endpoint).host] ?? 0;
    const storage = new S3Storage({
      ...parseS3Url(s3rver.url('proxied-conformance', s3.endpoint), {}),
      env: { HTTP_PROXY: proxy.url },
      multipartThreshold: 5 << 20,
      partSize: 5 << 20,
    });
    created.push(storage);
    return {
      storage,
      teardown: async () => {
        const proxied = (proxy.counts()[new URL(s3.endpoint).host] ?? 0) - proxiedBefore;
        // More than the 1100 puts of the paging test alone: every request went through the proxy.
        assert.ok(proxied > 1100, `the forward proxy carried the suite's requests (${proxied})`);
      },
    };
  },
  {
    faults: {
      failNext: (count, fault, on) => conformanceServices?.s3.failNext(count, S3_FAULTS[fault], S3_REQUESTS[on]),
      pending: () => conformanceServices?.s3.pendingFaults() ?? 0,
    },
    bucket: {
      name: 'cairn-test',
      permissionHint: /s3:(GetObject|PutObject|ListBucket) on arn:aws:s3:::cairn-test\/proxied-conformance\/\*/,
    },
  },
);

describe('cloud clients honour HTTP_PROXY, HTTPS_PROXY and NO_PROXY', () => {
  let s3rver: S3rver;
  let s3: FaultProxy;
  let gcs: GcsTestServer;
  let proxy: ForwardProxy;
  let work: Awaited<ReturnType<typeof tempDir>>;
  let source: string;
  before(async () => {
    ({ s3rver, s3, gcs, proxy } = await services());
    work = await tempDir('proxy');
    source = join(work.path, 'src');
    await makeRandomTree(source, 31, { files: 12, maxFileSize: 200_000 });
  });
  after(async () => {
    await work.remove();
  });

  const host = (endpoint: string): string => new URL(endpoint).host;

  it('S3: with HTTP_PROXY every request goes through the proxy and the backup succeeds; with NO_PROXY naming the host none does', async () => {
    const env = { ...s3rverEnv(), CAIRN_REPOSITORY: s3rver.url('proxied', s3.endpoint), CAIRN_PASSWORD: PASSPHRASE };
    const before = s3.requests;
    const proxiedBefore = proxy.counts()[host(s3.endpoint)] ?? 0; // the conformance suite's requests came first
    const init = await runCli(['init'], { ...env, HTTP_PROXY: proxy.url });
    assert.equal(init.code, 0, init.stderr);
    const backup = await runCli(['backup', source], { ...env, HTTP_PROXY: proxy.url });
    assert.equal(backup.code, 0, backup.stderr);
    const proxied = (proxy.counts()[host(s3.endpoint)] ?? 0) - proxiedBefore;
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
