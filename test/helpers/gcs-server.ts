import { createHash, randomBytes } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { CRC32C } from '@google-cloud/storage';

/**
 * TEST ONLY: an in-memory, protocol-level server for the subset of the Google
 * Cloud Storage JSON API that `@google-cloud/storage` uses, so the real client
 * runs against real sockets (no GCS emulator installs offline). It is a
 * STAND-IN for GCS and no
 * production code may rely on it.
 *
 * Paths are accepted with and without the `/storage/v1` and `/upload` and
 * `/download` prefixes (STORAGE_EMULATOR_HOST sends `/b/...`, apiEndpoint
 * `/storage/v1/b/...`). Served: bucket create/get; multipart, media and
 * resumable uploads (Content-Range `bytes a-*\/*`, `a-*\/T`, `a-b/*`, `a-b/T`,
 * `*\/T`, `*\/*`); metadata GET/PATCH; media GET with ranges and x-goog-hash;
 * list with prefix/delimiter/maxResults/pageToken (1000 a page by default);
 * DELETE; `ifGenerationMatch` (0 = create only) on uploads.
 *
 * Fault injection: `failNext(count, kind, match)` faults the next matching
 * requests: '503' / '500' / '429' (error JSON, not carried out), '403' (access
 * denied), 'reset' (connection destroyed while the request arrives, nothing
 * carried out), 'reset-after-handling' (carried out, then the connection is
 * destroyed: a lost answer), 'truncate-response' (status, headers and half the
 * body, then destroyed). Buckets that were never created answer 404 "The
 * specified bucket does not exist." like GCS; `deny(bucket)` makes every
 * request on a bucket 403.
 */
export type GcsFaultKind = '503' | '500' | '429' | '403' | 'reset' | 'reset-after-handling' | 'truncate-response';

export interface GcsRequestInfo {
  method: string;
  /** The path with the /storage/v1, /upload and /download prefixes removed. */
  path: string;
  query: URLSearchParams;
  /** True for uploads (requests that went to /upload/...). */
  upload: boolean;
  /** The path as sent, prefixes included. */
  rawPath: string;
  headers: IncomingMessage['headers'];
}

/** A method ('PUT'), a method and query parameter ('GET?alt' is a media download), or a predicate. */
export type GcsMatch = string | ((request: GcsRequestInfo) => boolean);

export interface StoredObject {
  name: string;
  data: Buffer;
  generation: number;
  metageneration: number;
  contentType: string;
  metadata: Record<string, string>;
  timeCreated: string;
  updated: string;
}

export interface GcsTestServer {
  /** `http://127.0.0.1:<port>`: use as STORAGE_EMULATOR_HOST or the client's apiEndpoint. */
  endpoint: string;
  /** Requests received so far, faulted ones included. */
  readonly requests: number;
  /** Every request received, in order. */
  readonly log: ReadonlyArray<GcsRequestInfo & { authorization: string | undefined }>;
  /** Uploads answered 412 because of ifGenerationMatch. */
  readonly preconditionFailures: number;
  createBucket(name: string): void;
  /** Every request on this bucket answers 403 until allowed again. */
  deny(bucket: string, denied?: boolean): void;
  objects(bucket: string): ReadonlyMap<string, StoredObject>;
  failNext(count: number, kind: GcsFaultKind, match?: GcsMatch): void;
  pendingFaults(): number;
  /** Resumable sessions started and not yet finalized. */
  openSessions(): number;
  stop(): Promise<void>;
}

interface Session {
  bucket: string;
  name: string;
  contentType: string;
  metadata: Record<string, string>;
  ifGenerationMatch: string | null;
  received: Buffer[];
  size: number;
  done: Record<string, unknown> | undefined;
}

interface Fault {
  kind: GcsFaultKind;
  match: ((request: GcsRequestInfo) => boolean) | undefined;
}

class HttpError extends Error {
  readonly status: number;
  readonly reason: string;
  constructor(status: number, message: string, reason: string) {
    super(message);
    this.status = status;
    this.reason = reason;
  }
}

const PAGE_SIZE = 1000;

