import { randomUUID } from 'node:crypto';
import { IdempotencyStrategy, Storage as GoogleStorage } from '@google-cloud/storage';
import type { Bucket, File, StorageOptions } from '@google-cloud/storage';
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
import { checkEndpoint, parseCloudUrl, positiveOption } from './cloud-url.ts';
import { readKeyFile, readKeyFromSsm, withoutCredentialsNotice, type ParameterReader } from './gcs-credentials.ts';
import { listBucket, modifiedTime } from './listing.ts';
import { BucketKeys } from './object-keys.ts';
import { exactRange, pastEndError } from './ranges.ts';
import { isNetworkError, repeatOnNetworkError } from './retry.ts';

export type { ParameterReader } from './gcs-credentials.ts';

export interface GcsStorageOptions {
  bucket: string;
  /** Object name prefix of the repository, without leading or trailing slash; may be empty. */
  prefix: string;
  /** Another endpoint than Google's (a test server); also STORAGE_EMULATOR_HOST. Requests then carry no credentials unless a key is given. */
  endpoint?: string;
  /** A service-account key JSON file. */
  keyFile?: string;
  /** An SSM Parameter Store parameter (SecureString) holding a service-account key JSON. */
  keySsm?: string;
  /** A service-account key already read. Without keyFile, keySsm or this: Application Default Credentials. */
  credentials?: Record<string, unknown>;
  projectId?: string;
  /** Attempts per request (first try included) for 408, 429, 5xx and connection faults. Default 6. */
  maxAttempts?: number;
  /** Longest wait between retries, seconds; at least 1. Default 32. */
  maxRetryDelaySeconds?: number;
  /** Objects larger than this go up as resumable uploads, in chunks. Default 8 MiB. */
  resumableThreshold?: number;
  /** Bytes per resumable upload request; a multiple of 256 KiB. Default 8 MiB. */
  chunkSize?: number;
  /** A ready client; the options above that configure a client are then ignored. */
  client?: GoogleStorage;
  /** Reads `keySsm`; an SSMClient built with httpHandlerOptions() when absent. */
  parameterReader?: ParameterReader;
}

const MiB = 1 << 20;
const CHUNK_UNIT = 256 * 1024;
const DEFAULTS = { maxAttempts: 6, maxRetryDelaySeconds: 32, resumableThreshold: 8 * MiB, chunkSize: 8 * MiB };
/** Custom metadata naming one put (a random id): a put whose answer was lost checks whether the object is its own. */
const PUT_ID = 'cairn-put-id';
const ROLE_FOR: Record<Operation, { role: string; permission: string }> = {
  read: { role: 'roles/storage.objectViewer', permission: 'storage.objects.get' },
  stat: { role: 'roles/storage.objectViewer', permission: 'storage.objects.get' },
  list: { role: 'roles/storage.objectViewer', permission: 'storage.objects.list' },
  write: { role: 'roles/storage.objectCreator', permission: 'storage.objects.create' },
  delete: { role: 'roles/storage.objectUser', permission: 'storage.objects.delete' },
};

const URL_RULES = {
  scheme: 'gs',
  service: 'GCS',
  form: 'gs://bucket/prefix[?key-file=/path/key.json | ?key-ssm=/parameter/name][&endpoint=http://host:port]',
  bucketPattern: /^[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]$/,
  bucketRule: 'lowercase letters, digits, dots, hyphens and underscores',
  credentials: 'use key-file, key-ssm or Application Default Credentials',
  options: new Set(['endpoint', 'key-file', 'key-ssm', 'project']),
} as const;

/**
 * `gs://bucket/some/prefix[?endpoint=…&key-file=…&key-ssm=…&project=…]`.
 * Credentials: `key-file` (a JSON file), `key-ssm` (an SSM SecureString
 * parameter holding that JSON) or, with neither, Application Default
 * Credentials (GOOGLE_APPLICATION_CREDENTIALS, gcloud's ADC, the metadata
 * server, workload identity federation). STORAGE_EMULATOR_HOST stands for
 * `endpoint` when the URL has none.
 */
