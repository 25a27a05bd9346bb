import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { AlreadyExistsError, CairnError } from '../../../agent/core/errors.ts';
import { GcsStorage, parseGcsUrl, type GcsStorageOptions } from '../../../agent/storage/gcs.ts';
import { startGcsTestServer, type GcsFaultKind, type GcsRequestInfo, type GcsTestServer } from '../../helpers/gcs-server.ts';
import { tempDir } from '../../helpers/repo.ts';
import { storageConformance, type ConformanceFault } from './conformance.ts';

// The GCS side is the protocol-level TEST SERVER of test/helpers/gcs-server.ts (a
// stand-in for GCS: no emulator installs offline); the client is the real
// @google-cloud/storage. Retries wait at least 1 s in that client (async-retry),
// so the tests keep the number of injected faults small.
const BUCKET = 'cairn-gcs-test';
const MiB = 1 << 20;
let started: Promise<GcsTestServer> | undefined;

function gcsServer(): Promise<GcsTestServer> {
  started ??= startGcsTestServer({ buckets: [BUCKET] });
  return started;
}

async function storageAt(prefix: string, extra: Partial<GcsStorageOptions> = {}): Promise<GcsStorage> {
  const server = await gcsServer();
  return new GcsStorage({ bucket: BUCKET, prefix, endpoint: server.endpoint, maxRetryDelaySeconds: 1, ...extra });
}

after(async () => {
  if (started) await (await started).stop();
});

const isMedia = (r: GcsRequestInfo): boolean => r.method === 'GET' && r.query.get('alt') === 'media';
const isUpload = (r: GcsRequestInfo): boolean => r.upload;
const isList = (r: GcsRequestInfo): boolean => r.method === 'GET' && /^\/b\/[^/]+\/o$/.test(r.path);
const GCS_FAULTS: Record<ConformanceFault, GcsFaultKind> = { unavailable: '503', reset: 'reset', denied: '403' };
const GCS_REQUESTS = { read: isMedia, write: isUpload, list: isList } as const;
let conformanceServer: GcsTestServer | undefined;

storageConformance(
  'gs:// storage (the GCS protocol test server)',
  async () => {
    conformanceServer = await gcsServer();
    // The 20 MiB large object goes up as a resumable upload in three 8 MiB chunks (the defaults).
    return { storage: await storageAt('conformance'), teardown: async () => undefined };
  },
  {
    faults: {
      failNext: (count, fault, on) => conformanceServer?.failNext(count, GCS_FAULTS[fault], GCS_REQUESTS[on]),
      pending: () => conformanceServer?.pendingFaults() ?? 0,
    },
    bucket: {
      name: BUCKET,
      permissionHint: /roles\/storage\.object(Viewer|Creator) \(storage\.objects\.(get|create|list)\) on gs:\/\/cairn-gcs-test/,
    },
    missingBucket: async () => ({
      storage: await storageAt('conformance', { bucket: 'no-such-bucket', maxAttempts: 1 }),
      bucket: 'no-such-bucket',
    }),
  },
);

function storageError(pattern: RegExp, hint?: RegExp): (error: unknown) => boolean {
  return (error) => {
    assert.ok(error instanceof CairnError, `a CairnError, not ${String(error)}`);
    assert.equal(error.code, 'Cairn.Storage');
    assert.match(error.message, pattern);
    if (hint) assert.match(error.hint ?? '', hint);
    return true;
  };
}

function serviceAccountKey(email: string): Record<string, string> {
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  return {
    type: 'service_account',
    project_id: 'cairn-test-project',
    private_key_id: 'test-key-1',
    private_key: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
    client_email: email,
    client_id: '1234567890',
    token_uri: 'https://oauth2.googleapis.com/token',
  };
}

