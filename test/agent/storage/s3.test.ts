import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { S3Client } from '@aws-sdk/client-s3';
import { AlreadyExistsError, CairnError, NotFoundError } from '../../../agent/core/errors.ts';
import { S3Storage, parseS3Url, type S3StorageOptions } from '../../../agent/storage/s3.ts';
import { startS3rver, s3rverEnv, type S3rver } from '../../helpers/s3rver.ts';
import { startFaultProxy, type FaultKind, type FaultProxy } from '../../helpers/fault-proxy.ts';
import { storageConformance, type ConformanceFault } from './conformance.ts';

// s3rver is a real S3-compatible server. Every S3Storage here talks to it through
// the fault proxy, which is also the STAND-IN that enforces If-None-Match on
// writes (real S3 does, s3rver does not): see test/helpers/fault-proxy.ts.
// Credentials come the standard way, from the environment of this test process.
Object.assign(process.env, s3rverEnv());

const MiB = 1 << 20;
let started: Promise<{ server: S3rver; proxy: FaultProxy }> | undefined;
const created: S3Storage[] = [];

function services(): Promise<{ server: S3rver; proxy: FaultProxy }> {
  started ??= (async () => {
    const server = await startS3rver();
    const proxy = await startFaultProxy(server.endpoint);
    return { server, proxy };
  })();
  return started;
}

async function storageAt(prefix: string, extra: Partial<S3StorageOptions> = {}): Promise<S3Storage> {
  const { server, proxy } = await services();
  const storage = new S3Storage({ ...parseS3Url(server.url(prefix, proxy.endpoint), {}), ...extra });
  created.push(storage);
  return storage;
}

after(async () => {
  for (const storage of created) storage.destroy();
  if (!started) return;
  const { server, proxy } = await started;
  await proxy.stop();
  await server.stop();
});

function storageError(pattern: RegExp, hint?: RegExp): (error: unknown) => boolean {
  return (error) => {
    assert.ok(error instanceof CairnError, `a CairnError, not ${String(error)}`);
    assert.equal(error.code, 'Cairn.Storage');
    assert.match(error.message, pattern);
    if (hint) assert.match(error.hint ?? '', hint);
    assert.ok(error.cause !== undefined, 'the SDK error is kept as cause');
    return true;
  };
}

const S3_FAULTS: Record<ConformanceFault, FaultKind> = { unavailable: '503', reset: 'reset', denied: '403' };
const S3_REQUESTS = { read: 'GET', write: 'PUT', list: 'GET?list-type' } as const;
let conformanceProxy: FaultProxy | undefined;

storageConformance(
  's3:// storage (s3rver behind the conditional-write stand-in)',
  async () => {
    conformanceProxy = (await services()).proxy;
    return {
      // 5 MiB parts from 5 MiB on: the 20 MiB large object goes up as a 4-part multipart upload.
      storage: await storageAt('conformance', { multipartThreshold: 5 * MiB, partSize: 5 * MiB }),
      teardown: async () => undefined,
    };
  },
  {
    faults: {
      failNext: (count, fault, on) => conformanceProxy?.failNext(count, S3_FAULTS[fault], S3_REQUESTS[on]),
      pending: () => conformanceProxy?.pendingFaults() ?? 0,
    },
    bucket: { name: 'cairn-test', permissionHint: /s3:(GetObject|PutObject|ListBucket) on arn:aws:s3:::cairn-test\/conformance\/\*/ },
    missingBucket: async () => ({
      storage: await storageAt('conformance', { bucket: 'no-such-bucket', maxAttempts: 1 }),
      bucket: 'no-such-bucket',
    }),
  },
);