export function parseGcsUrl(url: string, env: NodeJS.ProcessEnv): GcsStorageOptions {
  const { bucket, prefix, query, usage } = parseCloudUrl(url, URL_RULES);
  const options: GcsStorageOptions = { bucket, prefix };
  const endpoint = query.get('endpoint') || env.STORAGE_EMULATOR_HOST || undefined;
  if (endpoint !== undefined) {
    checkEndpoint(endpoint, usage);
    options.endpoint = endpoint.replace(/\/+$/, '');
  }
  const keyFile = query.get('key-file');
  const keySsm = query.get('key-ssm');
  if (keyFile && keySsm) throw usage('give key-file or key-ssm, not both');
  if (keyFile) options.keyFile = keyFile;
  if (keySsm) {
    if (!/^[a-zA-Z0-9_.\-/]+$/.test(keySsm)) throw usage('key-ssm must be a Parameter Store name such as /cairn/gcs-key');
    options.keySsm = keySsm;
  }
  const project = query.get('project');
  if (project) options.projectId = project;
  return options;
}

/**
 * Google Cloud Storage through `@google-cloud/storage`. Create-if-absent is
 * `ifGenerationMatch=0` (what roles/storage.objectCreator allows; it cannot
 * overwrite). Objects above the resumable threshold go up as a resumable
 * upload in chunks (an unfinished session is never an object); smaller ones
 * as one multipart request. Modification times are the generation's
 * `timeCreated` (milliseconds).
 *
 * Retries: the client's own (every operation, uploads included: our writes
 * are idempotent, and a conditional one is settled below), with its
 * exponential backoff. Two faults it leaves to us: a download whose body
 * breaks (the download is repeated), and an upload whose object was stored
 * but whose answer was lost (a retried create meets 412; a resumable session
 * cannot tell its offset): every object carries its put's random id in its
 * metadata, so a failed put checks whether the object is its own.
 *
 * HTTP_PROXY, HTTPS_PROXY and NO_PROXY: the client reads them from
 * process.env itself (teeny-request and gaxios); NO_PROXY entries match a host
 * name exactly or as a `.suffix`.
 */
export class GcsStorage implements DeletableStorage {
  readonly location: string;
  readonly atomicCreate = true;
  private readonly options: GcsStorageOptions;
  private readonly bucket: string;
  private readonly keys: BucketKeys;
  private readonly maxAttempts: number;
  private readonly resumableThreshold: number;
  private readonly chunkSize: number;
  private handle: Promise<Bucket> | undefined;
  private explicitCredentials = false;
  /** The service account of a given key, for access-denied messages. */
  private principal: string | undefined;

  constructor(options: GcsStorageOptions) {
    this.options = options;
    this.bucket = options.bucket;
    this.keys = new BucketKeys('gs', options.bucket, options.prefix);
    this.location = this.keys.location;
    this.maxAttempts = positiveOption(options.maxAttempts, DEFAULTS.maxAttempts);
    this.resumableThreshold = positiveOption(options.resumableThreshold, DEFAULTS.resumableThreshold);
    this.chunkSize = Math.max(CHUNK_UNIT, Math.floor(positiveOption(options.chunkSize, DEFAULTS.chunkSize) / CHUNK_UNIT) * CHUNK_UNIT);
  }

  async get(key: string): Promise<Buffer> {
    return this.download(key, undefined);
  }

  getRange(key: string, offset: number, length: number): Promise<Buffer> {
    return exactRange(this.location, key, offset, length, {
      exists: async () => (await this.stat(key)) !== undefined,
      read: () => this.download(key, { offset, length }),
    });
  }

  async put(key: string, data: Buffer, options: PutOptions = {}): Promise<void> {
    const file = (await this.bucketHandle()).file(this.keys.objectName(key));
    const ifAbsent = options.ifAbsent === true;
    const putId = randomUUID();
    const resumable = data.length > this.resumableThreshold;
    try {
      await file.save(data, {
        resumable,
        ...(resumable ? { chunkSize: this.chunkSize } : {}),
        validation: 'crc32c',
        contentType: 'application/octet-stream',
        metadata: { contentType: 'application/octet-stream', metadata: { [PUT_ID]: putId } },
        ...(ifAbsent ? { preconditionOpts: { ifGenerationMatch: 0 } } : {}),
      });
    } catch (error) {
      // An answer lost after the object was stored: a retried create then meets 412, and a resumable
      // upload whose final answer was lost gives up ("offset is lower than the number of bytes written").
      // Either way the object may be this put's own.
      const status = statusOf(error);
      if (status !== 403 && status !== 404 && status !== 401 && (await this.isOwnPut(file, putId))) return;
      throw this.translate(error, 'write', key);
    }
  }

