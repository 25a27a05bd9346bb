import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { withoutCredentials } from '../../../agent/core/url-credentials.ts';
import { resolveEtcdConnection } from '../../../agent/engines/etcd-connection.ts';
import { parseS3Url } from '../../../agent/storage/s3.ts';

/** A user name and password written into a URL are never repeated by the message that refuses it. */
describe('credentials in URLs', () => {
  it('hides everything between the scheme and the last @, whatever characters the password holds', () => {
    assert.equal(withoutCredentials('http://root:S3cret@host:2379'), 'http://…@host:2379');
    assert.equal(withoutCredentials('http://root:S3/c?r#e@t@[bad'), 'http://…@[bad');
    assert.equal(withoutCredentials('root:S3cret@host'), '…@host');
    assert.equal(withoutCredentials('https://host:2379/path'), 'https://host:2379/path');
  });

  const refusal = async (run: () => Promise<unknown>): Promise<string> => {
    try {
      await run();
    } catch (error) {
      return `${(error as Error).message} ${(error as { hint?: string }).hint ?? ''}`;
    }
    return assert.fail('refused');
  };

  it('etcd: an endpoint that does not parse, or that carries credentials, is refused without them', async () => {
    const options = { host: 'localhost', port: 2379 };
    for (const endpoint of [
      'http://root:EtcdPW-S3cret@[bad',
      'http://root:Etcd/PW-S3cret@localhost:2379',
      'root:EtcdPW-S3cret@localhost:2379',
    ]) {
      const message = await refusal(() => resolveEtcdConnection({ ...options, endpoints: [endpoint] }, {}));
      assert.match(message, /etcd endpoint "(http:\/\/)?…@/);
      assert.ok(!message.includes('S3cret'), message);
    }
    const fromEnv = await refusal(() => resolveEtcdConnection(options, { ETCDCTL_ENDPOINTS: 'https://u:EnvS3cret@h:2379' }));
    assert.match(fromEnv, /carries credentials/);
    assert.ok(!fromEnv.includes('S3cret'), fromEnv);
  });

  it('S3: a repository URL whose password holds a slash is refused without it', async () => {
    const message = await refusal(async () => parseS3Url('s3://AKIA:se/cr/S3cret@bucket/prefix', {}));
    assert.ok(!message.includes('S3cret'), message);
  });
});