describe('s3:// storage specifics', () => {
  let proxy: FaultProxy;
  let server: S3rver;
  before(async () => {
    ({ proxy, server } = await services());
  });

  it('keys are relative to the repository prefix, and the prefix may be empty', async () => {
    const nested = await storageAt('nested//deeper/');
    const root = await storageAt('');
    assert.equal(nested.location, 's3://cairn-test/nested/deeper');
    assert.equal(root.location, 's3://cairn-test');
    await nested.put('config', Buffer.from('c'));
    const info = await nested.stat('config');
    assert.deepEqual({ key: info?.key, size: info?.size }, { key: 'config', size: 1 });
    assert.equal(info?.modified !== undefined && info.modified % 1000, 0, 'S3 times are whole seconds, in stat as in listings');
    assert.equal((await root.get('nested/deeper/config')).toString(), 'c');
    const fromNested: string[] = [];
    for await (const info of nested.list('')) fromNested.push(info.key);
    assert.deepEqual(fromNested, ['config']);
    const fromRoot: string[] = [];
    for await (const info of root.list('nested/')) fromRoot.push(info.key);
    assert.deepEqual(fromRoot, ['nested/deeper/config']);
    await assert.rejects(nested.put('/absolute', Buffer.from('x')), /invalid object key/);
    await assert.rejects(nested.put('a//b', Buffer.from('x')), /invalid object key/);
  });

  it('transient 503s and a connection reset on PutObject are retried and the put succeeds once', async () => {
    const storage = await storageAt('faults-put');
    const data = randomBytes(200_000);
    proxy.failNext(2, '503', 'PUT');
    proxy.failNext(1, 'reset', 'PUT');
    const before = proxy.requests;
    await storage.put('retried', data, { ifAbsent: true });
    assert.equal(proxy.requests - before, 4, 'two 503s and a reset, then the write');
    assert.equal(proxy.pendingFaults(), 0);
    assert.deepEqual(await storage.get('retried'), data);
  });

  it('a connection reset on UploadPart is retried and the multipart put succeeds', async () => {
    const storage = await storageAt('faults-part', { multipartThreshold: 5 * MiB, partSize: 5 * MiB });
    const data = randomBytes(12 * MiB);
    proxy.failNext(1, 'reset', 'PUT?partNumber');
    proxy.failNext(1, '500', 'PUT?partNumber');
    await storage.put('big', data);
    assert.equal(proxy.pendingFaults(), 0);
    assert.ok((await storage.get('big')).equals(data));
  });

  it('a connection lost before the answer or while the body streams is retried on get and getRange', async () => {
    const storage = await storageAt('faults-get');
    const data = randomBytes(1 * MiB);
    await storage.put('object', data);
    proxy.failNext(1, 'reset', 'GET');
    proxy.failNext(1, 'truncate-response', 'GET');
    const before = proxy.requests;
    assert.ok((await storage.get('object')).equals(data));
    assert.equal(proxy.requests - before, 3);
    proxy.failNext(2, 'truncate-response', 'GET');
    assert.deepEqual(await storage.getRange('object', 4096, 300_000), data.subarray(4096, 304_096));
    assert.equal(proxy.pendingFaults(), 0);
  });

  it('a create-if-absent put whose first attempt landed but whose answer was lost succeeds instead of reporting AlreadyExists', async () => {
    const storage = await storageAt('faults-lost-answer', { multipartThreshold: 5 * MiB, partSize: 5 * MiB });
    const small = randomBytes(10_000);
    proxy.failNext(1, 'reset-after-forward', 'PUT');
    const stood = proxy.preconditionFailures;
    await storage.put('small', small, { ifAbsent: true });
    assert.equal(proxy.preconditionFailures - stood, 1, 'the retry met the first attempt and got 412');
    assert.deepEqual(await storage.get('small'), small);
    await assert.rejects(storage.put('small', randomBytes(10_000), { ifAbsent: true }), AlreadyExistsError);

    const large = randomBytes(11 * MiB);
    proxy.failNext(1, 'reset-after-forward', 'POST?uploadId');
    await storage.put('large', large, { ifAbsent: true });
    assert.equal(proxy.pendingFaults(), 0);
    assert.ok((await storage.get('large')).equals(large));
  });

  it('a conditional write that meets a concurrent one (409) is retried, and ends as AlreadyExists if it keeps happening', async () => {
    const storage = await storageAt('faults-conflict');
    proxy.failNext(1, '409', 'PUT');
    await storage.put('once', Buffer.from('x'), { ifAbsent: true });
    assert.equal((await storage.get('once')).toString(), 'x');
    proxy.failNext(3, '409', 'PUT');
    await assert.rejects(storage.put('always', Buffer.from('y'), { ifAbsent: true }), AlreadyExistsError);
    assert.equal(proxy.pendingFaults(), 0);
  });

  it('a persistent 500 surfaces as a Cairn.Storage error naming the operation, key and location after maxAttempts', async () => {
    const storage = await storageAt('faults-persistent', { maxAttempts: 3 });
    await storage.put('object', Buffer.from('data'));
    proxy.failNext(3, '500', 'GET');
    let before = proxy.requests;
    await assert.rejects(
      storage.get('object'),
      storageError(/^read object in s3:\/\/cairn-test\/faults-persistent: .*HTTP 500, 3 attempts/, /run the command again/),
    );
    assert.equal(proxy.requests - before, 3);
    proxy.failNext(3, '500', 'PUT');
    before = proxy.requests;
    await assert.rejects(storage.put('never', Buffer.from('x')), storageError(/^write never in s3:\/\/cairn-test\/faults-persistent: /));
    assert.equal(proxy.requests - before, 3);
    assert.equal(await storage.stat('never'), undefined);
  });

  it('a missing bucket gives a Cairn.Storage error naming the bucket on every operation', async () => {
    const missing = new S3Storage({ ...parseS3Url(server.url('x', proxy.endpoint), {}), bucket: 'no-such-bucket', maxAttempts: 1 });
    created.push(missing);
    const named = storageError(/the bucket no-such-bucket does not exist/, /create the bucket no-such-bucket/);
    await assert.rejects(missing.get('config'), named);
    await assert.rejects(missing.put('config', Buffer.from('x')), named);
    await assert.rejects(missing.stat('config'), named, 'a bare 404 on HEAD is told apart from a missing object');
    await assert.rejects(missing.delete('config'), named);
    await assert.rejects(async () => {
      for await (const info of missing.list('')) assert.fail(`listed ${info.key}`);
    }, named);
  });

  it('access denied names the bucket, key and operation and hints at the IAM permission', async () => {
    const storage = await storageAt('denied', { maxAttempts: 1 });
    proxy.failNext(1, '403', 'GET');
    await assert.rejects(
      storage.get('packs/p1'),
      storageError(
        /access denied: read packs\/p1 .*bucket cairn-test, key denied\/packs\/p1/,
        /s3:GetObject on arn:aws:s3:::cairn-test\/denied\/\*/,
      ),
    );
  });

  it('refused credentials are a storage error that never shows the secret', async () => {
    const secret = 'wJalrXUtnFEMI-not-a-real-secret';
    const client = new S3Client({
      region: 'us-east-1',
      endpoint: proxy.endpoint,
      forcePathStyle: true,
      maxAttempts: 1,
      credentials: { accessKeyId: 'AKIAWRONG', secretAccessKey: secret },
    });
    const storage = new S3Storage({ bucket: server.bucket, prefix: 'creds', client });
    await assert.rejects(storage.get('config'), (error: CairnError) => {
      storageError(/credentials were refused/, /credentials/)(error);
      assert.ok(!`${error.message} ${error.hint ?? ''}`.includes(secret));
      return true;
    });
    client.destroy();
  });

  it('a failed multipart upload is aborted and leaves no object', async () => {
    const storage = await storageAt('faults-multipart', { multipartThreshold: 5 * MiB, partSize: 5 * MiB, maxAttempts: 1 });
    proxy.failNext(1, '500', 'PUT?partNumber');
    const from = proxy.log.length;
    await assert.rejects(storage.put('big', randomBytes(12 * MiB)), storageError(/^write big in /));
    assert.equal(await storage.stat('big'), undefined);
    await assert.rejects(storage.get('big'), NotFoundError);
    const aborts = proxy.log.slice(from).filter((request) => request.method === 'DELETE' && request.url.includes('uploadId='));
    assert.equal(aborts.length, 1, 'AbortMultipartUpload was sent');
    const listed: string[] = [];
    for await (const info of storage.list('')) listed.push(info.key);
    assert.deepEqual(listed, []);
  });

  it('a create-if-absent multipart put over an existing key fails at completion, is aborted and keeps the original', async () => {
    const storage = await storageAt('exists-multipart', { multipartThreshold: 5 * MiB, partSize: 5 * MiB });
    await storage.put('big', Buffer.from('original'));
    const from = proxy.log.length;
    await assert.rejects(storage.put('big', randomBytes(6 * MiB), { ifAbsent: true }), AlreadyExistsError);
    assert.equal((await storage.get('big')).toString(), 'original');
    assert.ok(
      proxy.log.slice(from).some((request) => request.method === 'DELETE' && request.url.includes('uploadId=')),
      'AbortMultipartUpload was sent',
    );
  });
});