export function crc32cBase64(data: Buffer): string {
  const crc = new CRC32C();
  crc.update(data);
  return crc.toString();
}

export async function startGcsTestServer(options: { buckets?: string[] } = {}): Promise<GcsTestServer> {
  const buckets = new Map<string, Map<string, StoredObject>>();
  const denied = new Set<string>();
  const sessions = new Map<string, Session>();
  const faults: Fault[] = [];
  const log: Array<GcsRequestInfo & { authorization: string | undefined }> = [];
  const counts = { requests: 0, preconditionFailures: 0, generation: 1_700_000_000_000_000 };
  for (const name of options.buckets ?? []) buckets.set(name, new Map());

  const objectJson = (bucket: string, object: StoredObject): Record<string, unknown> => ({
    kind: 'storage#object',
    id: `${bucket}/${object.name}/${object.generation}`,
    selfLink: `http://gcs-test-server/storage/v1/b/${bucket}/o/${encodeURIComponent(object.name)}`,
    name: object.name,
    bucket,
    generation: String(object.generation),
    metageneration: String(object.metageneration),
    contentType: object.contentType,
    storageClass: 'STANDARD',
    size: String(object.data.length),
    md5Hash: createHash('md5').update(object.data).digest('base64'),
    crc32c: crc32cBase64(object.data),
    etag: Buffer.from(String(object.generation)).toString('base64'),
    metadata: object.metadata,
    timeCreated: object.timeCreated,
    updated: object.updated,
  });

  const bucketOf = (name: string): Map<string, StoredObject> => {
    if (denied.has(name)) throw denial(name);
    const found = buckets.get(name);
    if (!found) throw new HttpError(404, 'The specified bucket does not exist.', 'notFound');
    return found;
  };

  const store = (
    bucket: string,
    name: string,
    data: Buffer,
    contentType: string,
    metadata: Record<string, string>,
    ifGenerationMatch: string | null,
  ): Record<string, unknown> => {
    const objects = bucketOf(bucket);
    checkPrecondition(objects.get(name), ifGenerationMatch);
    const now = new Date().toISOString();
    const object: StoredObject = {
      name,
      data,
      generation: ++counts.generation,
      metageneration: 1,
      contentType,
      metadata,
      timeCreated: now,
      updated: now,
    };
    objects.set(name, object);
    return objectJson(bucket, object);
  };

  const checkPrecondition = (existing: StoredObject | undefined, ifGenerationMatch: string | null): void => {
    if (ifGenerationMatch === null) return;
    const current = existing?.generation ?? 0;
    if (String(current) !== ifGenerationMatch) {
      counts.preconditionFailures++;
      throw new HttpError(412, 'At least one of the pre-conditions you specified did not hold.', 'conditionNotMet');
    }
  };

  const handle = (
    req: IncomingMessage,
    info: GcsRequestInfo,
    body: Buffer,
    origin: string,
  ): { status: number; headers?: Record<string, string>; body?: Buffer | Record<string, unknown> } => {
    const { method, path, query } = info;
    const parts = path
      .split('/')
      .filter((p) => p !== '')
      .map((p) => decodeURIComponent(p));
    // POST /b?project= : create a bucket.
    if (parts.length === 1 && parts[0] === 'b') {
      if (method !== 'POST') throw new HttpError(405, 'method not allowed', 'invalid');
      const name = (JSON.parse(body.toString() || '{}') as { name?: string }).name ?? '';
      if (buckets.has(name))
        throw new HttpError(409, 'Your previous request to create the named bucket succeeded and you already own it.', 'conflict');
      buckets.set(name, new Map());
      return {
        status: 200,
        body: { kind: 'storage#bucket', id: name, name, location: 'US', storageClass: 'STANDARD', timeCreated: new Date().toISOString() },
      };
    }
    if (parts[0] !== 'b' || parts[1] === undefined) throw new HttpError(404, 'Not Found', 'notFound');
    const bucket = parts[1];
    if (parts.length === 2) {
      bucketOf(bucket);
      return { status: 200, body: { kind: 'storage#bucket', id: bucket, name: bucket, location: 'US', storageClass: 'STANDARD' } };
    }
    if (parts[2] !== 'o') throw new HttpError(404, 'Not Found', 'notFound');
    const objects = bucketOf(bucket);
    // Object names may contain slashes, encoded or not.
    const name = parts.length > 3 ? parts.slice(3).join('/') : undefined;

    if (name === undefined && method === 'GET') return { status: 200, body: list(bucket, objects, query) };
    if (name === undefined && (method === 'POST' || method === 'PUT') && info.upload) return upload(req, bucket, body, query, origin);
    if (name === undefined) throw new HttpError(405, 'method not allowed', 'invalid');

    const object = objects.get(name);
    if (method === 'DELETE') {
      if (!object) throw noSuchObject(bucket, name);
      objects.delete(name);
      return { status: 204 };
    }
    if (!object) throw noSuchObject(bucket, name);
    if (method === 'GET' && query.get('alt') === 'media') return media(req, object);
    if (method === 'GET') return { status: 200, body: objectJson(bucket, object) };
    if (method === 'PATCH') {
      const patch = JSON.parse(body.toString() || '{}') as { metadata?: Record<string, string | null>; contentType?: string };
      for (const [key, value] of Object.entries(patch.metadata ?? {})) {
        if (value === null) object.metadata = Object.fromEntries(Object.entries(object.metadata).filter(([name]) => name !== key));
        else object.metadata[key] = value;
      }
      if (patch.contentType) object.contentType = patch.contentType;
      object.metageneration++;
      object.updated = new Date().toISOString();
      return { status: 200, body: objectJson(bucket, object) };
    }
    throw new HttpError(405, 'method not allowed', 'invalid');
  };

  const list = (bucket: string, objects: Map<string, StoredObject>, query: URLSearchParams): Record<string, unknown> => {
    const prefix = query.get('prefix') ?? '';
    const delimiter = query.get('delimiter') ?? '';
    const maxResults = Math.min(PAGE_SIZE, Number(query.get('maxResults') ?? PAGE_SIZE) || PAGE_SIZE);
    const after = query.get('pageToken') === null ? undefined : Buffer.from(query.get('pageToken') ?? '', 'base64url').toString();
    const names = [...objects.keys()].filter((n) => n.startsWith(prefix)).sort();
    const items: Record<string, unknown>[] = [];
    const prefixes: string[] = [];
    let last: string | undefined;
    let truncated = false;
    for (const n of names) {
      let entry = n;
      if (delimiter !== '') {
        const at = n.indexOf(delimiter, prefix.length);
        if (at >= 0) entry = n.slice(0, at + delimiter.length);
      }
      if (after !== undefined && entry <= after) continue;
      if (entry === last) continue;
      if (items.length + prefixes.length >= maxResults) {
        truncated = true;
        break;
      }
      last = entry;
      if (entry === n) items.push(objectJson(bucket, objects.get(n)!));
      else prefixes.push(entry);
    }
    return {
      kind: 'storage#objects',
      ...(items.length > 0 ? { items } : {}),
      ...(prefixes.length > 0 ? { prefixes } : {}),
      ...(truncated && last !== undefined ? { nextPageToken: Buffer.from(last).toString('base64url') } : {}),
    };
  };

  const media = (req: IncomingMessage, object: StoredObject): { status: number; headers: Record<string, string>; body: Buffer } => {
    const headers: Record<string, string> = {
      'content-type': object.contentType,
      'x-goog-hash': `crc32c=${crc32cBase64(object.data)},md5=${createHash('md5').update(object.data).digest('base64')}`,
      'x-goog-generation': String(object.generation),
      'x-goog-stored-content-length': String(object.data.length),
      'accept-ranges': 'bytes',
    };
    const range = req.headers.range;
    if (range === undefined) return { status: 200, headers, body: object.data };
    const match = /^bytes=(\d*)-(\d*)$/.exec(range);
    if (!match) return { status: 200, headers, body: object.data };
    const size = object.data.length;
    let start: number;
    let end: number;
    if (match[1] === '') {
      start = Math.max(0, size - Number(match[2]));
      end = size - 1;
    } else {
      start = Number(match[1]);
      end = match[2] === '' ? size - 1 : Math.min(Number(match[2]), size - 1);
    }
    if (start >= size) throw new HttpError(416, 'The requested range cannot be satisfied.', 'requestedRangeNotSatisfiable');
    headers['content-range'] = `bytes ${start}-${end}/${size}`;
    return { status: 206, headers, body: object.data.subarray(start, end + 1) };
  };

  const upload = (
    req: IncomingMessage,
    bucket: string,
    body: Buffer,
    query: URLSearchParams,
    origin: string,
  ): { status: number; headers?: Record<string, string>; body?: Record<string, unknown> } => {
    const type = query.get('uploadType');
    if (type === 'media') {
      const name = query.get('name') ?? '';
      return {
        status: 200,
        body: store(bucket, name, body, req.headers['content-type'] ?? 'application/octet-stream', {}, query.get('ifGenerationMatch')),
      };
    }
    if (type === 'multipart') {
      const { meta, media: data, mediaType } = parseMultipart(req, body);
      const name = (meta.name as string | undefined) ?? query.get('name') ?? '';
      return {
        status: 200,
        body: store(
          bucket,
          name,
          data,
          (meta.contentType as string | undefined) ?? mediaType,
          (meta.metadata as Record<string, string> | undefined) ?? {},
          query.get('ifGenerationMatch'),
        ),
      };
    }
    if (type !== 'resumable') throw new HttpError(400, `unsupported uploadType ${type ?? ''}`, 'invalid');
    const uploadId = query.get('upload_id');
    if (uploadId === null) {
      const meta = JSON.parse(body.toString() || '{}') as { name?: string; contentType?: string; metadata?: Record<string, string> };
      const name = meta.name ?? query.get('name') ?? '';
      const ifGenerationMatch = query.get('ifGenerationMatch');
      // GCS checks preconditions when the session starts and again when it is finalized.
      checkPrecondition(bucketOf(bucket).get(name), ifGenerationMatch);
      const id = randomBytes(12).toString('hex');
      sessions.set(id, {
        bucket,
        name,
        contentType: meta.contentType ?? String(req.headers['x-upload-content-type'] ?? 'application/octet-stream'),
        metadata: meta.metadata ?? {},
        ifGenerationMatch,
        received: [],
        size: 0,
        done: undefined,
      });
      const location = `${origin}${rawPath(req)}?uploadType=resumable&name=${encodeURIComponent(name)}&upload_id=${id}`;
      return { status: 200, headers: { location }, body: {} };
    }
    const session = sessions.get(uploadId);
    if (!session) throw new HttpError(404, 'No such upload session.', 'notFound');
    if (session.done) return { status: 200, body: session.done };
    const contentRange = req.headers['content-range'] ?? '';
    const persisted = (): Record<string, string> => (session.size > 0 ? { range: `bytes=0-${session.size - 1}` } : {});
    // Status query: bytes */T or bytes */*.
    const status = /^bytes \*\/(\d+|\*)$/.exec(contentRange);
    if (status) {
      if (status[1] !== '*' && Number(status[1]) === session.size) return finalize(session);
      return { status: 308, headers: persisted() };
    }
    const chunk = /^bytes (\d+)-(\d+|\*)\/(\d+|\*)$/.exec(contentRange);
    if (!chunk) throw new HttpError(400, `bad Content-Range ${JSON.stringify(contentRange)}`, 'invalid');
    const first = Number(chunk[1]);
    if (chunk[2] !== '*' && Number(chunk[2]) !== first + body.length - 1) {
      throw new HttpError(400, `Content-Range ${contentRange} does not match the ${body.length} bytes sent`, 'invalid');
    }
    // A chunk that does not continue what was persisted: GCS answers with what it has.
    if (first > session.size) return { status: 308, headers: persisted() };
    // Overlap with persisted bytes (a resent chunk): keep only the new ones.
    const fresh = body.subarray(session.size - first);
    session.received.push(fresh);
    session.size += fresh.length;
    const total = chunk[3] === '*' ? undefined : Number(chunk[3]);
    // `a-*` streams the rest of the object in this request: its end is the object's end.
    const last = chunk[2] === '*' || (total !== undefined && session.size >= total);
    if (!last) return { status: 308, headers: persisted() };
    if (total !== undefined && session.size !== total)
      throw new HttpError(400, `upload ended after ${session.size} of ${total} bytes`, 'invalid');
    return finalize(session);
  };

  const finalize = (session: Session): { status: number; body: Record<string, unknown> } => {
    const data = Buffer.concat(session.received, session.size);
    const result = store(session.bucket, session.name, data, session.contentType, session.metadata, session.ifGenerationMatch);
    session.done = result;
    session.received = [];
    return { status: 200, body: result };
  };

  const respond = (
    res: ServerResponse,
    status: number,
    headers: Record<string, string> = {},
    body?: Buffer | Record<string, unknown>,
  ): Buffer => {
    const payload = body === undefined ? Buffer.alloc(0) : Buffer.isBuffer(body) ? body : Buffer.from(JSON.stringify(body));
    const all: Record<string, string> = {
      ...(Buffer.isBuffer(body) ? {} : { 'content-type': 'application/json; charset=UTF-8' }),
      ...headers,
    };
    if (status !== 204 && status !== 308) all['content-length'] = String(payload.length);
    if (status === 308) all['content-length'] = '0';
    res.writeHead(status, all);
    return payload;
  };

  const server = createServer((req, res) => {
    counts.requests++;
    const url = new URL(req.url ?? '/', 'http://gcs-test-server');
    let path = url.pathname;
    let upload = false;
    if (path.startsWith('/upload/')) {
      upload = true;
      path = path.slice('/upload'.length);
    } else if (path.startsWith('/download/')) {
      path = path.slice('/download'.length);
    }
    if (path.startsWith('/storage/v1/')) path = path.slice('/storage/v1'.length);
    const info: GcsRequestInfo = {
      method: req.method ?? 'GET',
      path,
      query: url.searchParams,
      upload,
      rawPath: url.pathname,
      headers: req.headers,
    };
    log.push({ ...info, authorization: typeof req.headers.authorization === 'string' ? req.headers.authorization : undefined });
    const at = faults.findIndex((f) => f.match === undefined || f.match(info));
    const fault = at >= 0 ? faults.splice(at, 1)[0] : undefined;
    if (fault?.kind === 'reset') {
      const hasBody = Number(req.headers['content-length'] ?? 0) > 0 || req.headers['transfer-encoding'] !== undefined;
      if (!hasBody) {
        req.socket.destroy();
        return;
      }
      req.once('data', () => req.socket.destroy());
      setTimeout(() => req.socket.destroy(), 50).unref();
      return;
    }
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.once('end', () => {
      const body = Buffer.concat(chunks);
      let answer: { status: number; headers?: Record<string, string>; body?: Buffer | Record<string, unknown> };
      if (fault && (fault.kind === '503' || fault.kind === '500' || fault.kind === '429' || fault.kind === '403')) {
        const reasons = { '503': 'backendError', '500': 'internalError', '429': 'rateLimitExceeded', '403': 'forbidden' } as const;
        const messages = {
          '503': 'We encountered an internal error. Please try again.',
          '500': 'We encountered an internal error. Please try again.',
          '429': 'The rate of change requests to the object is too high. Please slow down.',
          '403':
            "cairn-test@example.iam.gserviceaccount.com does not have storage.objects.get access to the Google Cloud Storage object. Permission 'storage.objects.get' denied on resource (or it may not exist).",
        } as const;
        answer = errorAnswer(new HttpError(Number(fault.kind), messages[fault.kind], reasons[fault.kind]));
      } else {
        try {
          answer = handle(req, info, body, `http://${req.headers.host ?? '127.0.0.1'}`);
        } catch (error) {
          if (!(error instanceof HttpError)) {
            answer = errorAnswer(
              new HttpError(500, `test server: ${error instanceof Error ? error.message : String(error)}`, 'internalError'),
            );
          } else {
            answer = errorAnswer(error);
          }
        }
      }
      const payload = respond(res, answer.status, answer.headers, answer.body);
      if (fault?.kind === 'reset-after-handling') {
        req.socket.destroy();
        return;
      }
      if (fault?.kind === 'truncate-response') {
        res.write(payload.subarray(0, Math.floor(payload.length / 2)), () => req.socket.destroy());
        return;
      }
      res.end(payload);
    });
  });
  server.keepAliveTimeout = 60_000;
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;

  return {
    endpoint: `http://127.0.0.1:${port}`,
    get requests() {
      return counts.requests;
    },
    get preconditionFailures() {
      return counts.preconditionFailures;
    },
    log,
    createBucket(name) {
      if (!buckets.has(name)) buckets.set(name, new Map());
    },
    deny(bucket, isDenied = true) {
      if (isDenied) denied.add(bucket);
      else denied.delete(bucket);
    },
    objects: (bucket) => buckets.get(bucket) ?? new Map(),
    failNext(count, kind, match) {
      const predicate = typeof match === 'string' ? matcher(match) : match;
      for (let i = 0; i < count; i++) faults.push({ kind, match: predicate });
    },
    pendingFaults: () => faults.length,
    openSessions: () => [...sessions.values()].filter((s) => s.done === undefined).length,
    stop: async () => {
      faults.length = 0;
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeAllConnections();
      await closed;
    },
  };
}

