import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { CairnError } from '../../../agent/core/errors.ts';
import { openEndpointStorage } from '../../../agent/storage/s3-endpoint.ts';
import { startS3rver, type S3rver } from '../../helpers/s3rver.ts';

/**
 * A plan's repository at an S3-compatible endpoint, signed with the access key its parameter
 * holds (agent/storage/s3-endpoint.ts), against s3rver, which accepts only the key id S3RVER. The
 * environment's credential chain is given a key s3rver refuses, so a pass means the explicit
 * credentials signed, not the environment's.
 */
const PARAMETER = '/cairn/test/minio/orders';
const ENV = { AWS_ACCESS_KEY_ID: 'AKIAENVIRONMENTKEY', AWS_SECRET_ACCESS_KEY: 'environment-secret', AWS_REGION: 'eu-central-1' };

describe('S3-compatible endpoint storage with explicit credentials', () => {
  let s3: S3rver;
  const saved: Record<string, string | undefined> = {};
  before(async () => {
    s3 = await startS3rver();
    for (const [k, v] of Object.entries(ENV)) {
      saved[k] = process.env[k];
      process.env[k] = v;
    }
  });
  after(async () => {
    for (const [k, v] of Object.entries(saved)) {
      Reflect.deleteProperty(process.env, k);
      if (v !== undefined) process.env[k] = v;
    }
    await s3.stop();
  });

  it('signs with the parameter’s access key, not the environment’s', async () => {
    const storage = openEndpointStorage(
      s3.url('plans/a'),
      { value: { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' }, parameter: PARAMETER },
      process.env,
    );
    try {
      await storage.put('config', Buffer.from('hello'), { ifAbsent: true });
      assert.equal((await storage.get('config')).toString(), 'hello');
      const listed = [];
      for await (const o of storage.list('')) listed.push(o.key);
      assert.deepEqual(listed, ['config']);
      await storage.delete('config');
      assert.equal(await storage.stat('config'), undefined);
    } finally {
      (storage as { destroy?: () => void }).destroy?.();
    }
  });

  it('a refused key fails as Cairn.Config naming the parameter, on every kind of request', async () => {
    // s3rver checks a V4 request's key id, not its signature: a wrong id is what it refuses (InvalidAccessKeyId).
    for (const value of [{ accessKeyId: 'AKIAUNKNOWN', secretAccessKey: 'not-the-secret' }]) {
      const storage = openEndpointStorage(s3.url('plans/a'), { value, parameter: PARAMETER }, process.env);
      const attempts: Array<() => Promise<unknown>> = [
        () => storage.get('config'),
        () => storage.put('x', Buffer.from('x'), { ifAbsent: true }),
        () => storage.stat('config'),
        async () => {
          for await (const o of storage.list('')) assert.fail(`listed ${o.key} with a refused key`);
        },
      ];
      try {
        for (const attempt of attempts) {
          await assert.rejects(attempt, (error: unknown) => {
            assert.ok(error instanceof CairnError, String(error));
            assert.equal(error.code, 'Cairn.Config');
            assert.match(error.message, new RegExp(`access key in parameter ${PARAMETER}`));
            assert.match(error.hint ?? '', /"accessKeyId"/);
            assert.doesNotMatch(`${error.message} ${error.hint ?? ''}`, /not-the-secret/);
            return true;
          });
        }
      } finally {
        (storage as { destroy?: () => void }).destroy?.();
      }
    }
  });

  it('refuses a URL without an endpoint: there is nothing for the key to sign', () => {
    assert.throws(
      () => openEndpointStorage('s3://bucket/p', { value: { accessKeyId: 'a', secretAccessKey: 'b' }, parameter: PARAMETER }, {}),
      /names no endpoint, so parameter \/cairn\/test\/minio\/orders has nothing to sign for/,
    );
  });
});
