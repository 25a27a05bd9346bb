import { Agent, createServer, request, type IncomingHttpHeaders, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Random } from '../helpers/tree.ts';

/**
 * TEST ONLY: a reverse proxy on 127.0.0.1 that fails a random share of the
 * requests passing through it, the ways a cloud storage's network and servers
 * fail: an error answer (503, 500), a connection reset before the request is
 * read, a reset while the request body arrives, the request carried out and
 * the connection reset instead of answering (a lost response), the answer's
 * body cut off halfway (a reset mid-download), and a stall (the answer held
 * for 1 to 3 s, then given). Requests and bodies are forwarded unchanged
 * (signatures hold), so it sits in front of s3rver (through the conditional
 * write stand-in, test/helpers/fault-proxy.ts) or the GCS test server alike.
 * Faults are drawn from a seeded PRNG, so a run's sequence of faults repeats
 * with its seed (given the same sequence of requests).
 */
export const CHAOS_KINDS = ['503', '500', 'reset-before', 'reset-during-request', 'lost-response', 'cut-body', 'stall'] as const;
export type ChaosKind = (typeof CHAOS_KINDS)[number];

export interface ChaosProxy {
  endpoint: string;
  /** The share of requests faulted while enabled (0 to 1). */
  rate: number;
  enabled: boolean;
  readonly requests: number;
  /** Requests received while enabled: the ones that could be faulted. */
  readonly exposed: number;
  readonly faulted: Record<ChaosKind, number>;
  stop(): Promise<void>;
}

interface Answer {
  statusCode: number;
  headers: IncomingHttpHeaders;
  body: Buffer;
}

export async function startChaosProxy(
  targetUrl: string,
  options: { seed: number; rate: number; flavor: 's3' | 'gcs' },
): Promise<ChaosProxy> {
  const target = new URL(targetUrl);
  const agent = new Agent({ keepAlive: true });
  const rnd = new Random(options.seed);
  const faulted = Object.fromEntries(CHAOS_KINDS.map((k) => [k, 0])) as Record<ChaosKind, number>;
  const state = { requests: 0, exposed: 0, rate: options.rate, enabled: true };

  const forward = (req: IncomingMessage, body: Buffer): Promise<Answer> =>
    new Promise((resolve, reject) => {
      const out = request(
        { host: target.hostname, port: target.port, method: req.method, path: req.url, headers: req.headers, agent },
        (answer) => {
          const chunks: Buffer[] = [];
          answer.on('data', (c: Buffer) => chunks.push(c));
          answer.once('end', () => resolve({ statusCode: answer.statusCode ?? 502, headers: answer.headers, body: Buffer.concat(chunks) }));
          answer.once('error', reject);
        },
      );
      out.once('error', reject);
      out.end(body);
    });

  const errorAnswer = (status: number): Answer => {
    if (options.flavor === 's3') {
      const code = status === 503 ? 'SlowDown' : 'InternalError';
      return {
        statusCode: status,
        headers: { 'content-type': 'application/xml' },
        body: Buffer.from(
          `<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>${code}</Code><Message>chaos</Message><RequestId>chaos</RequestId></Error>`,
        ),
      };
    }
    const reason = status === 503 ? 'backendError' : 'internalError';
    return {
      statusCode: status,
      headers: { 'content-type': 'application/json' },
      body: Buffer.from(
        JSON.stringify({ error: { code: status, message: 'chaos', errors: [{ message: 'chaos', domain: 'global', reason }] } }),
      ),
    };
  };

  const send = (res: ServerResponse, answer: Answer, method?: string): void => {
    const headers = { ...answer.headers };
    delete headers['transfer-encoding'];
    delete headers.connection;
    // A HEAD answer has no body but the object's Content-Length: kept (a stat reads the size from it).
    if (method !== 'HEAD' || headers['content-length'] === undefined) headers['content-length'] = String(answer.body.length);
    res.writeHead(answer.statusCode, headers);
    res.end(answer.body);
  };

  const server = createServer((req, res) => {
    state.requests++;
    if (state.enabled) state.exposed++;
    const kind: ChaosKind | undefined = state.enabled && rnd.next() < state.rate ? rnd.pick(CHAOS_KINDS) : undefined;
    const hasBody = Number(req.headers['content-length'] ?? 0) > 0 || req.headers['transfer-encoding'] !== undefined;
    if (kind === 'reset-before' || (kind === 'reset-during-request' && !hasBody)) {
      faulted['reset-before']++;
      req.socket.destroy();
      return;
    }
    if (kind === 'reset-during-request') {
      faulted[kind]++;
      req.once('data', () => req.socket.destroy());
      return;
    }
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.once('end', () => {
      void (async () => {
        if (kind === '503' || kind === '500') {
          faulted[kind]++;
          send(res, errorAnswer(Number(kind)));
          return;
        }
        if (kind === 'stall') {
          faulted[kind]++;
          await new Promise((resolve) => setTimeout(resolve, 1000 + rnd.int(2000)));
        }
        const answer = await forward(req, Buffer.concat(chunks));
        if (kind === 'lost-response') {
          faulted[kind]++;
          req.socket.destroy();
          return;
        }
        if (kind === 'cut-body' && answer.body.length > 1) {
          faulted[kind]++;
          const headers = { ...answer.headers };
          delete headers['transfer-encoding'];
          headers['content-length'] = String(answer.body.length);
          res.writeHead(answer.statusCode, headers);
          res.write(answer.body.subarray(0, Math.floor(answer.body.length / 2)), () => req.socket.destroy());
          return;
        }
        send(res, answer, req.method);
      })().catch(() => req.socket.destroy());
    });
  });
  server.keepAliveTimeout = 60_000;
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    endpoint: `http://127.0.0.1:${port}`,
    get rate() {
      return state.rate;
    },
    set rate(value: number) {
      state.rate = value;
    },
    get enabled() {
      return state.enabled;
    },
    set enabled(value: boolean) {
      state.enabled = value;
    },
    get requests() {
      return state.requests;
    },
    get exposed() {
      return state.exposed;
    },
    faulted,
    stop: async () => {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeAllConnections();
      await closed;
      agent.destroy();
    },
  };
}
