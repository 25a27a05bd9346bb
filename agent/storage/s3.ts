import {
  DeleteObjectCommand,
  GetObjectCommand,
  HeadBucketCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
} from '@aws-sdk/client-s3';
import { NodeHttpHandler } from '@smithy/node-http-handler';
import { recordAwsCalls } from '../core/aws-call-record.ts';
import { AlreadyExistsError, CairnError, NotFoundError, errorMessage } from '../core/errors.ts';
import type { DeletableStorage, ObjectInfo, PutOptions } from '../core/storage.ts';
import {
  accessDeniedError,
  credentialsError,
  describeOperation,
  missingBucketError,
  serviceFailure,
  type Operation,
} from './cloud-errors.ts';
import { checkEndpoint, parseBoolean, parseCloudUrl, positiveOption } from './cloud-url.ts';
import { listBucket, modifiedTime } from './listing.ts';
import { BucketKeys } from './object-keys.ts';
import { httpHandlerOptions } from './proxy.ts';
import { exactRange, pastEndError } from './ranges.ts';
import { backoff, isNetworkError, repeatOnNetworkError, sleep } from './retry.ts';
import { MIN_PART_SIZE, uploadMultipart } from './s3-multipart.ts';

export interface S3StorageOptions {
  bucket: string;
  /** Key prefix of the repository inside the bucket, without leading or trailing slash; may be empty. */
  prefix: string;
  region?: string;
  /** An S3-compatible endpoint (MinIO, Ceph RGW, s3rver); AWS's own when absent. */
  endpoint?: string;
  forcePathStyle?: boolean;
  /** Attempts per request (first try included) for throttling, 5xx and connection faults. Default 6. */
  maxAttempts?: number;
  /** Objects larger than this go up as multipart uploads. Default 64 MiB. */
  multipartThreshold?: number;
  /** Default 16 MiB; at least 5 MiB (S3's minimum), grown if an object would need more than 10,000 parts. */
  partSize?: number;
  /** Parts of one object uploaded at once. Default 4. */
  partConcurrency?: number;
  /** A ready client (tests, custom credentials); the options above that configure a client are then ignored. */
  client?: S3Client;
  /** Where HTTP_PROXY, HTTPS_PROXY and NO_PROXY are read; process.env when absent. */
  env?: NodeJS.ProcessEnv;
}

const MiB = 1 << 20;
const DEFAULTS = { maxAttempts: 6, multipartThreshold: 64 * MiB, partSize: 16 * MiB, partConcurrency: 4 };
const MAX_SINGLE_PUT = 5 * 1024 * MiB;
/** S3 times are whole seconds (a HEAD answer's Last-Modified holds no more). */
const SECOND = 1000;
/** S3 asks to retry a conditional write that met a concurrent one (409 ConditionalRequestConflict). */
const CONFLICT_ATTEMPTS = 3;
const CREDENTIAL_ERRORS = new Set([
  'InvalidAccessKeyId',
  'SignatureDoesNotMatch',
  'ExpiredToken',
  'InvalidToken',
  'TokenRefreshRequired',
  'CredentialsProviderError',
]);
const PERMISSION_FOR: Record<Operation, string> = {
  read: 's3:GetObject',
  write: 's3:PutObject',
  stat: 's3:GetObject',
  list: 's3:ListBucket',
  delete: 's3:DeleteObject',
};
const URL_RULES = {
  scheme: 's3',
  service: 'S3',
  form: 's3://bucket/prefix[?region=…&endpoint=…&path-style=true]',
  bucketPattern: /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/,
  bucketRule: '3–63 lowercase letters, digits, dots and hyphens',
  credentials: 'the AWS credential chain (environment, profile, instance role) provides them',
  options: new Set(['region', 'endpoint', 'path-style']),
} as const;

/**
 * `s3://bucket/some/prefix[?region=…&endpoint=…&path-style=true]`. Missing
 * options come from the environment: AWS_REGION or AWS_DEFAULT_REGION,
 * CAIRN_S3_ENDPOINT, CAIRN_S3_PATH_STYLE=true (MinIO, Ceph RGW, s3rver); the
 * region defaults to us-east-1 when an endpoint is given. Credentials never go
 * in the URL: the SDK's standard chain finds them.
 */
