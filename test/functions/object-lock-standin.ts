import { Agent, createServer, request, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

/**
 * OBJECT LOCK STAND-IN (test only): a reverse proxy on 127.0.0.1 in front of s3rver, which has
 * no Object Lock. It answers GetObjectRetention and PutObjectRetention (`?retention`) itself, with
 * S3's rules for a bucket whose default retention is `defaultMode` for `defaultDays`:
 *
 * - an object created through it (PutObject, CompleteMultipartUpload that succeed) gets the
 *   default retention from its creation time, as S3 applies a bucket's default;
 * - GetObjectRetention answers the key's mode and retain-until date, 404 NoSuchKey for a key
 *   s3rver does not have, 404 NoSuchObjectLockConfiguration for a key without retention;
 * - PutObjectRetention refuses (403 AccessDenied) a retain-until date earlier than the key's
 *   under COMPLIANCE, and under GOVERNANCE without `x-amz-bypass-governance-retention: true`;
 *   it refuses COMPLIANCE → GOVERNANCE the same way; a missing key is 404 NoSuchKey. A key
 *   exists for it when it was created through it and not deleted since.
 *
 * What neither s3rver nor this stand-in enforces, so no test here shows it: versioning (a delete
 * removes the object instead of adding a delete marker over the locked version), the refusal to
 * delete a locked object version (DeleteObjectVersion), legal holds, lifecycle expiration that
 * spares locked versions, and the signature of a retention request (it is answered unchecked).
 * Every other request is forwarded to s3rver unchanged (the Host header too: s3rver checks SigV4).
 */
export interface ObjectLockStandIn {
  /** `http://127.0.0.1:<port>`: point the S3 clients here. */
  endpoint: string;
  /** The retention of an object by its path-style name (`<bucket>/<key>`), as the stand-in holds it. */
  retention(objectName: string): { mode: 'GOVERNANCE' | 'COMPLIANCE'; retainUntil: Date } | undefined;
  /** Sets a retention directly (a test ageing the repository: a pack uploaded long ago). */
  setRetention(objectName: string, mode: 'GOVERNANCE' | 'COMPLIANCE', retainUntil: Date): void;
  /** Every object name it holds a retention for. */
  names(): string[];
  /** PutObjectRetention requests accepted, per object name. */
  readonly puts: ReadonlyMap<string, number>;
  /** PutObjectRetention requests refused (shortening). */
  readonly refused: number;
  stop(): Promise<void>;
}

const DAY_MS = 86_400_000;

export async function startObjectLockStandIn(
  targetUrl: string,
  defaults: { mode: 'GOVERNANCE' | 'COMPLIANCE'; days: number },
): Promise<ObjectLockStandIn> {
  const target = new URL(targetUrl);
  const agent = new Agent({ keepAlive: true });
  const locks = new Map<string, { mode: 'GOVERNANCE' | 'COMPLIANCE'; retainUntil: Date }>();
  const puts = new Map<string, number>();
  const counts = { refused: 0 };

  const forward = (req: IncomingMessage, body: Buffer): Promise<{ status: number; headers: IncomingMessage['headers']; body: Buffer }> =>
    new Promise((resolve, reject) => {
      const out = request(
        { host: target.hostname, port: target.port, method: req.method, path: req.url, headers: req.headers, agent },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.once('end', () => resolve({ status: res.statusCode ?? 500, headers: res.headers, body: Buffer.concat(chunks) }));
          res.once('error', reject);
        },
      );
      out.once('error', reject);
      out.end(body);
    });

  // Objects created through the stand-in and not deleted since: it cannot ask s3rver itself (s3rver
  // refuses unsigned requests), and every object of these tests goes through it.
  const created = new Set<string>();

  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.once('end', () => {
      void (async () => {
        const body = Buffer.concat(chunks);
        const url = new URL(req.url ?? '/', 'http://stand-in');
        const path = decodeURIComponent(url.pathname.replace(/^\//, ''));
        if (url.searchParams.has('retention')) {
          if (!created.has(path)) return reply(res, 404, errorXml('NoSuchKey', 'The specified key does not exist.', path));
          if (req.method === 'GET') {
            const lock = locks.get(path);
            if (!lock)
              return reply(
                res,
                404,
                errorXml('NoSuchObjectLockConfiguration', 'The specified object does not have a ObjectLock configuration', path),
              );
            return reply(res, 200, retentionXml(lock.mode, lock.retainUntil));
          }
          if (req.method === 'PUT') {
            const text = body.toString('utf8');
            const mode = /<Mode>(GOVERNANCE|COMPLIANCE)<\/Mode>/.exec(text)?.[1] as 'GOVERNANCE' | 'COMPLIANCE' | undefined;
            const until = /<RetainUntilDate>([^<]+)<\/RetainUntilDate>/.exec(text)?.[1];
            if (!mode || !until || Number.isNaN(Date.parse(until))) return reply(res, 400, errorXml('MalformedXML', 'bad Retention', path));
            const current = locks.get(path);
            const bypass = req.headers['x-amz-bypass-governance-retention'] === 'true';
            const shortens =
              current !== undefined &&
              current.retainUntil.getTime() > Date.now() &&
              (Date.parse(until) < current.retainUntil.getTime() || (current.mode === 'COMPLIANCE' && mode === 'GOVERNANCE'));
            if (shortens && (current.mode === 'COMPLIANCE' || !bypass)) {
              counts.refused++;
              return reply(res, 403, errorXml('AccessDenied', 'Access Denied because object protected by object lock.', path));
            }
            locks.set(path, { mode, retainUntil: new Date(until) });
            puts.set(path, (puts.get(path) ?? 0) + 1);
            return reply(res, 200, Buffer.alloc(0));
          }
          return reply(res, 405, errorXml('MethodNotAllowed', 'not supported by the stand-in', path));
        }
        const answer = await forward(req, body);
        const creates =
          (req.method === 'PUT' && !url.searchParams.has('partNumber') && !url.searchParams.has('uploadId')) ||
          (req.method === 'POST' && url.searchParams.has('uploadId'));
        if (creates && answer.status >= 200 && answer.status < 300) {
          created.add(path);
          locks.set(path, { mode: defaults.mode, retainUntil: new Date(Date.now() + defaults.days * DAY_MS) });
        }
        if (req.method === 'DELETE' && answer.status >= 200 && answer.status < 300) created.delete(path);
        res.writeHead(answer.status, answer.headers);
        res.end(answer.body);
      })().catch((error: unknown) => {
        if (!res.headersSent) reply(res, 500, errorXml('InternalError', String(error), '/'));
        else res.destroy();
      });
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    endpoint: `http://127.0.0.1:${port}`,
    retention: (name) => locks.get(name),
    setRetention: (name, mode, retainUntil) => {
      locks.set(name, { mode, retainUntil });
    },
    names: () => [...locks.keys()].filter((n) => created.has(n)),
    puts,
    get refused() {
      return counts.refused;
    },
    stop: async () => {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      agent.destroy();
    },
  };
}

function reply(res: ServerResponse, status: number, body: Buffer): void {
  res.writeHead(status, { 'content-type': 'application/xml', 'x-amz-request-id': 'object-lock-stand-in', 'content-length': body.length });
  res.end(body);
}

function retentionXml(mode: string, until: Date): Buffer {
  return Buffer.from(
    `<?xml version="1.0" encoding="UTF-8"?>\n<Retention xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Mode>${mode}</Mode><RetainUntilDate>${until.toISOString()}</RetainUntilDate></Retention>`,
  );
}

function errorXml(code: string, message: string, resource: string): Buffer {
  return Buffer.from(
    `<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>${code}</Code><Message>${message}</Message><Resource>/${resource}</Resource><RequestId>object-lock-stand-in</RequestId></Error>`,
  );
}