  async stat(key: string): Promise<ObjectInfo | undefined> {
    const file = (await this.bucketHandle()).file(this.keys.objectName(key));
    try {
      const [metadata] = await file.getMetadata();
      return { key, size: Number(metadata.size ?? 0), modified: modifiedTime(storedAt(metadata), key, this.location) };
    } catch (error) {
      const translated = this.translate(error, 'stat', key);
      if (translated instanceof NotFoundError) return undefined;
      throw translated;
    }
  }

  list(prefix: string): AsyncIterable<ObjectInfo> {
    return listBucket(
      this.keys,
      prefix,
      async (namePrefix, token) => {
        const bucket = await this.bucketHandle();
        const [files, next] = await bucket.getFiles({
          prefix: namePrefix,
          autoPaginate: false,
          maxResults: 1000,
          ...(token ? { pageToken: token } : {}),
        });
        return {
          objects: files.map((file) => ({ name: file.name, size: file.metadata.size, modified: storedAt(file.metadata) })),
          next: (next as { pageToken?: string } | null | undefined)?.pageToken || undefined,
        };
      },
      (error) => this.translate(error, 'list', prefix),
    );
  }

  async delete(key: string): Promise<void> {
    const file = (await this.bucketHandle()).file(this.keys.objectName(key));
    try {
      await file.delete();
    } catch (error) {
      const translated = this.translate(error, 'delete', key);
      if (!(translated instanceof NotFoundError)) throw translated;
    }
  }

  /** The object's bytes; a body that breaks or fails its checksum repeats the download (the client's retries end at the headers). */
  private async download(key: string, range: { offset: number; length: number } | undefined): Promise<Buffer> {
    const file = (await this.bucketHandle()).file(this.keys.objectName(key));
    try {
      return await repeatOnNetworkError(this.maxAttempts, async () => {
        const [data] = await file.download(
          range ? { start: range.offset, end: range.offset + range.length - 1, validation: false } : { validation: 'crc32c' },
        );
        return data;
      });
    } catch (error) {
      throw this.translate(error, 'read', key);
    }
  }

  private async isOwnPut(file: File, putId: string): Promise<boolean> {
    try {
      const [metadata] = await file.getMetadata();
      return metadata.metadata?.[PUT_ID] === putId;
    } catch {
      return false;
    }
  }

  /**
   * The service account the client authenticates as, when a key was given
   * (key-file, key-ssm), as the Google auth library read it; undefined with
   * Application Default Credentials.
   */
  async identity(): Promise<string | undefined> {
    const bucket = await this.bucketHandle();
    if (!this.explicitCredentials) return undefined;
    return (await bucket.storage.authClient.getCredentials()).client_email;
  }

  private bucketHandle(): Promise<Bucket> {
    this.handle ??= this.createClient().then((client) => client.bucket(this.bucket));
    return this.handle;
  }