export function parseS3Url(url: string, env: NodeJS.ProcessEnv): S3StorageOptions {
  const { bucket, prefix, query, usage } = parseCloudUrl(url, URL_RULES);
  const endpoint = query.get('endpoint') || env.CAIRN_S3_ENDPOINT || undefined;
  if (endpoint !== undefined) checkEndpoint(endpoint, usage);
  const pathStyleText = query.get('path-style') ?? env.CAIRN_S3_PATH_STYLE;
  const pathStyle = parseBoolean(pathStyleText);
  if (pathStyleText !== undefined && pathStyleText !== '' && pathStyle === undefined)
    throw usage(`path-style must be true or false, not ${JSON.stringify(pathStyleText)}`);
  const region = query.get('region') || env.AWS_REGION || env.AWS_DEFAULT_REGION || (endpoint ? 'us-east-1' : undefined);

  const options: S3StorageOptions = { bucket, prefix };
  if (region !== undefined) options.region = region;
  if (endpoint !== undefined) options.endpoint = endpoint;
  if (pathStyle !== undefined) options.forcePathStyle = pathStyle;
  return options;
}

/**
 * S3 and S3-compatible stores through the AWS SDK v3 and its standard
 * credential chain. Create-if-absent is S3's conditional write
 * (`If-None-Match: *` on PutObject and CompleteMultipartUpload); objects above
 * the multipart threshold go up in parts (s3-multipart.ts). Modification
 * times are S3's LastModified (whole seconds).
 *
 * Retries: the SDK's standard strategy retries throttling, 5xx and connection
 * faults before a response (resets included, also for uploads of a Buffer).
 * Two faults it cannot see are handled here: a connection that breaks while a
 * GET body streams (the GET is repeated), and a conditional write whose first
 * attempt landed but whose response was lost (the retry then meets 412; the
 * object is compared with the data before AlreadyExistsError is believed).
 */
export class S3Storage implements DeletableStorage {
  readonly location: string;
  readonly atomicCreate = true;
  private readonly client: S3Client;
  private readonly ownsClient: boolean;
  private readonly bucket: string;
  private readonly keys: BucketKeys;
  private readonly maxAttempts: number;
  private readonly multipartThreshold: number;
  private readonly partSize: number;
  private readonly partConcurrency: number;
  private bucketSeen = false;

  constructor(options: S3StorageOptions) {
    this.bucket = options.bucket;
    this.keys = new BucketKeys('s3', options.bucket, options.prefix);
    this.location = this.keys.location;
    this.maxAttempts = positiveOption(options.maxAttempts, DEFAULTS.maxAttempts);
    this.multipartThreshold = Math.min(positiveOption(options.multipartThreshold, DEFAULTS.multipartThreshold), MAX_SINGLE_PUT);
    this.partSize = Math.max(MIN_PART_SIZE, positiveOption(options.partSize, DEFAULTS.partSize));
    this.partConcurrency = positiveOption(options.partConcurrency, DEFAULTS.partConcurrency);
    this.ownsClient = options.client === undefined;
    this.client = options.client ?? this.createClient(options);
  }

  private createClient(options: S3StorageOptions): S3Client {
    // The agent must not queue: a request waiting for a free socket fails with a
    // connection TimeoutError once connectionTimeout passes (seen with maxSockets 1).
    // Callers bound their own concurrency (a few dozen requests); each multipart
    // upload adds partConcurrency parts. Sockets are opened only when needed.
    // HTTP_PROXY, HTTPS_PROXY and NO_PROXY are honoured by these agents (proxy.ts).
    const agentOptions = { keepAlive: true, maxSockets: Math.max(64, 16 * this.partConcurrency) };
    // recordAwsCalls: a test hook, inert unless a test installs a sink (agent/core/aws-call-record.ts).
    return recordAwsCalls(
      new S3Client({
        region: options.region,
        endpoint: options.endpoint,
        forcePathStyle: options.forcePathStyle,
        // Without a custom endpoint, a bucket in another region than configured still works.
        followRegionRedirects: options.endpoint === undefined,
        retryMode: 'standard',
        maxAttempts: this.maxAttempts,
        requestHandler: new NodeHttpHandler(httpHandlerOptions(options.env ?? process.env, agentOptions)),
      }),
    );
  }

  /** Closes the connections this storage opened (not those of a client passed in). */
  destroy(): void {
    if (this.ownsClient) this.client.destroy();
  }

  async get(key: string): Promise<Buffer> {
    return (await this.download(key, undefined)).data;
  }

  getRange(key: string, offset: number, length: number): Promise<Buffer> {
    return exactRange(this.location, key, offset, length, {
      // No request can ask S3 for zero bytes; a missing object must still be NotFound.
      exists: async () => (await this.stat(key)) !== undefined,
      read: async () => {
        const answer = await this.download(key, { offset, length });
        // Trust Content-Range, not the request: a server may ignore a range (HTTP allows it) or
        // answer a wider one (s3rver sends the whole object for bytes=0-0).
        const skip = offset - answer.start;
        if (skip < 0) {
          throw new CairnError(
            'Cairn.Storage',
            `read ${key} in ${this.location}: asked for bytes from ${offset}, the server answered from ${answer.start}`,
          );
        }
        return answer.data.subarray(skip, skip + length);
      },
    });
  }

