import { Agent as HttpAgent } from 'node:http';
import { Agent as HttpsAgent } from 'node:https';
import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CreateMultipartUploadCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
  UploadPartCommand,
  S3ServiceException,
} from '@aws-sdk/client-s3';
import { NodeHttpHandler } from '@smithy/node-http-handler';
import { mapLimit } from '../core/concurrency.ts';
import { AlreadyExistsError, CairnError, NotFoundError, errorMessage } from '../core/errors.ts';
import type { DeletableStorage, ObjectInfo, PutOptions } from '../core/storage.ts';

export interface S3StorageOptions {
  bucket: string;
  prefix: string;
  region?: string | undefined;
  endpoint?: string | undefined;
  forcePathStyle?: boolean | undefined;
  /** Attempts per request, with the SDK's backoff for throttling, 5xx and connection resets. */
  maxAttempts?: number | undefined;
  multipartThreshold?: number | undefined;
  partSize?: number | undefined;
  concurrency?: number | undefined;
}

/**
 * `s3://bucket/prefix[?region=…&endpoint=…&path-style=true]`. Options may also
 * come from the environment: AWS_REGION / AWS_DEFAULT_REGION,
 * CAIRN_S3_ENDPOINT, CAIRN_S3_PATH_STYLE=true (for Ceph RGW, MinIO, s3rver).
 */
export function parseS3Url(url: string, env: NodeJS.ProcessEnv = process.env): S3StorageOptions {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch (cause) {
    throw new CairnError('Cairn.Usage', `invalid S3 URL ${JSON.stringify(url)}`, { hint: 'use s3://bucket/prefix', cause });
  }
  const bucket = parsed.hostname;
  if (parsed.protocol !== 's3:' || !/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/.test(bucket)) {
    throw new CairnError('Cairn.Usage', `invalid S3 URL ${JSON.stringify(url)}: no valid bucket name`, { hint: 'use s3://bucket/prefix' });
  }
  const query = parsed.searchParams;
  const endpoint = query.get('endpoint') ?? env.CAIRN_S3_ENDPOINT;
  const pathStyle = (query.get('path-style') ?? env.CAIRN_S3_PATH_STYLE ?? '').toLowerCase();
  const prefix = decodeURIComponent(parsed.pathname).replace(/^\/+|\/+$/g, '');
  return {
    bucket,
    prefix,
    region: query.get('region') ?? env.AWS_REGION ?? env.AWS_DEFAULT_REGION ?? (endpoint ? 'us-east-1' : undefined),
    endpoint: endpoint || undefined,
    forcePathStyle: pathStyle === 'true' || pathStyle === '1' || undefined,
  };
}

/**
 * S3 and S3-compatible stores through the AWS SDK v3 and its standard
 * credential chain. Create-if-absent sends `If-None-Match: *` (on PutObject and
 * on CompleteMultipartUpload), which S3 enforces and the host IAM policy can
 * require; an incomplete multipart upload is never an object.
 */
export class S3Storage implements DeletableStorage {
  readonly location: string;
  readonly atomicCreate = true;
  private readonly client: S3Client;
  private readonly bucket: string;
  private readonly prefix: string;
  private readonly multipartThreshold: number;
  private readonly partSize: number;
  private readonly concurrency: number;

  constructor(options: S3StorageOptions, client?: S3Client) {
    this.bucket = options.bucket;
    this.prefix = options.prefix ? `${options.prefix}/` : '';
    this.location = `s3://${options.bucket}/${options.prefix}`;
    this.multipartThreshold = options.multipartThreshold ?? 64 << 20;
    this.partSize = Math.max(5 << 20, options.partSize ?? 16 << 20);
    this.concurrency = options.concurrency ?? 4;
    const agentOptions = { keepAlive: true, maxSockets: Math.max(8, this.concurrency * 4) };
    this.client =
      client ??
      new S3Client({
        region: options.region,
        endpoint: options.endpoint,
        forcePathStyle: options.forcePathStyle,
        maxAttempts: options.maxAttempts ?? 6,
        retryMode: 'standard',
        requestHandler: new NodeHttpHandler({ httpAgent: new HttpAgent(agentOptions), httpsAgent: new HttpsAgent(agentOptions), connectionTimeout: 10_000, requestTimeout: 300_000 }),
      });
  }