function matcher(match: string): (request: GcsRequestInfo) => boolean {
  const [method, parameter] = match.split('?');
  return (request) => (!method || request.method === method.toUpperCase()) && (!parameter || request.query.has(parameter));
}

function rawPath(req: IncomingMessage): string {
  return new URL(req.url ?? '/', 'http://gcs-test-server').pathname;
}

function denial(bucket: string): HttpError {
  return new HttpError(
    403,
    `cairn-test@example.iam.gserviceaccount.com does not have storage.objects.get access to the Google Cloud Storage bucket ${bucket}. Permission 'storage.objects.get' denied on resource (or it may not exist).`,
    'forbidden',
  );
}

function noSuchObject(bucket: string, name: string): HttpError {
  return new HttpError(404, `No such object: ${bucket}/${name}`, 'notFound');
}

function errorAnswer(error: HttpError): { status: number; body: Record<string, unknown> } {
  return {
    status: error.status,
    body: {
      error: { code: error.status, message: error.message, errors: [{ message: error.message, domain: 'global', reason: error.reason }] },
    },
  };
}

/** multipart/related: a JSON metadata part, then the media part. */
function parseMultipart(req: IncomingMessage, body: Buffer): { meta: Record<string, unknown>; media: Buffer; mediaType: string } {
  const type = req.headers['content-type'] ?? '';
  const boundary = /boundary="?([^";]+)"?/.exec(type)?.[1];
  if (!boundary) throw new HttpError(400, 'multipart upload without a boundary', 'invalid');
  const delimiter = Buffer.from(`--${boundary}`);
  const parts: Buffer[] = [];
  let at = body.indexOf(delimiter);
  while (at >= 0) {
    const next = body.indexOf(delimiter, at + delimiter.length);
    if (next < 0) break;
    parts.push(body.subarray(at + delimiter.length, next));
    at = next;
  }
  const parsed = parts.map((part) => {
    const split = part.indexOf('\r\n\r\n');
    const head = part.subarray(0, split).toString();
    let content = part.subarray(split + 4);
    if (content.subarray(-2).toString() === '\r\n') content = content.subarray(0, -2);
    return { contentType: /content-type:\s*([^\r\n]+)/i.exec(head)?.[1] ?? 'application/octet-stream', content };
  });
  if (parsed.length < 2) throw new HttpError(400, `multipart upload with ${parsed.length} parts`, 'invalid');
  return {
    meta: JSON.parse(parsed[0]!.content.toString() || '{}') as Record<string, unknown>,
    media: parsed[1]!.content,
    mediaType: parsed[1]!.contentType,
  };
}
