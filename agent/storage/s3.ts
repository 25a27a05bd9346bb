import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CreateMultipartUploadCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  HeadBucketCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
  UploadPartCommand,
} from '@aws-sdk/client-s3';
import type { CompletedPart } from '@aws-sdk/client-s3';
import { NodeHttpHandler } from '@smithy/node-http-handler';
import { mapLimit } from '../core/concurrency.ts';
import { httpHandlerOptions } from './proxy.ts';
import { AlreadyExistsError, CairnError, NotFoundError } from '../core/errors.ts';
import type { DeletableStorage, ObjectInfo, PutOptions } from '../core/storage.ts';

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

type Operation = 'read' | 'write' | 'stat' | 'list' | 'delete';

const MiB = 1 << 20;
const DEFAULTS = { maxAttempts: 6, multipartThreshold: 64 * MiB, partSize: 16 * MiB, partConcurrency: 4 };
const MIN_PART_SIZE = 5 * MiB;
const MAX_PARTS = 10_000;
const MAX_SINGLE_PUT = 5 * 1024 * MiB;
/** S3 asks to retry a conditional write that met a concurrent one (409 ConditionalRequestConflict). */
const CONFLICT_ATTEMPTS = 3;
const NETWORK_ERROR_CODES = new Set(['ECONNRESET', 'EPIPE', 'ETIMEDOUT', 'ECONNREFUSED', 'ECONNABORTED', 'ERR_STREAM_PREMATURE_CLOSE']);
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
const URL_OPTIONS = new Set(['region', 'endpoint', 'path-style']);

/**
 * `s3://bucket/some/prefix[?region=…&endpoint=…&path-style=true]`. Missing
 * options come from the environment: AWS_REGION or AWS_DEFAULT_REGION,
 * CAIRN_S3_ENDPOINT, CAIRN_S3_PATH_STYLE=true (MinIO, Ceph RGW, s3rver); the
 * region defaults to us-east-1 when an endpoint is given. Credentials never go
 * in the URL: the SDK's standard chain finds them.
 */