  async put(key: string, data: Buffer, options: PutOptions = {}): Promise<void> {
    const objectName = this.keys.objectName(key);
    const ifAbsent = options.ifAbsent === true;
    for (let conflicts = 1; ; conflicts++) {
      try {
        if (data.length > this.multipartThreshold) {
          const { client, bucket, partSize, partConcurrency } = this;
          await uploadMultipart({ client, bucket, objectName, data, partSize, partConcurrency, ifAbsent });
        } else {
          await this.client.send(
            new PutObjectCommand({
              Bucket: this.bucket,
              Key: objectName,
              Body: data,
              ContentLength: data.length,
              ...(ifAbsent ? { IfNoneMatch: '*' } : {}),
            }),
          );
        }
        return;
      } catch (error) {
        if (ifAbsent && errorName(error) === 'ConditionalRequestConflict' && conflicts < CONFLICT_ATTEMPTS) {
          await sleep(backoff(conflicts));
          continue;
        }
        // A retried conditional write that meets 412 may have met its own first attempt, whose answer was lost.
        if (ifAbsent && isPreconditionFailed(error) && attemptsOf(error) > 1 && (await this.holds(key, data))) return;
        throw this.translate(error, 'write', key);
      }
    }
  }

  async stat(key: string): Promise<ObjectInfo | undefined> {
    const objectName = this.keys.objectName(key);
    try {
      const out = await this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key: objectName }));
      return { key, size: out.ContentLength ?? 0, modified: modifiedTime(out.LastModified, key, this.location, SECOND) };
    } catch (error) {
      const translated = this.translate(error, 'stat', key);
      if (!(translated instanceof NotFoundError)) throw translated;
      // A HEAD answer has no body, so a missing bucket is a bare 404 too: tell them apart once.
      await this.checkBucket('stat', key);
      return undefined;
    }
  }

  list(prefix: string): AsyncIterable<ObjectInfo> {
    return listBucket(
      this.keys,
      prefix,
      async (namePrefix, token) => {
        const page = await this.client.send(
          new ListObjectsV2Command({ Bucket: this.bucket, Prefix: namePrefix, ContinuationToken: token }),
        );
        return {
          objects: (page.Contents ?? []).map((object) => ({ name: object.Key, size: object.Size, modified: object.LastModified })),
          next: page.IsTruncated === true ? page.NextContinuationToken : undefined,
        };
      },
      (error) => this.translate(error, 'list', prefix),
      SECOND,
    );
  }

  async delete(key: string): Promise<void> {
    try {
      await this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: this.keys.objectName(key) }));
    } catch (error) {
      const translated = this.translate(error, 'delete', key);
      if (!(translated instanceof NotFoundError)) throw translated;
    }
  }

  /** GetObject, reading the whole body; a connection lost mid-body repeats the request (the SDK's retries end at the headers). */
  private async download(key: string, range: { offset: number; length: number } | undefined): Promise<{ data: Buffer; start: number }> {
    const command = new GetObjectCommand({
      Bucket: this.bucket,
      Key: this.keys.objectName(key),
      // Never a suffix range (bytes=-N): some S3-compatible servers answer it wrongly.
      ...(range ? { Range: `bytes=${range.offset}-${range.offset + range.length - 1}` } : {}),
    });
    try {
      return await repeatOnNetworkError(this.maxAttempts, async () => {
        let out;
        try {
          out = await this.client.send(command);
        } catch (error) {
          // The SDK has retried the request itself: final.
          throw this.translate(error, 'read', key);
        }
        const data = await readBody(out.Body, out.ContentLength);
        const start = out.ContentRange === undefined ? 0 : Number(/^bytes (\d+)-/.exec(out.ContentRange)?.[1] ?? Number.NaN);
        if (Number.isNaN(start)) throw new Error(`unreadable Content-Range ${JSON.stringify(out.ContentRange)}`);
        return { data, start };
      });
    } catch (error) {
      throw this.translate(error, 'read', key);
    }
  }

  /** Whether the object under key is exactly data (to resolve an ambiguous 412). */
  private async holds(key: string, data: Buffer): Promise<boolean> {
    const info = await this.stat(key);
    if (info === undefined || info.size !== data.length) return false;
    return (await this.get(key)).equals(data);
  }

  /** Throws the missing-bucket error if HeadBucket says so; any other answer (even 403) lets the caller's result stand. */
  private async checkBucket(operation: Operation, key: string): Promise<void> {
    if (this.bucketSeen) return;
    try {
      await this.client.send(new HeadBucketCommand({ Bucket: this.bucket }));
    } catch (error) {
      if (errorStatus(error) === 404) throw this.missingBucket(operation, key, error);
      return;
    }
    this.bucketSeen = true;
  }

  private missingBucket(operation: Operation, key: string, cause: unknown): CairnError {
    const hint = `create the bucket ${this.bucket}, or fix the bucket name, region or endpoint in the repository URL`;
    return missingBucketError(this.bucket, describeOperation(operation, key, this.location), hint, cause);
  }

  /** The one place where SDK and network errors become the Storage contract's errors. */
  private translate(error: unknown, operation: Operation, key: string): CairnError {
    if (error instanceof CairnError) return error;
    const name = errorName(error);
    const status = errorStatus(error);
    const where = describeOperation(operation, key, this.location);
    if (name === 'NoSuchBucket') return this.missingBucket(operation, key, error);
    if (name === 'NoSuchKey' || (status === 404 && name !== 'NoSuchUpload')) return new NotFoundError(key, { cause: error });
    if (operation === 'write' && (isPreconditionFailed(error) || name === 'ConditionalRequestConflict'))
      return new AlreadyExistsError(key, { cause: error });
    if (CREDENTIAL_ERRORS.has(name)) {
      const hint = 'check the credentials the AWS SDK finds (environment, AWS_PROFILE, instance or task role) and the clock of this host';
      return credentialsError(where, `the AWS credentials were refused or could not be loaded (${name})`, hint, error);
    }
    if (name === 'AccessDenied' || name === 'Forbidden' || status === 403) {
      const hint =
        `the IAM identity in use needs ${PERMISSION_FOR[operation]} on arn:aws:s3:::${this.bucket}/${this.keys.base}*` +
        (operation === 'list' ? '' : ` (and s3:ListBucket on the bucket, or S3 answers 403 instead of 404 for a missing object)`) +
        (operation === 'delete' ? '; hosts are not meant to delete: use operator credentials' : '');
      return accessDeniedError(where, this.bucket, `key ${this.keys.base + key}`, hint, error);
    }
    if (name === 'InvalidRange') return pastEndError(where, error);
    const message = errorMessage(error);
    if (/region is missing/i.test(message)) {
      return new CairnError('Cairn.Storage', `${where}: no AWS region is configured`, {
        hint: 'add ?region=… to the repository URL or set AWS_REGION',
        cause: error,
      });
    }
    const attempts = attemptsOf(error);
    const details = [
      name !== '' && name !== 'Error' && !message.includes(name) ? name : undefined,
      status ? `HTTP ${status}` : undefined,
      attempts > 1 ? `${attempts} attempts` : undefined,
    ];
    const transient = status === undefined || status >= 500 || isNetworkError(error);
    return serviceFailure(where, message, details, transient ? { service: 'S3' } : undefined, error);
  }
}

