import { randomUUID } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { IdempotencyStrategy, Storage as GoogleStorage } from '@google-cloud/storage';
import type { Bucket, File, StorageOptions } from '@google-cloud/storage';
import { AlreadyExistsError, CairnError, NotFoundError } from '../core/errors.ts';
import type { DeletableStorage, ObjectInfo, PutOptions } from '../core/storage.ts';
import { httpHandlerOptions } from './proxy.ts';

/** What reads the SSM parameter holding a key: the real SSMClient, or a stand-in with its interface in tests. */
export interface ParameterReader {
  send(command: { input: { Name?: string; WithDecryption?: boolean } }): Promise<{ Parameter?: { Value?: string } }>;
}

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

type Operation = 'read' | 'write' | 'stat' | 'list' | 'delete';

const MiB = 1 << 20;
const CHUNK_UNIT = 256 * 1024;
const DEFAULTS = { maxAttempts: 6, maxRetryDelaySeconds: 32, resumableThreshold: 8 * MiB, chunkSize: 8 * MiB };
const URL_OPTIONS = new Set(['endpoint', 'key-file', 'key-ssm', 'project']);
/** Custom metadata naming one put (a random id): a put whose answer was lost checks whether the object is its own. */
const PUT_ID = 'cairn-put-id';
const NETWORK_ERROR_CODES = new Set([
  'ECONNRESET',
  'EPIPE',
  'ETIMEDOUT',
  'ECONNREFUSED',
  'ECONNABORTED',
  'ERR_STREAM_PREMATURE_CLOSE',
  'CONTENT_DOWNLOAD_MISMATCH',
]);
const ROLE_FOR: Record<Operation, { role: string; permission: string }> = {
  read: { role: 'roles/storage.objectViewer', permission: 'storage.objects.get' },
  stat: { role: 'roles/storage.objectViewer', permission: 'storage.objects.get' },
  list: { role: 'roles/storage.objectViewer', permission: 'storage.objects.list' },
  write: { role: 'roles/storage.objectCreator', permission: 'storage.objects.create' },
  delete: { role: 'roles/storage.objectUser', permission: 'storage.objects.delete' },
};

/**
 * `gs://bucket/some/prefix[?endpoint=…&key-file=…&key-ssm=…&project=…]`.
 * Credentials: `key-file` (a JSON file), `key-ssm` (an SSM SecureString
 * parameter holding that JSON) or, with neither, Application Default
 * Credentials (GOOGLE_APPLICATION_CREDENTIALS, gcloud's ADC, the metadata
 * server, workload identity federation). STORAGE_EMULATOR_HOST stands for
 * `endpoint` when the URL has none.
 */
