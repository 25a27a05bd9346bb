import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { parseEndpointCredentials } from '../../../agent/core/endpoint-credentials.ts';
import { CairnError } from '../../../agent/core/errors.ts';

const PARAMETER = '/cairn/prod/minio/orders';

describe("an S3-compatible endpoint's access key parameter", () => {
  it('reads the documented JSON shape, with an optional session token', () => {
    assert.deepEqual(parseEndpointCredentials('{"accessKeyId":"minio-orders","secretAccessKey":"s3cr3t/+x"}', PARAMETER), {
      accessKeyId: 'minio-orders',
      secretAccessKey: 's3cr3t/+x',
    });
    assert.deepEqual(parseEndpointCredentials('{"accessKeyId":"a","secretAccessKey":"b","sessionToken":"c"}', PARAMETER), {
      accessKeyId: 'a',
      secretAccessKey: 'b',
      sessionToken: 'c',
    });
  });

  it('refuses anything else as Cairn.Config naming the parameter and the shape, never repeating the value', () => {
    for (const value of [
      'AKIA1234:supersecretvalue',
      '{"accessKeyId":"a"}',
      '{"accessKeyId":"a","secretAccessKey":"supersecretvalue","extra":1}',
      '{"accessKeyId":"a","secretAccessKey":"has supersecretvalue spaces"}',
      '{"access_key":"a","secret_key":"supersecretvalue"}',
      '["supersecretvalue"]',
    ]) {
      assert.throws(
        () => parseEndpointCredentials(value, PARAMETER),
        (error: unknown) => {
          assert.ok(error instanceof CairnError);
          assert.equal(error.code, 'Cairn.Config');
          assert.match(error.message, /^parameter \/cairn\/prod\/minio\/orders /);
          assert.match(error.hint ?? '', /"accessKeyId": "…", "secretAccessKey": "…"/);
          assert.doesNotMatch(`${error.message} ${error.hint ?? ''}`, /supersecretvalue/);
          return true;
        },
        value,
      );
    }
  });

  it('fuzz: random and mutated values either parse or fail as Cairn.Config, never anything else', () => {
    const valid = '{"accessKeyId":"minio-orders","secretAccessKey":"s3cr3t"}';
    for (let i = 0; i < 2000; i++) {
      const bytes = Buffer.from(valid);
      const value =
        i % 2 === 0
          ? randomBytes(i % 64).toString('latin1')
          : (() => {
              for (let n = 0; n < 1 + (i % 4); n++) bytes[Math.floor(Math.random() * bytes.length)] = Math.floor(Math.random() * 256);
              return bytes.toString('latin1');
            })();
      try {
        const parsed = parseEndpointCredentials(value, PARAMETER);
        assert.ok(parsed.accessKeyId.length > 0 && parsed.secretAccessKey.length > 0);
      } catch (error) {
        assert.ok(error instanceof CairnError && error.code === 'Cairn.Config', String(error));
      }
    }
  });
});