/** Reads a GetObject body into one Buffer, checking it against Content-Length (a short body is a reset: retried). */
async function readBody(body: unknown, expected: number | undefined): Promise<Buffer> {
  if (body === null || typeof body !== 'object' || !(Symbol.asyncIterator in body)) throw new Error('the response has no body stream');
  const target = expected === undefined ? undefined : Buffer.allocUnsafe(expected);
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const chunk of body as AsyncIterable<Uint8Array>) {
    if (target) {
      if (total + chunk.byteLength > target.length) throw new Error(`the response body is longer than its Content-Length ${target.length}`);
      target.set(chunk, total);
    } else {
      chunks.push(Buffer.from(chunk));
    }
    total += chunk.byteLength;
  }
  if (target && total !== target.length)
    throw Object.assign(new Error(`the response body ended after ${total} of ${target.length} bytes`), { code: 'ECONNRESET' });
  return target ?? Buffer.concat(chunks, total);
}

function errorName(error: unknown): string {
  return typeof error === 'object' && error !== null && typeof (error as { name?: unknown }).name === 'string'
    ? (error as { name: string }).name
    : '';
}

function errorStatus(error: unknown): number | undefined {
  return (error as { $metadata?: { httpStatusCode?: number } } | undefined)?.$metadata?.httpStatusCode;
}

function attemptsOf(error: unknown): number {
  return (error as { $metadata?: { attempts?: number } } | undefined)?.$metadata?.attempts ?? 1;
}

function isPreconditionFailed(error: unknown): boolean {
  return errorName(error) === 'PreconditionFailed' || errorStatus(error) === 412;
}