export function parseS3Url(url: string, env: NodeJS.ProcessEnv): S3StorageOptions {
  const shown = url.replace(/\/\/[^/@]*@/, '//…@');
  const usage = (problem: string): CairnError =>
    new CairnError('Cairn.Usage', `invalid S3 repository URL ${shown}: ${problem}`, {
      hint: 'use s3://bucket/prefix[?region=…&endpoint=…&path-style=true]',
    });
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch (cause) {
    throw new CairnError('Cairn.Usage', `invalid S3 repository URL ${shown}`, { hint: 'use s3://bucket/prefix', cause });
  }
  if (parsed.protocol !== 's3:') throw usage('the scheme is not s3://');
  if (parsed.username || parsed.password)
    throw usage('credentials do not belong in the URL; the AWS credential chain (environment, profile, instance role) provides them');
  const bucket = parsed.hostname;
  if (!/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/.test(bucket))
    throw usage('no valid bucket name (3–63 lowercase letters, digits, dots and hyphens)');
  for (const name of parsed.searchParams.keys()) {
    if (!URL_OPTIONS.has(name)) throw usage(`unknown option ${JSON.stringify(name)} (known: ${[...URL_OPTIONS].join(', ')})`);
  }
  let prefix: string;
  try {
    prefix = normalizePrefix(decodeURIComponent(parsed.pathname));
  } catch (cause) {
    throw new CairnError('Cairn.Usage', `invalid S3 repository URL ${shown}: the prefix is not valid percent-encoding`, { cause });
  }

  const query = parsed.searchParams;
  const endpoint = query.get('endpoint') || env.CAIRN_S3_ENDPOINT || undefined;
  if (endpoint !== undefined) {
    let endpointUrl: URL | undefined;
    try {
      endpointUrl = new URL(endpoint);
    } catch {
      endpointUrl = undefined;
    }
    if (!endpointUrl || (endpointUrl.protocol !== 'http:' && endpointUrl.protocol !== 'https:'))
      throw usage('the endpoint must be an http:// or https:// URL');
    if (endpointUrl.username || endpointUrl.password) throw usage('the endpoint must not carry credentials');
  }
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
 * the multipart threshold go up in parts, and a multipart upload that fails is
 * aborted (best effort: an incomplete upload is never an object, and a bucket
 * lifecycle rule removes leftovers).
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
  /** The prefix with its trailing slash, or '' for the bucket root. */
  private readonly base: string;
  private readonly maxAttempts: number;
  private readonly multipartThreshold: number;
  private readonly partSize: number;
  private readonly partConcurrency: number;
  private bucketSeen = false;

  constructor(options: S3StorageOptions) {
    const prefix = normalizePrefix(options.prefix);
    this.bucket = options.bucket;
    this.base = prefix === '' ? '' : `${prefix}/`;
    this.location = prefix === '' ? `s3://${options.bucket}` : `s3://${options.bucket}/${prefix}`;
    this.maxAttempts = positive(options.maxAttempts, DEFAULTS.maxAttempts);
    this.multipartThreshold = Math.min(positive(options.multipartThreshold, DEFAULTS.multipartThreshold), MAX_SINGLE_PUT);
    this.partSize = Math.max(MIN_PART_SIZE, positive(options.partSize, DEFAULTS.partSize));
    this.partConcurrency = positive(options.partConcurrency, DEFAULTS.partConcurrency);
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
    return new S3Client({
      region: options.region,
      endpoint: options.endpoint,
      forcePathStyle: options.forcePathStyle,
      // Without a custom endpoint, a bucket in another region than configured still works.
      followRegionRedirects: options.endpoint === undefined,
      retryMode: 'standard',
      maxAttempts: this.maxAttempts,
      requestHandler: new NodeHttpHandler(httpHandlerOptions(options.env ?? process.env, agentOptions)),
    });
  }

  /** Closes the connections this storage opened (not those of a client passed in). */
  destroy(): void {
    if (this.ownsClient) this.client.destroy();
  }

  async get(key: string): Promise<Buffer> {
    return (await this.download(key, undefined)).data;
  }

  async getRange(key: string, offset: number, length: number): Promise<Buffer> {
    if (!Number.isSafeInteger(offset) || offset < 0 || !Number.isSafeInteger(length) || length < 0) {
      throw new CairnError('Cairn.Usage', `invalid range of ${key}: offset ${offset}, length ${length}`);
    }
    if (length === 0) {
      // No request can ask S3 for zero bytes; a missing object must still be NotFound.
      if ((await this.stat(key)) === undefined) throw new NotFoundError(key);
      return Buffer.alloc(0);
    }
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
    const data = answer.data.subarray(skip, skip + length);
    if (data.length !== length) {
      throw new CairnError(
        'Cairn.Storage',
        `read ${key} in ${this.location}: wanted ${length} bytes at offset ${offset}, the object has only ${data.length} there`,
        {
          hint: 'the object is shorter than the index says; run `cairn verify --read-data`',
        },
      );
    }
    return data;
  }

  async put(key: string, data: Buffer, options: PutOptions = {}): Promise<void> {
    const objectKey = this.objectKey(key);
    const ifAbsent = options.ifAbsent === true;
    for (let conflicts = 1; ; conflicts++) {
      try {
        if (data.length > this.multipartThreshold) await this.putMultipart(objectKey, data, ifAbsent);
        else
          await this.client.send(
            new PutObjectCommand({
              Bucket: this.bucket,
              Key: objectKey,
              Body: data,
              ContentLength: data.length,
              ...(ifAbsent ? { IfNoneMatch: '*' } : {}),
            }),
          );
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
    const objectKey = this.objectKey(key);
    try {
      const out = await this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key: objectKey }));
      return { key, size: out.ContentLength ?? 0 };
    } catch (error) {
      const translated = this.translate(error, 'stat', key);
      if (!(translated instanceof NotFoundError)) throw translated;
      // A HEAD answer has no body, so a missing bucket is a bare 404 too: tell them apart once.
      await this.checkBucket('stat', key);
      return undefined;
    }
  }

  async *list(prefix: string): AsyncIterable<ObjectInfo> {
    if (prefix.startsWith('/')) throw new CairnError('Cairn.Usage', `invalid list prefix ${JSON.stringify(prefix)}`);
    let token: string | undefined;
    do {
      let page;
      try {
        page = await this.client.send(
          new ListObjectsV2Command({ Bucket: this.bucket, Prefix: this.base + prefix, ContinuationToken: token }),
        );
      } catch (error) {
        throw this.translate(error, 'list', prefix);
      }
      for (const object of page.Contents ?? []) {
        const key = object.Key;
        // Keys ending in '/' are "folder" markers that consoles create, not objects of ours.
        if (key === undefined || !key.startsWith(this.base) || key.endsWith('/')) continue;
        yield { key: key.slice(this.base.length), size: object.Size ?? 0 };
      }
      token = page.IsTruncated === true ? page.NextContinuationToken : undefined;
    } while (token !== undefined);
  }

  async delete(key: string): Promise<void> {
    try {
      await this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: this.objectKey(key) }));
    } catch (error) {
      const translated = this.translate(error, 'delete', key);
      if (!(translated instanceof NotFoundError)) throw translated;
    }
  }

  /** GetObject, reading the whole body; a connection lost mid-body repeats the request (the SDK's retries end at the headers). */
  private async download(key: string, range: { offset: number; length: number } | undefined): Promise<{ data: Buffer; start: number }> {
    const command = new GetObjectCommand({
      Bucket: this.bucket,
      Key: this.objectKey(key),
      // Never a suffix range (bytes=-N): some S3-compatible servers answer it wrongly.
      ...(range ? { Range: `bytes=${range.offset}-${range.offset + range.length - 1}` } : {}),
    });
    for (let attempt = 1; ; attempt++) {
      let out;
      try {
        out = await this.client.send(command);
      } catch (error) {
        throw this.translate(error, 'read', key);
      }
      try {
        const data = await readBody(out.Body, out.ContentLength);
        const start = out.ContentRange === undefined ? 0 : Number(/^bytes (\d+)-/.exec(out.ContentRange)?.[1] ?? Number.NaN);
        if (Number.isNaN(start)) throw new Error(`unreadable Content-Range ${JSON.stringify(out.ContentRange)}`);
        return { data, start };
      } catch (error) {
        if (attempt < this.maxAttempts && isNetworkError(error)) {
          await sleep(backoff(attempt));
          continue;
        }
        throw this.translate(error, 'read', key);
      }
    }
  }

  private async putMultipart(objectKey: string, data: Buffer, ifAbsent: boolean): Promise<void> {
    const partSize = Math.max(this.partSize, Math.ceil(data.length / MAX_PARTS));
    const partCount = Math.ceil(data.length / partSize);
    // CRC32 declared at creation, sent with every part and listed at completion: what S3 expects when parts carry checksums.
    const created = await this.client.send(
      new CreateMultipartUploadCommand({ Bucket: this.bucket, Key: objectKey, ChecksumAlgorithm: 'CRC32' }),
    );
    const uploadId = created.UploadId;
    if (uploadId === undefined) throw new Error('CreateMultipartUpload returned no upload id');
    try {
      const parts: CompletedPart[] = new Array<CompletedPart>(partCount);
      await mapLimit(
        Array.from({ length: partCount }, (_, i) => i),
        this.partConcurrency,
        async (i) => {
          const body = data.subarray(i * partSize, Math.min(data.length, (i + 1) * partSize));
          const out = await this.client.send(
            new UploadPartCommand({
              Bucket: this.bucket,
              Key: objectKey,
              UploadId: uploadId,
              PartNumber: i + 1,
              Body: body,
              ContentLength: body.length,
              ChecksumAlgorithm: 'CRC32',
            }),
          );
          if (out.ETag === undefined) throw new Error(`UploadPart ${i + 1} of ${partCount} returned no ETag`);
          parts[i] = {
            PartNumber: i + 1,
            ETag: out.ETag,
            ...(out.ChecksumCRC32 !== undefined ? { ChecksumCRC32: out.ChecksumCRC32 } : {}),
          };
        },
      );
      await this.client.send(
        new CompleteMultipartUploadCommand({
          Bucket: this.bucket,
          Key: objectKey,
          UploadId: uploadId,
          MultipartUpload: { Parts: parts },
          ...(ifAbsent ? { IfNoneMatch: '*' } : {}),
        }),
      );
    } catch (error) {
      // mapLimit has let the parts in flight settle, so no part lands after the abort.
      await this.client
        .send(new AbortMultipartUploadCommand({ Bucket: this.bucket, Key: objectKey, UploadId: uploadId }))
        .catch(() => undefined);
      throw error;
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

  private objectKey(key: string): string {
    if (
      key === '' ||
      key.startsWith('/') ||
      key.endsWith('/') ||
      key.includes('//') ||
      key.includes('\\') ||
      key.split('/').some((part) => part === '.' || part === '..')
    ) {
      throw new CairnError('Cairn.Usage', `invalid object key ${JSON.stringify(key)}`);
    }
    return this.base + key;
  }

  private missingBucket(operation: Operation, key: string, cause: unknown): CairnError {
    return new CairnError('Cairn.Storage', `the bucket ${this.bucket} does not exist (${operation} ${key} in ${this.location})`, {
      hint: `create the bucket ${this.bucket}, or fix the bucket name, region or endpoint in the repository URL`,
      cause,
    });
  }

  /** The one place where SDK and network errors become the Storage contract's errors. */
  private translate(error: unknown, operation: Operation, key: string): CairnError {
    if (error instanceof CairnError) return error;
    const name = errorName(error);
    const status = errorStatus(error);
    const where = `${operation} ${key} in ${this.location}`;
    if (name === 'NoSuchBucket') return this.missingBucket(operation, key, error);
    if (name === 'NoSuchKey' || (status === 404 && name !== 'NoSuchUpload')) return new NotFoundError(key, { cause: error });
    if (operation === 'write' && (isPreconditionFailed(error) || name === 'ConditionalRequestConflict'))
      return new AlreadyExistsError(key, { cause: error });
    if (CREDENTIAL_ERRORS.has(name)) {
      return new CairnError('Cairn.Storage', `${where}: the AWS credentials were refused or could not be loaded (${name})`, {
        hint: 'check the credentials the AWS SDK finds (environment, AWS_PROFILE, instance or task role) and the clock of this host',
        cause: error,
      });
    }
    if (name === 'AccessDenied' || name === 'Forbidden' || status === 403) {
      const permission = PERMISSION_FOR[operation];
      return new CairnError('Cairn.Storage', `access denied: ${where} (bucket ${this.bucket}, key ${this.base + key})`, {
        hint:
          `the IAM identity in use needs ${permission} on arn:aws:s3:::${this.bucket}/${this.base}*` +
          (operation === 'list' ? '' : ` (and s3:ListBucket on the bucket, or S3 answers 403 instead of 404 for a missing object)`) +
          (operation === 'delete' ? '; hosts are not meant to delete: use operator credentials' : ''),
        cause: error,
      });
    }
    if (name === 'InvalidRange') {
      return new CairnError('Cairn.Storage', `${where}: the range starts past the end of the object`, {
        hint: 'the object is shorter than the index says; run `cairn verify --read-data`',
        cause: error,
      });
    }
    const message = error instanceof Error ? error.message : String(error);
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
    ].filter(Boolean);
    const transient = status === undefined || status >= 500 || isNetworkError(error);
    return new CairnError('Cairn.Storage', `${where}: ${message}${details.length > 0 ? ` (${details.join(', ')})` : ''}`, {
      ...(transient
        ? { hint: 'S3 or the network kept failing through the retries; run the command again later (a failed write leaves no object)' }
        : {}),
      cause: error,
    });
  }
}