describe('gs:// storage specifics', () => {
  let server: GcsTestServer;
  before(async () => {
    server = await gcsServer();
  });

  it('keys are relative to the repository prefix, stored under prefix/key in the bucket', async () => {
    const nested = await storageAt('nested//deeper/');
    assert.equal(nested.location, 'gs://cairn-gcs-test/nested/deeper');
    await nested.put('config', Buffer.from('c'));
    assert.deepEqual(
      [...server.objects(BUCKET).keys()].filter((name) => name.startsWith('nested/')),
      ['nested/deeper/config'],
    );
    const root = await storageAt('');
    assert.equal(root.location, 'gs://cairn-gcs-test');
    assert.equal((await root.get('nested/deeper/config')).toString(), 'c');
    await assert.rejects(nested.put('/absolute', Buffer.from('x')), /invalid object key/);
    await assert.rejects(nested.put('a/../b', Buffer.from('x')), /invalid object key/);
  });

  it('small objects go up in one multipart request, large ones as a chunked resumable upload', async () => {
    const storage = await storageAt('upload-kinds', { resumableThreshold: 1 * MiB, chunkSize: 512 * 1024 });
    const from = server.log.length;
    await storage.put('small', randomBytes(1000));
    const large = randomBytes(2 * MiB + 5);
    await storage.put('large', large, { ifAbsent: true });
    const uploads = server.log.slice(from).filter((r) => r.upload);
    assert.equal(uploads[0]?.query.get('uploadType'), 'multipart');
    assert.equal(uploads[1]?.query.get('uploadType'), 'resumable');
    assert.equal(uploads[1]?.query.get('ifGenerationMatch'), '0', 'the session is created with the precondition');
    const chunks = uploads.filter((r) => r.query.has('upload_id'));
    assert.equal(chunks.length, 5, 'four 512 KiB chunks and the last 5 bytes');
    assert.match(String(chunks.at(-1)?.headers['content-range']), /^bytes 2097152-2097156\/2097157$/);
    assert.ok((await storage.get('large')).equals(large));
    assert.equal(server.openSessions(), 0);
  });

  it('a reset in the middle of a resumable chunk is resumed, and the object is whole', async () => {
    const storage = await storageAt('resumable-reset', { resumableThreshold: 1 * MiB, chunkSize: 1 * MiB });
    const data = randomBytes(3 * MiB);
    server.failNext(1, 'reset', (r) => r.method === 'PUT' && r.query.has('upload_id'));
    await storage.put('object', data, { ifAbsent: true });
    assert.equal(server.pendingFaults(), 0);
    assert.ok((await storage.get('object')).equals(data));
  });

  it('a create-if-absent put whose first attempt landed but whose answer was lost succeeds instead of reporting AlreadyExists', async () => {
    const storage = await storageAt('lost-answer', { resumableThreshold: 1 * MiB, chunkSize: 1 * MiB });
    const small = randomBytes(10_000);
    server.failNext(1, 'reset-after-handling', isUpload);
    const failures = server.preconditionFailures;
    await storage.put('small', small, { ifAbsent: true });
    assert.equal(server.preconditionFailures - failures, 1, 'the retry met the first attempt and got 412');
    assert.deepEqual(await storage.get('small'), small);
    await assert.rejects(storage.put('small', randomBytes(10_000), { ifAbsent: true }), AlreadyExistsError);

    const large = randomBytes(2 * MiB + 100);
    // The last chunk finalizes the object; its answer is lost, the client asks again.
    server.failNext(1, 'reset-after-handling', (r) => r.method === 'PUT' && /\/2097252$/.test(String(r.headers['content-range'])));
    await storage.put('large', large, { ifAbsent: true });
    assert.equal(server.pendingFaults(), 0);
    assert.ok((await storage.get('large')).equals(large));
  });

  it('a download whose body breaks is repeated, for get and getRange', async () => {
    const storage = await storageAt('truncated');
    const data = randomBytes(1 * MiB);
    await storage.put('object', data);
    server.failNext(1, 'truncate-response', isMedia);
    assert.ok((await storage.get('object')).equals(data));
    server.failNext(1, 'truncate-response', isMedia);
    assert.deepEqual(await storage.getRange('object', 4096, 300_000), data.subarray(4096, 304_096));
    assert.equal(server.pendingFaults(), 0);
  });

  it('a persistent 503 surfaces as a Cairn.Storage error naming the operation, key and location after maxAttempts, and a failed upload leaves no object', async () => {
    const storage = await storageAt('persistent', { maxAttempts: 2 });
    await storage.put('object', Buffer.from('data'));
    server.failNext(2, '503', isMedia);
    const before = server.requests;
    await assert.rejects(
      storage.get('object'),
      storageError(/^read object in gs:\/\/cairn-gcs-test\/persistent: .*HTTP 503/, /run the command again/),
    );
    assert.equal(server.requests - before, 2);
    server.failNext(2, '503', isUpload);
    const from = server.log.length;
    await assert.rejects(
      storage.put('never', Buffer.from('x'), { ifAbsent: true }),
      storageError(/^write never in gs:\/\/cairn-gcs-test\/persistent: /),
    );
    assert.equal(server.log.slice(from).filter(isUpload).length, 2, 'two upload attempts (then one look whether the object is its own)');
    assert.equal(await storage.stat('never'), undefined);
  });

  it('an overwrite refused for lack of delete permission says hosts only create', async () => {
    const storage = await storageAt('denied-write', { maxAttempts: 1 });
    server.failNext(1, '403', isUpload);
    await assert.rejects(
      storage.put('packs/p1', Buffer.from('x')),
      storageError(
        /access denied: write packs\/p1 .*bucket cairn-gcs-test, object denied-write\/packs\/p1/,
        /roles\/storage\.objectCreator and roles\/storage\.objectViewer/,
      ),
    );
    server.deny(BUCKET);
    try {
      await assert.rejects(storage.stat('packs/p1'), storageError(/access denied: stat packs\/p1/, /roles\/storage\.objectViewer/));
      await assert.rejects(storage.delete('packs/p1'), storageError(/access denied: delete packs\/p1/, /hosts are not meant to delete/));
    } finally {
      server.deny(BUCKET, false);
    }
  });

  it('STORAGE_EMULATOR_HOST and ?endpoint= both reach the server; only the endpoint form uses /storage/v1 paths', async () => {
    const viaEndpoint = new GcsStorage(parseGcsUrl(`gs://${BUCKET}/paths-a?endpoint=${encodeURIComponent(server.endpoint)}`, {}));
    let from = server.log.length;
    await viaEndpoint.put('x', Buffer.from('a'));
    assert.equal((await viaEndpoint.get('x')).toString(), 'a');
    assert.ok(
      server.log.slice(from).every((r) => r.rawPath.startsWith('/storage/v1/') || r.rawPath.startsWith('/upload/storage/v1/')),
      'apiEndpoint paths',
    );

    const saved = process.env.STORAGE_EMULATOR_HOST;
    process.env.STORAGE_EMULATOR_HOST = server.endpoint;
    try {
      const viaEmulator = new GcsStorage(parseGcsUrl(`gs://${BUCKET}/paths-b`, process.env));
      from = server.log.length;
      await viaEmulator.put('x', Buffer.from('b'));
      assert.equal((await viaEmulator.get('x')).toString(), 'b');
      assert.ok(
        server.log.slice(from).some((r) => r.rawPath.startsWith('/b/')),
        'emulator paths for JSON calls',
      );
    } finally {
      if (saved === undefined) delete process.env.STORAGE_EMULATOR_HOST;
      else process.env.STORAGE_EMULATOR_HOST = saved;
    }
  });

  it("a key file is read and its service account is the client's identity; a bad one is a clear error that never shows the key", async () => {
    const dir = await tempDir('gcs-key');
    try {
      const key = serviceAccountKey('cairn-host@cairn-test-project.iam.gserviceaccount.com');
      const path = join(dir.path, 'key.json');
      await writeFile(path, JSON.stringify(key));
      const storage = new GcsStorage(
        parseGcsUrl(`gs://${BUCKET}/keyed?key-file=${encodeURIComponent(path)}&endpoint=${encodeURIComponent(server.endpoint)}`, {}),
      );
      assert.equal(await storage.identity(), key.client_email);
      await storage.put('x', Buffer.from('k'));
      assert.equal((await storage.get('x')).toString(), 'k');
      // An http:// endpoint is a test server or emulator: no bearer token goes to it in cleartext.
      assert.ok(server.log.slice(-2).every((r) => r.authorization === undefined));

      const missing = new GcsStorage({ bucket: BUCKET, prefix: 'p', endpoint: server.endpoint, keyFile: join(dir.path, 'nope.json') });
      await assert.rejects(missing.get('x'), storageError(/cannot read the GCS key file .*nope\.json/, /key-file/));
      const notAKey = join(dir.path, 'user.json');
      await writeFile(
        notAKey,
        JSON.stringify({ type: 'external_account', credential_source: { executable: { command: '/bin/true' } }, secret: 'hunter2' }),
      );
      const wrong = new GcsStorage({ bucket: BUCKET, prefix: 'p', endpoint: server.endpoint, keyFile: notAKey });
      await assert.rejects(wrong.get('x'), (error: CairnError) => {
        storageError(/is not a service-account key/)(error);
        assert.ok(!`${error.message} ${error.hint ?? ''}`.includes('hunter2'));
        return true;
      });
    } finally {
      await dir.remove();
    }
  });

  describe('a key held in SSM Parameter Store', () => {
    // STAND-IN for AWS SSM: a tiny HTTP server speaking the SSM JSON protocol
    // (AmazonSSM.GetParameter), reached by the real @aws-sdk/client-ssm through
    // AWS_ENDPOINT_URL_SSM.
    let ssm: Server;
    const calls: Array<{ target: string; body: { Name?: string; WithDecryption?: boolean } }> = [];
    const key = serviceAccountKey('cairn-ssm@cairn-test-project.iam.gserviceaccount.com');
    const saved: Record<string, string | undefined> = {};
    before(async () => {
      ssm = createServer((req, res) => {
        const chunks: Buffer[] = [];
        req.on('data', (chunk: Buffer) => chunks.push(chunk));
        req.on('end', () => {
          const body = JSON.parse(Buffer.concat(chunks).toString() || '{}') as { Name?: string; WithDecryption?: boolean };
          calls.push({ target: String(req.headers['x-amz-target']), body });
          res.setHeader('content-type', 'application/x-amz-json-1.1');
          if (body.Name === '/cairn/gcs-key') {
            res.end(JSON.stringify({ Parameter: { Name: body.Name, Type: 'SecureString', Value: JSON.stringify(key), Version: 1 } }));
          } else {
            res.statusCode = 400;
            res.end(JSON.stringify({ __type: 'ParameterNotFound', message: '' }));
          }
        });
      });
      await new Promise<void>((resolve) => ssm.listen(0, '127.0.0.1', resolve));
      const env = {
        AWS_ENDPOINT_URL_SSM: `http://127.0.0.1:${(ssm.address() as AddressInfo).port}`,
        AWS_REGION: 'eu-west-1',
        AWS_ACCESS_KEY_ID: 'AKIASTANDIN',
        AWS_SECRET_ACCESS_KEY: 'stand-in',
      };
      for (const [name, value] of Object.entries(env)) {
        saved[name] = process.env[name];
        process.env[name] = value;
      }
    });
    after(async () => {
      for (const [name, value] of Object.entries(saved)) {
        if (value === undefined) Reflect.deleteProperty(process.env, name);
        else process.env[name] = value;
      }
      await new Promise<void>((resolve) => ssm.close(() => resolve()));
    });

    it("the key is read with GetParameter WithDecryption and becomes the client's identity", async () => {
      const storage = new GcsStorage(
        parseGcsUrl(`gs://${BUCKET}/ssm-keyed?key-ssm=/cairn/gcs-key&endpoint=${encodeURIComponent(server.endpoint)}`, {}),
      );
      assert.equal(await storage.identity(), key.client_email);
      assert.deepEqual(calls.at(-1), { target: 'AmazonSSM.GetParameter', body: { Name: '/cairn/gcs-key', WithDecryption: true } });
      await storage.put('x', Buffer.from('s'));
      assert.equal((await storage.get('x')).toString(), 's');
      server.failNext(1, '403', isMedia);
      await assert.rejects(
        storage.get('x'),
        storageError(/access denied/, /cairn-ssm@cairn-test-project\.iam\.gserviceaccount\.com needs roles\/storage\.objectViewer/),
      );
    });

    it('a missing parameter is a clear error naming it', async () => {
      const storage = new GcsStorage(
        parseGcsUrl(`gs://${BUCKET}/ssm-missing?key-ssm=/cairn/nothing&endpoint=${encodeURIComponent(server.endpoint)}`, {}),
      );
      await assert.rejects(
        storage.stat('x'),
        storageError(/SSM parameter \/cairn\/nothing/, /create the SecureString parameter \/cairn\/nothing/),
      );
    });
  });
});