describe('parseS3Url', () => {
  it('reads bucket, prefix and options from the URL', () => {
    assert.deepEqual(parseS3Url('s3://my-bucket/some/prefix?region=eu-west-1&endpoint=http://127.0.0.1:9000&path-style=true', {}), {
      bucket: 'my-bucket',
      prefix: 'some/prefix',
      region: 'eu-west-1',
      endpoint: 'http://127.0.0.1:9000',
      forcePathStyle: true,
    });
    assert.deepEqual(parseS3Url('s3://my-bucket', {}), { bucket: 'my-bucket', prefix: '' });
    assert.deepEqual(parseS3Url('s3://my-bucket/', {}), { bucket: 'my-bucket', prefix: '' });
  });

  it('normalizes the prefix: no leading, trailing or double slashes, percent-decoded', () => {
    assert.equal(parseS3Url('s3://b.example/a//b/', {}).prefix, 'a/b');
    assert.equal(parseS3Url('s3://bucket//lead', {}).prefix, 'lead');
    assert.equal(parseS3Url('s3://bucket/with%20space/x', {}).prefix, 'with space/x');
  });

  it('falls back to the environment, the URL winning over it', () => {
    assert.deepEqual(parseS3Url('s3://bucket/p', { AWS_REGION: 'ap-south-1', AWS_DEFAULT_REGION: 'us-west-2' }), {
      bucket: 'bucket',
      prefix: 'p',
      region: 'ap-south-1',
    });
    assert.equal(parseS3Url('s3://bucket/p', { AWS_DEFAULT_REGION: 'us-west-2' }).region, 'us-west-2');
    assert.equal(parseS3Url('s3://bucket/p?region=eu-central-1', { AWS_REGION: 'ap-south-1' }).region, 'eu-central-1');
    assert.deepEqual(parseS3Url('s3://bucket', { CAIRN_S3_ENDPOINT: 'http://rgw:7480', CAIRN_S3_PATH_STYLE: 'true' }), {
      bucket: 'bucket',
      prefix: '',
      region: 'us-east-1',
      endpoint: 'http://rgw:7480',
      forcePathStyle: true,
    });
    assert.equal(parseS3Url('s3://bucket?path-style=false', { CAIRN_S3_PATH_STYLE: 'true' }).forcePathStyle, false);
    assert.equal(
      parseS3Url('s3://bucket?endpoint=https://minio:9000', { AWS_REGION: 'eu-west-3' }).region,
      'eu-west-3',
      'the us-east-1 default only when no region is set',
    );
  });

  it('refuses malformed URLs with a usage error that never repeats credentials', () => {
    const usage = (pattern: RegExp) => (error: unknown) =>
      error instanceof CairnError && error.code === 'Cairn.Usage' && pattern.test(error.message);
    assert.throws(() => parseS3Url('s3:///no-bucket', {}), usage(/no valid bucket/));
    assert.throws(() => parseS3Url('s3://Bad_Bucket/x', {}), usage(/no valid bucket/));
    assert.throws(() => parseS3Url('gs://bucket/x', {}), usage(/not s3/));
    assert.throws(() => parseS3Url('s3://bucket/x?regoin=eu-west-1', {}), usage(/unknown option "regoin"/));
    assert.throws(() => parseS3Url('s3://bucket/x?path-style=maybe', {}), usage(/path-style must be true or false/));
    assert.throws(() => parseS3Url('s3://bucket/x?endpoint=ftp://host', {}), usage(/http:\/\/ or https:\/\//));
    assert.throws(
      () => parseS3Url('s3://AKIAEXAMPLE:topsecret@bucket/x', {}),
      (error: unknown) =>
        error instanceof CairnError &&
        error.code === 'Cairn.Usage' &&
        /credentials do not belong in the URL/.test(error.message) &&
        !error.message.includes('topsecret'),
    );
  });

  it('gives a location with no credentials and no query', async () => {
    const storage = new S3Storage(parseS3Url('s3://bucket/repo/one?region=eu-west-1&endpoint=http://127.0.0.1:1&path-style=true', {}));
    assert.equal(storage.location, 's3://bucket/repo/one');
    storage.destroy();
  });
});