export function parseGcsUrl(url: string, env: NodeJS.ProcessEnv): GcsStorageOptions {
  const shown = url.replace(/\/\/[^/@]*@/, '//…@');
  const usage = (problem: string): CairnError =>
    new CairnError('Cairn.Usage', `invalid GCS repository URL ${shown}: ${problem}`, {
      hint: 'use gs://bucket/prefix[?key-file=/path/key.json | ?key-ssm=/parameter/name][&endpoint=http://host:port]',
    });
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch (cause) {
    throw new CairnError('Cairn.Usage', `invalid GCS repository URL ${shown}`, { hint: 'use gs://bucket/prefix', cause });
  }
  if (parsed.protocol !== 'gs:') throw usage('the scheme is not gs://');
  if (parsed.username || parsed.password)
    throw usage('credentials do not belong in the URL; use key-file, key-ssm or Application Default Credentials');
  const bucket = parsed.hostname;
  if (!/^[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]$/.test(bucket))
    throw usage('no valid bucket name (lowercase letters, digits, dots, hyphens and underscores)');
  for (const name of parsed.searchParams.keys()) {
    if (!URL_OPTIONS.has(name)) throw usage(`unknown option ${JSON.stringify(name)} (known: ${[...URL_OPTIONS].join(', ')})`);
  }
  let prefix: string;
  try {
    prefix = normalizePrefix(decodeURIComponent(parsed.pathname));
  } catch (cause) {
    throw new CairnError('Cairn.Usage', `invalid GCS repository URL ${shown}: the prefix is not valid percent-encoding`, { cause });
  }
  const query = parsed.searchParams;
  const options: GcsStorageOptions = { bucket, prefix };
  const endpoint = query.get('endpoint') || env.STORAGE_EMULATOR_HOST || undefined;
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
 * as one multipart request.
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
  /** The prefix with its trailing slash, or '' for the bucket root. */
  private readonly base: string;
  private readonly maxAttempts: number;
  private readonly resumableThreshold: number;
  private readonly chunkSize: number;
  private handle: Promise<Bucket> | undefined;
  private explicitCredentials = false;
  /** The service account of a given key, for access-denied messages. */
  private principal: string | undefined;

  constructor(options: GcsStorageOptions) {
    const prefix = normalizePrefix(options.prefix);
    this.options = options;
    this.bucket = options.bucket;
    this.base = prefix === '' ? '' : `${prefix}/`;
    this.location = prefix === '' ? `gs://${options.bucket}` : `gs://${options.bucket}/${prefix}`;
    this.maxAttempts = positive(options.maxAttempts, DEFAULTS.maxAttempts);
    this.resumableThreshold = positive(options.resumableThreshold, DEFAULTS.resumableThreshold);
    this.chunkSize = Math.max(CHUNK_UNIT, Math.floor(positive(options.chunkSize, DEFAULTS.chunkSize) / CHUNK_UNIT) * CHUNK_UNIT);
  }

  async get(key: string): Promise<Buffer> {
    return this.download(key, undefined);
  }

  async getRange(key: string, offset: number, length: number): Promise<Buffer> {
    if (!Number.isSafeInteger(offset) || offset < 0 || !Number.isSafeInteger(length) || length < 0) {
      throw new CairnError('Cairn.Usage', `invalid range of ${key}: offset ${offset}, length ${length}`);
    }
    if (length === 0) {
      if ((await this.stat(key)) === undefined) throw new NotFoundError(key);
      return Buffer.alloc(0);
    }
    const data = await this.download(key, { offset, length });
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
    const file = (await this.bucketHandle()).file(this.objectKey(key));
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
    const file = (await this.bucketHandle()).file(this.objectKey(key));
    try {
      const [metadata] = await file.getMetadata();
      return { key, size: Number(metadata.size ?? 0) };
    } catch (error) {
      const translated = this.translate(error, 'stat', key);
      if (translated instanceof NotFoundError) return undefined;
      throw translated;
    }
  }

  async *list(prefix: string): AsyncIterable<ObjectInfo> {
    if (prefix.startsWith('/')) throw new CairnError('Cairn.Usage', `invalid list prefix ${JSON.stringify(prefix)}`);
    const bucket = await this.bucketHandle();
    let pageToken: string | undefined;
    do {
      let files: File[];
      let next: unknown;
      try {
        [files, next] = await bucket.getFiles({
          prefix: this.base + prefix,
          autoPaginate: false,
          maxResults: 1000,
          ...(pageToken ? { pageToken } : {}),
        });
      } catch (error) {
        throw this.translate(error, 'list', prefix);
      }
      for (const file of files) {
        const name = file.name;
        // Names ending in '/' are "folder" placeholders that consoles create, not objects of ours.
        if (!name.startsWith(this.base) || name.endsWith('/')) continue;
        yield { key: name.slice(this.base.length), size: Number(file.metadata.size ?? 0) };
      }
      pageToken = (next as { pageToken?: string } | null | undefined)?.pageToken || undefined;
    } while (pageToken !== undefined);
  }

  async delete(key: string): Promise<void> {
    const file = (await this.bucketHandle()).file(this.objectKey(key));
    try {
      await file.delete();
    } catch (error) {
      const translated = this.translate(error, 'delete', key);
      if (!(translated instanceof NotFoundError)) throw translated;
    }
  }

  /** The object's bytes; a body that breaks or fails its checksum repeats the download (the client's retries end at the headers). */
  private async download(key: string, range: { offset: number; length: number } | undefined): Promise<Buffer> {
    const file = (await this.bucketHandle()).file(this.objectKey(key));
    for (let attempt = 1; ; attempt++) {
      try {
        const [data] = await file.download(
          range ? { start: range.offset, end: range.offset + range.length - 1, validation: false } : { validation: 'crc32c' },
        );
        return data;
      } catch (error) {
        if (attempt < this.maxAttempts && isNetworkError(error)) {
          await sleep(backoff(attempt));
          continue;
        }
        throw this.translate(error, 'read', key);
      }
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
      hint: `create the bucket gs://${this.bucket}, or fix the bucket name or endpoint in the repository URL`,
      cause,
    });
  }

  /** The one place where client and network errors become the Storage contract's errors. */
  private translate(error: unknown, operation: Operation, key: string): CairnError {
    if (error instanceof CairnError) return error;
    const status = statusOf(error);
    const message = errorMessage(error);
    const where = `${operation} ${key} in ${this.location}`;
    if (status === 404 && /bucket does not exist/i.test(message)) return this.missingBucket(operation, key, error);
    if (status === 404) return new NotFoundError(key, { cause: error });
    if (operation === 'write' && status === 412) return new AlreadyExistsError(key, { cause: error });
    if (
      status === 401 ||
      /could not load the default credentials|invalid_grant|could not refresh access token|unable to detect a project id/i.test(message)
    ) {
      return new CairnError('Cairn.Storage', `${where}: the Google credentials were refused or could not be loaded`, {
        hint: "check the credentials: key-file or key-ssm in the repository URL, GOOGLE_APPLICATION_CREDENTIALS, `gcloud auth application-default login`, or the VM's service account",
        cause: error,
      });
    }
    if (status === 403) {
      const { role, permission } = ROLE_FOR[operation];
      return new CairnError('Cairn.Storage', `access denied: ${where} (bucket ${this.bucket}, object ${this.base + key})`, {
        hint:
          `${this.principal ?? 'the identity in use'} needs ${role} (${permission}) on gs://${this.bucket}` +
          (operation === 'write'
            ? '; hosts get roles/storage.objectCreator and roles/storage.objectViewer, which create objects but never overwrite one (that needs storage.objects.delete)'
            : '') +
          (operation === 'delete' ? '; hosts are not meant to delete: use operator credentials' : ''),
        cause: error,
      });
    }
    if (status === 416) {
      return new CairnError('Cairn.Storage', `${where}: the range starts past the end of the object`, {
        hint: 'the object is shorter than the index says; run `cairn verify --read-data`',
        cause: error,
      });
    }
    const transient = status === undefined || status >= 500 || status === 429 || status === 408 || isNetworkError(error);
    return new CairnError('Cairn.Storage', `${where}: ${message}${status !== undefined ? ` (HTTP ${status})` : ''}`, {
      ...(transient
        ? { hint: 'GCS or the network kept failing through the retries; run the command again later (a failed write leaves no object)' }
        : {}),
      cause: error,
    });
  }
}

