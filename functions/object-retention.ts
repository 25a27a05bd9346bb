import { GetObjectRetentionCommand, PutObjectRetentionCommand, S3Client, S3ServiceException } from '@aws-sdk/client-s3';
import { NodeHttpHandler } from '@smithy/node-http-handler';
import { recordAwsCalls } from '../agent/core/aws-call-record.ts';
import { CairnError, errorMessage } from '../agent/core/errors.ts';
import { awsS3Location, type Plan } from '../agent/core/plan.ts';
import { BucketKeys } from '../agent/storage/object-keys.ts';
import { httpHandlerOptions } from '../agent/storage/proxy.ts';
import { parseS3Url } from '../agent/storage/s3.ts';

export type LockMode = 'GOVERNANCE' | 'COMPLIANCE';

export interface Retention {
  mode: LockMode | undefined;
  retainUntil: Date;
}

/**
 * S3 Object Lock retention of one plan's repository objects: GetObjectRetention and
 * PutObjectRetention on the current version of a key under the plan's prefix. Not part of the
 * repository's Storage contract (agent/core/storage.ts): only the control plane's extend-locks
 * function (docs/cdk.md, "Object Lock") keeps locks, and only S3 has them.
 */
export class ObjectRetention {
  private readonly client: S3Client;
  private readonly bucket: string;
  private readonly keys: BucketKeys;

  constructor(plan: Pick<Plan, 'id' | 'repository'>, env: NodeJS.ProcessEnv = process.env) {
    if (awsS3Location(plan) === undefined)
      throw new CairnError(
        'Cairn.Config',
        `plan ${plan.id}: Object Lock retention is kept on AWS S3 repositories only; an S3-compatible endpoint's or GCS's retention is its operator's`,
        { hint: 'set the endpoint\'s own object locking or versioning there (docs/cdk.md, "S3-compatible endpoints")' },
      );
    const options = parseS3Url(plan.repository.url, env);
    this.bucket = options.bucket;
    this.keys = new BucketKeys('s3', options.bucket, options.prefix);
    this.client = recordAwsCalls(
      new S3Client({
        region: options.region,
        endpoint: options.endpoint,
        forcePathStyle: options.forcePathStyle,
        followRegionRedirects: options.endpoint === undefined,
        retryMode: 'standard',
        maxAttempts: 6,
        requestHandler: new NodeHttpHandler(httpHandlerOptions(env, { keepAlive: true, maxSockets: 64 })),
      }),
    );
  }

  /** The key's retention; undefined when it has none (NoSuchObjectLockConfiguration). A missing key is Cairn.NotFound. */
  async get(key: string): Promise<Retention | undefined> {
    try {
      const answer = await this.client.send(new GetObjectRetentionCommand({ Bucket: this.bucket, Key: this.keys.objectName(key) }));
      const until = answer.Retention?.RetainUntilDate;
      if (until === undefined) return undefined;
      const mode = answer.Retention?.Mode;
      return { mode: mode === 'GOVERNANCE' || mode === 'COMPLIANCE' ? mode : undefined, retainUntil: new Date(until) };
    } catch (error) {
      if (error instanceof S3ServiceException && error.name === 'NoSuchObjectLockConfiguration') return undefined;
      throw this.failure('GetObjectRetention', key, error);
    }
  }

  /** Sets the key's retention. Never called with an earlier date than the key has (COMPLIANCE would refuse it). */
  async put(key: string, mode: LockMode, retainUntil: Date): Promise<void> {
    try {
      await this.client.send(
        new PutObjectRetentionCommand({
          Bucket: this.bucket,
          Key: this.keys.objectName(key),
          Retention: { Mode: mode, RetainUntilDate: retainUntil },
        }),
      );
    } catch (error) {
      throw this.failure('PutObjectRetention', key, error);
    }
  }

  destroy(): void {
    this.client.destroy();
  }

  private failure(api: string, key: string, error: unknown): CairnError {
    const where = `${this.keys.location}/${key}`;
    if (error instanceof S3ServiceException && (error.name === 'NoSuchKey' || error.$metadata.httpStatusCode === 404))
      return new CairnError('Cairn.NotFound', `${api} ${where}: the object does not exist`, { cause: error });
    if (error instanceof S3ServiceException && error.$metadata.httpStatusCode === 403)
      return new CairnError('Cairn.Storage', `${api} ${where}: access denied (${errorMessage(error)})`, {
        hint: `the extend-locks role needs s3:${api} on the plan's prefix (deploy the Cairn CDK app), and the bucket needs Object Lock`,
        cause: error,
      });
    return new CairnError('Cairn.Storage', `${api} ${where}: ${errorMessage(error)}`, { cause: error });
  }
}