  async get(key: string): Promise<Buffer> {
    try {
      const out = await this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key: this.key(key) }));
      return Buffer.from(await (out.Body as { transformToByteArray(): Promise<Uint8Array> }).transformToByteArray());
    } catch (error) {
      throw this.translate(error, 'read', key);
    }
  }

  async getRange(key: string, offset: number, length: number): Promise<Buffer> {
    if (length === 0) return Buffer.alloc(0);
    let data: Buffer;
    try {
      const out = await this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key: this.key(key), Range: `bytes=${offset}-${offset + length - 1}` }));
      data = Buffer.from(await (out.Body as { transformToByteArray(): Promise<Uint8Array> }).transformToByteArray());
    } catch (error) {
      throw this.translate(error, 'read', key);
    }
    if (data.length !== length) {
      throw new CairnError('Cairn.Storage', `short read of ${key} in ${this.location}: wanted ${length} bytes at offset ${offset}, got ${data.length}`, {
        hint: 'the object is shorter than the index says; run `cairn verify --read-data`',
      });
    }
    return data;
  }

  async put(key: string, data: Buffer, options: PutOptions = {}): Promise<void> {
    if (data.length > this.multipartThreshold) return this.putMultipart(key, data, options);
    try {
      await this.client.send(
        new PutObjectCommand({ Bucket: this.bucket, Key: this.key(key), Body: data, ContentLength: data.length, ...(options.ifAbsent ? { IfNoneMatch: '*' } : {}) }),
      );
    } catch (error) {
      throw this.translate(error, 'write', key);
    }
  }

  async stat(key: string): Promise<ObjectInfo | undefined> {
    try {
      const out = await this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key: this.key(key) }));
      return { key, size: out.ContentLength ?? 0 };
    } catch (error) {
      const translated = this.translate(error, 'stat', key);
      if (translated instanceof NotFoundError) return undefined;
      throw translated;
    }
  }

  async *list(prefix: string): AsyncIterable<ObjectInfo> {
    let token: string | undefined;
    do {
      let page;
      try {
        page = await this.client.send(new ListObjectsV2Command({ Bucket: this.bucket, Prefix: this.key(prefix), ContinuationToken: token }));
      } catch (error) {
        throw this.translate(error, 'list', prefix);
      }
      for (const object of page.Contents ?? []) {
        if (object.Key === undefined || !object.Key.startsWith(this.prefix)) continue;
        yield { key: object.Key.slice(this.prefix.length), size: object.Size ?? 0 };
      }
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token);
  }

  async delete(key: string): Promise<void> {
    try {
      await this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: this.key(key) }));
    } catch (error) {
      const translated = this.translate(error, 'delete', key);
      if (!(translated instanceof NotFoundError)) throw translated;
    }
  }

  private async putMultipart(key: string, data: Buffer, options: PutOptions): Promise<void> {
    const Key = this.key(key);
    let uploadId: string | undefined;
    try {
      uploadId = (await this.client.send(new CreateMultipartUploadCommand({ Bucket: this.bucket, Key }))).UploadId;
      if (!uploadId) throw new Error('the service returned no upload id');
      const parts: Array<{ PartNumber: number; ETag: string }> = [];
      const ranges = Array.from({ length: Math.ceil(data.length / this.partSize) }, (_, i) => i);
      await mapLimit(ranges, this.concurrency, async (i) => {
        const body = data.subarray(i * this.partSize, Math.min(data.length, (i + 1) * this.partSize));
        const out = await this.client.send(new UploadPartCommand({ Bucket: this.bucket, Key, UploadId: uploadId, PartNumber: i + 1, Body: body, ContentLength: body.length }));
        if (!out.ETag) throw new Error(`part ${i + 1} got no ETag`);
        parts.push({ PartNumber: i + 1, ETag: out.ETag });
      });
      parts.sort((a, b) => a.PartNumber - b.PartNumber);
      await this.client.send(
        new CompleteMultipartUploadCommand({ Bucket: this.bucket, Key, UploadId: uploadId, MultipartUpload: { Parts: parts }, ...(options.ifAbsent ? { IfNoneMatch: '*' } : {}) }),
      );
    } catch (error) {
      if (uploadId) await this.client.send(new AbortMultipartUploadCommand({ Bucket: this.bucket, Key, UploadId: uploadId })).catch(() => undefined);
      throw this.translate(error, 'write', key);
    }
  }

  private key(key: string): string {
    return `${this.prefix}${key}`;
  }

  /** One place that turns SDK errors into the Storage contract's errors. */
  private translate(error: unknown, action: string, key: string): Error {
    if (error instanceof CairnError) return error;
    const name = (error as { name?: string }).name ?? '';
    const status = error instanceof S3ServiceException ? error.$metadata.httpStatusCode : (error as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode;
    if (name === 'NoSuchKey' || name === 'NotFound' || (status === 404 && name !== 'NoSuchBucket')) return new NotFoundError(key, { cause: error });
    if (name === 'PreconditionFailed' || name === 'ConditionalRequestConflict' || status === 412) return new AlreadyExistsError(key, { cause: error });
    if (name === 'NoSuchBucket') {
      return new CairnError('Cairn.Storage', `the bucket ${this.bucket} does not exist (${action} ${key} in ${this.location})`, { hint: 'create the bucket or fix the repository URL', cause: error });
    }
    if (name === 'AccessDenied' || name === 'Forbidden' || status === 403) {
      return new CairnError('Cairn.Storage', `access denied: cannot ${action} ${key} in ${this.location}`, {
        hint: action === 'delete' ? 'deleting needs operator or control-plane credentials; hosts cannot delete backups' : 'check the credentials and the IAM policy for this bucket and prefix',
        cause: error,
      });
    }
    return new CairnError('Cairn.Storage', `cannot ${action} ${key} in ${this.location}: ${errorMessage(error)}${status ? ` (HTTP ${status})` : ''}`, { cause: error });
  }
}