/** Reads a GetObject body into one Buffer, checking it against Content-Length. */
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

function normalizePrefix(prefix: string): string {
  return prefix.replace(/\/{2,}/g, '/').replace(/^\/+|\/+$/g, '');
}

function parseBoolean(text: string | undefined): boolean | undefined {
  const value = text?.trim().toLowerCase();
  if (value === 'true' || value === '1' || value === 'yes') return true;
  if (value === 'false' || value === '0' || value === 'no') return false;
  return undefined;
}

function positive(value: number | undefined, fallback: number): number {
  return value !== undefined && Number.isFinite(value) && value >= 1 ? Math.floor(value) : fallback;
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

function isNetworkError(error: unknown): boolean {
  if (typeof error !== 'object' || error === null) return false;
  const { code, name, cause } = error as { code?: unknown; name?: unknown; cause?: unknown };
  if (typeof code === 'string' && NETWORK_ERROR_CODES.has(code)) return true;
  if (name === 'TimeoutError') return true;
  return cause !== undefined && cause !== error && isNetworkError(cause);
}

/** Full-jitter exponential backoff like the SDK's: up to 100 ms, 200 ms, 400 ms … capped at 20 s. */
function backoff(attempt: number): number {
  return Math.floor(Math.random() * Math.min(20_000, 100 * 2 ** (attempt - 1)));
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