  private async createClient(): Promise<GoogleStorage> {
    const options = this.options;
    if (options.client) return options.client;
    const credentials =
      options.credentials ??
      (options.keyFile
        ? await readKeyFile(options.keyFile)
        : options.keySsm
          ? await readKeyFromSsm(options.keySsm, options.parameterReader)
          : undefined);
    const projectId = options.projectId ?? (typeof credentials?.project_id === 'string' ? credentials.project_id : undefined);
    this.explicitCredentials = credentials !== undefined;
    if (typeof credentials?.client_email === 'string') this.principal = credentials.client_email;
    const config: StorageOptions = {
      ...(options.endpoint ? { apiEndpoint: options.endpoint } : {}),
      // A custom https:// endpoint (Private Service Connect) gets credentials; an http:// one (an emulator,
      // a test server) never does: a bearer token does not travel in cleartext.
      ...(options.endpoint?.startsWith('https://') ? { useAuthWithCustomEndpoint: true } : {}),
      // Deprecated for externally sourced configs (an external_account config can name a command to run);
      // parseCredentials accepts only service-account keys, which is the validation Google asks for.
      // eslint-disable-next-line @typescript-eslint/no-deprecated
      ...(credentials ? { credentials } : {}),
      ...(projectId ? { projectId } : {}),
      retryOptions: {
        autoRetry: true,
        maxRetries: this.maxAttempts - 1,
        retryDelayMultiplier: 2,
        // At least 1 s: uploads retry through async-retry, whose first wait is 1 s and which refuses a smaller cap.
        maxRetryDelay: Math.max(1, options.maxRetryDelaySeconds ?? DEFAULTS.maxRetryDelaySeconds),
        totalTimeout: 600,
        // Our writes are idempotent (content-addressed or create-only; a conditional one is settled in put).
        idempotencyStrategy: IdempotencyStrategy.RetryAlways,
      },
    };
    return credentials ? withoutCredentialsNotice(() => new GoogleStorage(config)) : new GoogleStorage(config);
  }

  private missingBucket(operation: Operation, key: string, cause: unknown): CairnError {
    const hint = `create the bucket gs://${this.bucket}, or fix the bucket name or endpoint in the repository URL`;
    return missingBucketError(this.bucket, describeOperation(operation, key, this.location), hint, cause);
  }

  /** The one place where client and network errors become the Storage contract's errors. */
  private translate(error: unknown, operation: Operation, key: string): CairnError {
    if (error instanceof CairnError) return error;
    const status = statusOf(error);
    const message = errorMessage(error);
    const where = describeOperation(operation, key, this.location);
    if (status === 404 && /bucket does not exist/i.test(message)) return this.missingBucket(operation, key, error);
    if (status === 404) return new NotFoundError(key, { cause: error });
    if (operation === 'write' && status === 412) return new AlreadyExistsError(key, { cause: error });
    if (
      status === 401 ||
      /could not load the default credentials|invalid_grant|could not refresh access token|unable to detect a project id/i.test(message)
    ) {
      const hint =
        "check the credentials: key-file or key-ssm in the repository URL, GOOGLE_APPLICATION_CREDENTIALS, `gcloud auth application-default login`, or the VM's service account";
      return credentialsError(where, 'the Google credentials were refused or could not be loaded', hint, error);
    }
    if (status === 403) {
      const { role, permission } = ROLE_FOR[operation];
      const hint =
        `${this.principal ?? 'the identity in use'} needs ${role} (${permission}) on gs://${this.bucket}` +
        (operation === 'write'
          ? '; hosts get roles/storage.objectCreator and roles/storage.objectViewer, which create objects but never overwrite one (that needs storage.objects.delete)'
          : '') +
        (operation === 'delete' ? '; hosts are not meant to delete: use operator credentials' : '');
      return accessDeniedError(where, this.bucket, `object ${this.keys.base + key}`, hint, error);
    }
    if (status === 416) return pastEndError(where, error);
    const transient = status === undefined || status >= 500 || status === 429 || status === 408 || isNetworkError(error);
    const details = [status !== undefined ? `HTTP ${status}` : undefined];
    return serviceFailure(where, message, details, transient ? { service: 'GCS' } : undefined, error);
  }
}

/** The HTTP status of an ApiError (code), a GaxiosError (status) or a resumable upload failure (code). */
function statusOf(error: unknown): number | undefined {
  if (typeof error !== 'object' || error === null) return undefined;
  const { code, status, response } = error as { code?: unknown; status?: unknown; response?: { status?: unknown } };
  if (typeof code === 'number') return code;
  if (typeof status === 'number') return status;
  if (typeof response?.status === 'number') return response.status;
  return undefined;
}

/**
 * When the object's current generation was stored. `timeCreated`, not
 * `updated`: a metadata change moves `updated`, never the content's time.
 */
function storedAt(metadata: { timeCreated?: string | undefined; updated?: string | undefined }): string | undefined {
  return metadata.timeCreated ?? metadata.updated;
}