describe('parseGcsUrl', () => {
  it('reads bucket, prefix and options from the URL', () => {
    assert.deepEqual(
      parseGcsUrl('gs://my-bucket/some//prefix/?endpoint=http://127.0.0.1:4443/&key-file=/etc/cairn/key.json&project=p1', {}),
      {
        bucket: 'my-bucket',
        prefix: 'some/prefix',
        endpoint: 'http://127.0.0.1:4443',
        keyFile: '/etc/cairn/key.json',
        projectId: 'p1',
      },
    );
    assert.deepEqual(parseGcsUrl('gs://my_bucket.example', {}), { bucket: 'my_bucket.example', prefix: '' });
    assert.deepEqual(parseGcsUrl('gs://b1x/p?key-ssm=/cairn/plan-a/gcs-key', {}), {
      bucket: 'b1x',
      prefix: 'p',
      keySsm: '/cairn/plan-a/gcs-key',
    });
    assert.equal(parseGcsUrl('gs://b1x/p', { STORAGE_EMULATOR_HOST: 'http://localhost:9023' }).endpoint, 'http://localhost:9023');
    assert.equal(
      parseGcsUrl('gs://b1x/p?endpoint=http://a:1', { STORAGE_EMULATOR_HOST: 'http://b:2' }).endpoint,
      'http://a:1',
      'the URL wins',
    );
  });

  it('refuses malformed URLs with a usage error that never repeats credentials', () => {
    const usage = (pattern: RegExp) => (error: unknown) =>
      error instanceof CairnError && error.code === 'Cairn.Usage' && pattern.test(error.message);
    assert.throws(() => parseGcsUrl('gs:///x', {}), usage(/no valid bucket/));
    assert.throws(() => parseGcsUrl('gs://Bad/x', {}), usage(/no valid bucket/));
    assert.throws(() => parseGcsUrl('s3://bucket/x', {}), usage(/not gs/));
    assert.throws(() => parseGcsUrl('gs://bucket/x?keyfile=/k', {}), usage(/unknown option "keyfile"/));
    assert.throws(() => parseGcsUrl('gs://bucket/x?key-file=/k&key-ssm=/p', {}), usage(/not both/));
    assert.throws(() => parseGcsUrl('gs://bucket/x?key-ssm=$(reboot)', {}), usage(/Parameter Store name/));
    assert.throws(() => parseGcsUrl('gs://bucket/x?endpoint=ftp://h', {}), usage(/http:\/\/ or https:\/\//));
    assert.throws(
      () => parseGcsUrl('gs://user:topsecret@bucket/x', {}),
      (error: unknown) =>
        error instanceof CairnError && /credentials do not belong in the URL/.test(error.message) && !error.message.includes('topsecret'),
    );
  });
});
