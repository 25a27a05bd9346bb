import { createServer, request, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

/**
 * A test-only HTTP proxy in front of s3rver. Two jobs:
 * - fault injection: answer the next N requests with 503 SlowDown or 500, or
 *   reset the connection mid-request, so retry behaviour is tested for real;
 * - a conditional-write stand-in: s3rver ignores `If-None-Match: *` on writes,
 *   real S3 enforces it; the proxy enforces it with a HEAD first and answers
 *   412 PreconditionFailed like S3 (named as a stand-in in the tests).
 */
export interface S3Proxy {
  endpoint: string;
  requests: number;
  failNext(count: number, kind: '503' | '500' | 'reset', method?: string): void;
  stop(): Promise<void>;
}

export async function startS3Proxy(target: string): Promise<S3Proxy> {
  const upstream = new URL(target);
  const faults: Array<{ kind: '503' | '500' | 'reset'; method?: string | undefined }> = [];
  const state = { requests: 0 };

  const forward = (req: IncomingMessage, body: Buffer, res: ServerResponse): void => {
    const out = request({ host: upstream.hostname, port: upstream.port, method: req.method, path: req.url, headers: req.headers }, (answer) => {
      res.writeHead(answer.statusCode ?? 502, answer.headers);
      answer.pipe(res);
    });
    out.on('error', () => res.destroy());
    out.end(body);
  };

  const exists = (path: string): Promise<boolean> =>
    new Promise((resolve) => {
      const head = request({ host: upstream.hostname, port: upstream.port, method: 'HEAD', path }, (answer) => {
        answer.resume();
        resolve(answer.statusCode === 200);
      });
      head.on('error', () => resolve(false));
      head.end();
    });

  const server = createServer((req, res) => {
    state.requests++;
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      void (async () => {
        const body = Buffer.concat(chunks);
        const faultAt = faults.findIndex((f) => !f.method || f.method === req.method);
        if (faultAt >= 0) {
          const [fault] = faults.splice(faultAt, 1);
          if (fault?.kind === 'reset') {
            req.socket.destroy();
            return;
          }
          const code = fault?.kind === '503' ? 'SlowDown' : 'InternalError';
          res.writeHead(Number(fault?.kind), { 'content-type': 'application/xml' });
          res.end(`<?xml version="1.0" encoding="UTF-8"?><Error><Code>${code}</Code><Message>injected by the test proxy</Message></Error>`);
          return;
        }
        const url = new URL(req.url ?? '/', 'http://proxy');
        const isWrite = req.method === 'PUT' && !url.searchParams.has('partNumber') || (req.method === 'POST' && url.searchParams.has('uploadId'));
        if (isWrite && req.headers['if-none-match'] === '*' && (await exists(url.pathname))) {
          res.writeHead(412, { 'content-type': 'application/xml' });
          res.end('<?xml version="1.0" encoding="UTF-8"?><Error><Code>PreconditionFailed</Code><Message>At least one of the pre-conditions you specified did not hold</Message><Condition>If-None-Match</Condition></Error>');
          return;
        }
        forward(req, body, res);
      })();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    endpoint: `http://127.0.0.1:${port}`,
    get requests() {
      return state.requests;
    },
    failNext(count, kind, method) {
      for (let i = 0; i < count; i++) faults.push({ kind, method });
    },
    stop: () => new Promise<void>((resolve) => {
      server.closeAllConnections();
      server.close(() => resolve());
    }),
  };
}