async function readKeyFile(path: string): Promise<Record<string, unknown>> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (cause) {
    throw new CairnError('Cairn.Storage', `cannot read the GCS key file ${path}: ${errorMessage(cause)}`, {
      hint: 'fix key-file in the repository URL; the file holds a service-account key JSON',
      cause,
    });
  }
  return parseCredentials(text, `the key file ${path}`);
}

async function readKeyFromSsm(name: string, reader: ParameterReader | undefined): Promise<Record<string, unknown>> {
  let value: string | undefined;
  try {
    let ssm = reader;
    if (!ssm) {
      const { SSMClient } = await import('@aws-sdk/client-ssm');
      ssm = new SSMClient({ requestHandler: httpHandlerOptions(process.env) });
    }
    const { GetParameterCommand } = await import('@aws-sdk/client-ssm');
    const out = await ssm.send(new GetParameterCommand({ Name: name, WithDecryption: true }));
    value = out.Parameter?.Value;
  } catch (cause) {
    const errorName = typeof cause === 'object' && cause !== null ? (cause as { name?: unknown }).name : undefined;
    const code = typeof errorName === 'string' ? errorName : '';
    const hint =
      code === 'ParameterNotFound'
        ? `create the SecureString parameter ${name} holding the service-account key JSON, or fix key-ssm in the repository URL`
        : code === 'AccessDeniedException'
          ? `the AWS identity in use needs ssm:GetParameter on the parameter ${name} (and kms:Decrypt on its key)`
          : 'check AWS_REGION and the AWS credentials; the agent reads the parameter with ssm:GetParameter';
    throw new CairnError('Cairn.Storage', `cannot read the GCS key from the SSM parameter ${name}: ${errorMessage(cause)}`, {
      hint,
      cause,
    });
  }
  if (value === undefined)
    throw new CairnError('Cairn.Storage', `the SSM parameter ${name} has no value`, { hint: 'store the service-account key JSON in it' });
  return parseCredentials(value, `the SSM parameter ${name}`);
}

