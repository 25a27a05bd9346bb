import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { CairnError } from '../../agent/core/errors.ts';
import { S3Storage, parseS3Url } from '../../agent/storage/s3-storage.ts';
import { startS3rver, type S3Server } from '../helpers/s3-server.ts';
import { startS3Proxy, type S3Proxy } from '../helpers/s3-proxy.ts';
import { storageConformance } from './conformance.ts';

// s3rver is a real S3-compatible server; the proxy in front of it is a stand-in
// that enforces If-None-Match on writes (real S3 does, s3rver does not) and injects faults.
let server: S3Server;
let proxy: S3Proxy;
let prefixes = 0;

storageConformance(
  's3:// (s3rver behind the conditional-write stand-in)',
  async () => {
    server = await startS3rver();
    proxy = await startS3Proxy(server.endpoint);
    const storage = new S3Storage({ ...parseS3Url(server.url(`conformance-${prefixes++}`, proxy.endpoint), {}), multipartThreshold: 6 << 20, partSize: 5 << 20 });
    return { storage, teardown: async () => undefined };
  },
  { largeObject: 17 << 20 },
);

describe('s3:// specifics', () => {
  let storage: S3Storage;
  before(() => {
    storage = new S3Storage({ ...parseS3Url(server.url('faults', proxy.endpoint), {}), maxAttempts: 4 });
  });
  after(async () => {
    await proxy.stop();
    await server.stop();
  });

  it('retries throttling, 5xx and connection resets, and the write lands once', async () => {
    const data = randomBytes(200_000);
    proxy.failNext(1, '503', 'PUT');
    proxy.failNext(1, 'reset', 'PUT');
    proxy.failNext(1, '500', 'PUT');
    const before = proxy.requests;
    await storage.put('retried', data, { ifAbsent: true });
    assert.equal(proxy.requests - before, 4, 'three failures, then success');
    assert.deepEqual(await storage.get('retried'), data);
    proxy.failNext(2, 'reset', 'GET');
    assert.deepEqual(await storage.getRange('retried', 10, 100), data.subarray(10, 110));
  });

  it('a persistent 500 surfaces as a storage error after the retries', async () => {
    proxy.failNext(4, '500', 'GET');
    await assert.rejects(storage.get('retried'), (e: CairnError) => e.code === 'Cairn.Storage' && /cannot read retried in s3:\/\/cairn-test\/faults/.test(e.message));
  });

  it('a missing bucket is named in the error', async () => {
    const missing = new S3Storage({ ...parseS3Url(server.url('x', proxy.endpoint), {}), bucket: 'no-such-bucket', maxAttempts: 1 });
    await assert.rejects(missing.get('config'), (e: CairnError) => e.code === 'Cairn.Storage' && /bucket no-such-bucket does not exist/.test(e.message) && /create the bucket/.test(e.hint ?? ''));
  });

  it('a failed multipart upload is aborted and leaves no object', async () => {
    const multipart = new S3Storage({ ...parseS3Url(server.url('multipart', proxy.endpoint), {}), multipartThreshold: 6 << 20, partSize: 5 << 20, maxAttempts: 1 });
    proxy.failNext(1, '500', 'PUT');
    await assert.rejects(multipart.put('big', randomBytes(12 << 20)));
    assert.equal(await multipart.stat('big'), undefined);
  });

  it('parses repository URLs and environment fallbacks', () => {
    assert.deepEqual(parseS3Url('s3://my-bucket/some/prefix/?region=eu-west-1', {}), { bucket: 'my-bucket', prefix: 'some/prefix', region: 'eu-west-1', endpoint: undefined, forcePathStyle: undefined });
    assert.deepEqual(parseS3Url('s3://my-bucket', { CAIRN_S3_ENDPOINT: 'http://rgw:7480', CAIRN_S3_PATH_STYLE: 'true' }), { bucket: 'my-bucket', prefix: '', region: 'us-east-1', endpoint: 'http://rgw:7480', forcePathStyle: true });
    assert.throws(() => parseS3Url('s3:///nobucket', {}), /no valid bucket/);
  });
});
