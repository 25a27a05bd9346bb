import { Agent, createServer, request, type IncomingHttpHeaders, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

/**
 * TEST ONLY: a reverse proxy on 127.0.0.1 in front of an S3-compatible HTTP
 * server (s3rver), with two jobs no production code may rely on.
 *
 * 1. Fault injection, on demand, so the S3 backend's retries are tested
 *    against real sockets: the next N requests (optionally of one method) get
 *    - '503': 503 SlowDown, as S3 throttles (not forwarded);
 *    - '500': 500 InternalError (not forwarded);
 *    - '409': 409 ConditionalRequestConflict, S3's answer to a conditional
 *      write that met a concurrent one (not forwarded);
 *    - '403': 403 AccessDenied, as a missing IAM permission gives (not forwarded);
 *    - 'reset': the connection destroyed while the request arrives (after the
 *      first body bytes, if it has a body); not forwarded;
 *    - 'reset-after-forward': forwarded and carried out by the target, then
 *      the connection destroyed instead of answering (a lost response);
 *    - 'truncate-response': forwarded; the status, headers and half the body
 *      are sent, then the connection is destroyed (a reset mid-download).
 *
 * 2. A conditional-write STAND-IN: real S3 enforces `If-None-Match: *` on
 *    PutObject and CompleteMultipartUpload (412 PreconditionFailed when the
 *    key exists); s3rver ignores it and overwrites. For such a request the
 *    proxy HEADs the object on the target and answers 412 itself when it
 *    exists. Conditional writes to one key are serialized here (HEAD and write
 *    under one lock), so concurrent create-if-absent writes through this proxy
 *    behave atomically, as they do on S3.
 */
export type FaultKind = '503' | '500' | '409' | '403' | 'reset' | 'reset-after-forward' | 'truncate-response';

const ERROR_REPLIES: Record<'503' | '500' | '409' | '403', { code: string; message: string }> = {
  '503': { code: 'SlowDown', message: 'Please reduce your request rate.' },
  '500': { code: 'InternalError', message: 'We encountered an internal error. Please try again.' },
  '409': { code: 'ConditionalRequestConflict', message: 'A conflicting operation occurred. If using PutObject you can retry the request.' },
  '403': { code: 'AccessDenied', message: 'Access Denied' },
};

export interface FaultProxy {
  /** `http://127.0.0.1:<port>`: point the S3 client here instead of at the target. */
  endpoint: string;
  /** Requests received so far, faulted ones included. */
  readonly requests: number;
  /** Requests the stand-in answered 412 to. */
  readonly preconditionFailures: number;
  /** Every request received, in order: method and path with query. */
  readonly log: ReadonlyArray<{ method: string; url: string }>;
  /**
   * Fault the next `count` requests that match: any request, a method ('PUT'),
   * or a method and a query parameter it carries ('PUT?partNumber' is an
   * UploadPart, 'POST?uploadId' a CompleteMultipartUpload).
   */
  failNext(count: number, kind: FaultKind, match?: string): void;
  /** Faults queued but not yet used. */
  pendingFaults(): number;
  stop(): Promise<void>;
}

interface Fault {
  kind: FaultKind;
  method: string | undefined;
  parameter: string | undefined;
}

interface Forwarded {
  statusCode: number;
  headers: IncomingHttpHeaders;
  body: Buffer;
}

export async function startFaultProxy(targetUrl: string): Promise<FaultProxy> {
  const target = new URL(targetUrl);
  const agent = new Agent({ keepAlive: true });
  const faults: Fault[] = [];
  const locks = new Map<string, Promise<void>>();
  const counts = { requests: 0, preconditionFailures: 0 };
  const log: Array<{ method: string; url: string }> = [];

  const forward = (req: IncomingMessage, body: Buffer): Promise<Forwarded> =>
    // The Host header is forwarded unchanged: the client signed it (SigV4) and s3rver checks the signature.
    send(req.method ?? 'GET', req.url ?? '/', req.headers, body);

  const send = (method: string, path: string, headers: IncomingHttpHeaders, body: Buffer): Promise<Forwarded> =>
    new Promise((resolve, reject) => {
      const out = request({ host: target.hostname, port: target.port, method, path, headers, agent }, (answer) => {
        const chunks: Buffer[] = [];
        answer.on('data', (chunk: Buffer) => chunks.push(chunk));
        answer.once('end', () => resolve({ statusCode: answer.statusCode ?? 502, headers: answer.headers, body: Buffer.concat(chunks) }));
        answer.once('error', reject);
      });
      out.once('error', reject);
      out.end(body);
    });

  /** An unsigned HEAD of the object (s3rver serves anonymous requests). */
  const objectExists = async (pathname: string): Promise<boolean> => {
    const head = await send('HEAD', pathname, {}, Buffer.alloc(0));
    if (head.statusCode === 200) return true;
    if (head.statusCode === 404) return false;
    throw new Error(`the conditional-write stand-in could not HEAD ${pathname}: HTTP ${head.statusCode}`);
  };

  /** Serializes the HEAD-then-write of conditional writes to one key. */
  const withKeyLock = async <T>(key: string, fn: () => Promise<T>): Promise<T> => {
    const previous = locks.get(key) ?? Promise.resolve();
    let release = (): void => undefined;
    const mine = new Promise<undefined>((resolve) => {
      release = () => resolve(undefined);
    });
    const chained = previous.then(() => mine);
    locks.set(key, chained);
    await previous;
    try {
      return await fn();
    } finally {
      release();
      if (locks.get(key) === chained) locks.delete(key);
    }
  };

  const reply = (res: ServerResponse, answer: Forwarded): void => {
    const headers = { ...answer.headers };
    delete headers['transfer-encoding'];
    delete headers.connection;
    if (answer.body.length > 0 || headers['content-length'] === undefined) headers['content-length'] = String(answer.body.length);
    res.writeHead(answer.statusCode, headers);
    res.end(answer.body);
  };

  const handle = async (req: IncomingMessage, res: ServerResponse, body: Buffer, fault: Fault | undefined): Promise<void> => {
    if (fault?.kind === '503' || fault?.kind === '500' || fault?.kind === '409' || fault?.kind === '403') {
      const { code, message } = ERROR_REPLIES[fault.kind];
      reply(res, s3Error(Number(fault.kind), code, message, req.url));
      return;
    }
    const url = new URL(req.url ?? '/', 'http://proxy');
    const isObjectWrite =
      (req.method === 'PUT' && !url.searchParams.has('partNumber')) || (req.method === 'POST' && url.searchParams.has('uploadId'));
    const answer =
      isObjectWrite && req.headers['if-none-match'] === '*'
        ? await withKeyLock(url.pathname, async () => {
            if (await objectExists(url.pathname)) {
              counts.preconditionFailures++;
              return s3Error(
                412,
                'PreconditionFailed',
                'At least one of the pre-conditions you specified did not hold',
                req.url,
                '<Condition>If-None-Match</Condition>',
              );
            }
            return forward(req, body);
          })
        : await forward(req, body);
    if (fault?.kind === 'reset-after-forward') {
      req.socket.destroy();
      return;
    }
    if (fault?.kind === 'truncate-response') {
      const headers = { ...answer.headers };
      delete headers['transfer-encoding'];
      headers['content-length'] = String(answer.body.length);
      res.writeHead(answer.statusCode, headers);
      res.write(answer.body.subarray(0, Math.floor(answer.body.length / 2)), () => req.socket.destroy());
      return;
    }
    reply(res, answer);
  };

  const server = createServer((req, res) => {
    counts.requests++;
    log.push({ method: req.method ?? '', url: req.url ?? '' });
    const query = new URL(req.url ?? '/', 'http://proxy').searchParams;
    const at = faults.findIndex(
      (f) => (f.method === undefined || f.method === req.method) && (f.parameter === undefined || query.has(f.parameter)),
    );
    const fault = at >= 0 ? faults.splice(at, 1)[0] : undefined;
    if (fault?.kind === 'reset') {
      // Mid-request: after the first body bytes arrived (or at once, for a request without a body).
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
      handle(req, res, Buffer.concat(chunks), fault).catch((error: unknown) => {
        if (res.headersSent) res.destroy();
        else reply(res, s3Error(502, 'InternalError', `test proxy: ${error instanceof Error ? error.message : String(error)}`, req.url));
      });
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
    failNext(count, kind, match) {
      const [method, parameter] = match === undefined ? [] : match.split('?');
      for (let i = 0; i < count; i++)
        faults.push({ kind, method: method ? method.toUpperCase() : undefined, parameter: parameter || undefined });
    },
    pendingFaults: () => faults.length,
    stop: async () => {
      faults.length = 0;
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeAllConnections();
      await closed;
      agent.destroy();
    },
  };
}

function s3Error(statusCode: number, code: string, message: string, resource: string | undefined, extra = ''): Forwarded {
  const body = Buffer.from(
    `<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>${code}</Code><Message>${message}</Message>${extra}<Resource>${resource ?? '/'}</Resource><RequestId>fault-proxy</RequestId></Error>`,
  );
  return { statusCode, headers: { 'content-type': 'application/xml', 'x-amz-request-id': 'fault-proxy' }, body };
}