function parseCredentials(text: string, where: string): Record<string, unknown> {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (cause) {
    // Never repeat the text: it is a secret.
    throw new CairnError('Cairn.Storage', `${where} is not JSON`, {
      hint: 'it must hold a service-account key JSON as downloaded from the console',
      cause,
    });
  }
  const key = json as { type?: unknown; client_email?: unknown; private_key?: unknown } | null;
  if (
    typeof key !== 'object' ||
    key === null ||
    key.type !== 'service_account' ||
    typeof key.client_email !== 'string' ||
    typeof key.private_key !== 'string'
  ) {
    throw new CairnError(
      'Cairn.Storage',
      `${where} is not a service-account key (type "service_account" with client_email and private_key)`,
      {
        hint: 'store the service-account key JSON as downloaded from the console; for other credential kinds use GOOGLE_APPLICATION_CREDENTIALS (Application Default Credentials)',
      },
    );
  }
  return json as Record<string, unknown>;
}

/**
 * google-auth-library prints a deprecation notice for the `credentials` option
 * on stderr (it concerns unvalidated external configs; we accept only
 * service-account keys). Building its JWT client ourselves would need
 * google-auth-library as a direct dependency; until then, that one line is
 * kept off the CLI's stderr.
 */
function withoutCredentialsNotice<T>(make: () => T): T {
  const warn = console.warn;
  console.warn = (...args: unknown[]) => {
    if (typeof args[0] === 'string' && args[0].startsWith('The `credentials` option is deprecated')) return;
    warn.apply(console, args);
  };
  try {
    return make();
  } finally {
    console.warn = warn;
  }
}

function normalizePrefix(prefix: string): string {
  return prefix.replace(/\/{2,}/g, '/').replace(/^\/+|\/+$/g, '');
}

function positive(value: number | undefined, fallback: number): number {
  return value !== undefined && Number.isFinite(value) && value >= 1 ? Math.floor(value) : fallback;
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

function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

function isNetworkError(error: unknown, depth = 0): boolean {
  if (typeof error !== 'object' || error === null || depth > 4) return false;
  const { code, name, cause, message } = error as { code?: unknown; name?: unknown; cause?: unknown; message?: unknown };
  if (typeof code === 'string' && NETWORK_ERROR_CODES.has(code)) return true;
  if (name === 'TimeoutError' || name === 'AbortError') return true;
  if (typeof message === 'string' && /premature close|socket hang up|ECONNRESET|aborted/i.test(message)) return true;
  return cause !== undefined && cause !== error && isNetworkError(cause, depth + 1);
}

/** Full-jitter exponential backoff: up to 100 ms, 200 ms, 400 ms … capped at 20 s. */
function backoff(attempt: number): number {
  return Math.floor(Math.random() * Math.min(20_000, 100 * 2 ** (attempt - 1)));
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
