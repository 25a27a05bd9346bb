import { S3Client } from '@aws-sdk/client-s3';
import { NodeHttpHandler } from '@smithy/node-http-handler';
import { ENDPOINT_CREDENTIALS_SHAPE, type EndpointCredentials } from '../core/endpoint-credentials.ts';
import { CairnError } from '../core/errors.ts';
import type { DeletableStorage, ObjectInfo, PutOptions } from '../core/storage.ts';
import { httpHandlerOptions } from './proxy.ts';
import { S3Storage, parseS3Url } from './s3.ts';

/**
 * A plan's repository at an S3-compatible endpoint (MinIO, Ceph RGW; docs/cdk.md, "S3-compatible
 * endpoints"): the `s3://bucket/prefix?endpoint=…&path-style=…` URL as `--repo` takes it, signed
 * with the access key the plan's SecureString parameter holds, given to the client as explicit
 * credentials (never the environment, so no child process and no other client sees it).
 *
 * Calls to the endpoint are not AWS calls: the client is not recorded for the AWS call
 * inventory (agent/core/aws-calls.ts), and no IAM policy governs them.
 *
 * A refused key fails naming the parameter, not the AWS credential chain.
 */
export function openEndpointStorage(
  url: string,
  credentials: { value: EndpointCredentials; parameter: string },
  env: NodeJS.ProcessEnv,
): DeletableStorage {
  // The URL's own options only: CAIRN_S3_ENDPOINT and CAIRN_S3_PATH_STYLE are the CLI's defaults, not the plan's.
  const options = parseS3Url(url, { ...env, CAIRN_S3_ENDPOINT: undefined, CAIRN_S3_PATH_STYLE: undefined });
  if (options.endpoint === undefined)
    throw new CairnError(
      'Cairn.Config',
      `the repository URL names no endpoint, so parameter ${credentials.parameter} has nothing to sign for`,
    );
  const maxAttempts = 6;
  const client = new S3Client({
    region: options.region,
    endpoint: options.endpoint,
    forcePathStyle: options.forcePathStyle,
    credentials: { ...credentials.value },
    retryMode: 'standard',
    maxAttempts,
    // As S3Storage's own client: enough sockets that no request queues (agent/storage/s3.ts), proxies honoured.
    requestHandler: new NodeHttpHandler(httpHandlerOptions(env, { keepAlive: true, maxSockets: 64 })),
  });
  return new EndpointStorage(new S3Storage({ ...options, client, maxAttempts }), client, credentials.parameter);
}

/** S3 error names that mean the endpoint did not accept the key (MinIO, Ceph RGW and s3rver answer with these); a 403 means it denied the request. */
const REFUSED_KEY = new Set(['InvalidAccessKeyId', 'SignatureDoesNotMatch', 'ExpiredToken', 'InvalidToken']);

/** The storage, with a refused key reported as the parameter's problem; closes its client. */
class EndpointStorage implements DeletableStorage {
  readonly location: string;
  readonly atomicCreate: boolean;
  private readonly inner: S3Storage;
  private readonly client: S3Client;
  private readonly parameter: string;

  constructor(inner: S3Storage, client: S3Client, parameter: string) {
    this.inner = inner;
    this.client = client;
    this.parameter = parameter;
    this.location = inner.location;
    this.atomicCreate = inner.atomicCreate;
  }

  get(key: string): Promise<Buffer> {
    return this.translated(() => this.inner.get(key));
  }

  getRange(key: string, offset: number, length: number): Promise<Buffer> {
    return this.translated(() => this.inner.getRange(key, offset, length));
  }

  put(key: string, data: Buffer, options?: PutOptions): Promise<void> {
    return this.translated(() => this.inner.put(key, data, options));
  }

  stat(key: string): Promise<ObjectInfo | undefined> {
    return this.translated(() => this.inner.stat(key));
  }

  delete(key: string): Promise<void> {
    return this.translated(() => this.inner.delete(key));
  }

  async *list(prefix: string): AsyncIterable<ObjectInfo> {
    try {
      yield* this.inner.list(prefix);
    } catch (error) {
      throw this.translate(error);
    }
  }

  destroy(): void {
    this.inner.destroy();
    this.client.destroy();
  }

  private async translated<T>(fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (error) {
      throw this.translate(error);
    }
  }

  private translate(error: unknown): unknown {
    const sdk = sdkError(error);
    if (sdk === undefined) return error;
    // A HEAD answer has no body: a refusal there is a bare 403 with no error name.
    const refused = REFUSED_KEY.has(sdk.name);
    if (!refused && sdk.name !== 'AccessDenied' && sdk.name !== 'Forbidden' && sdk.status !== 403) return error;
    const what = refused
      ? `refused the access key in parameter ${this.parameter} (${sdk.name})`
      : `denied a request signed with the access key in parameter ${this.parameter} (${sdk.status === 403 ? '403 ' : ''}${sdk.name})`;
    return new CairnError('Cairn.Config', `${this.location}: the S3-compatible endpoint ${what}`, {
      hint: `check the key in ${this.parameter} (${ENDPOINT_CREDENTIALS_SHAPE}) and its rights on the bucket at the endpoint (docs/cdk.md, "S3-compatible endpoints")`,
      cause: error,
    });
  }
}

/** The SDK's error behind a storage error (S3Storage keeps it as the cause): its name and HTTP status. */
function sdkError(error: unknown): { name: string; status: number | undefined } | undefined {
  for (let e: unknown = error, depth = 0; e instanceof Error && depth < 4; e = e.cause, depth++) {
    if (e instanceof CairnError) continue;
    const status = (e as { $metadata?: { httpStatusCode?: unknown } }).$metadata?.httpStatusCode;
    return { name: e.name, status: typeof status === 'number' ? status : undefined };
  }
  return undefined;
}
