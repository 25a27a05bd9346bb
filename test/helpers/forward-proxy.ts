import { createServer, request, type IncomingMessage } from 'node:http';
import { connect, type AddressInfo, type Socket } from 'node:net';

/**
 * TEST ONLY: a forwarding HTTP proxy on 127.0.0.1, as HTTP_PROXY/HTTPS_PROXY
 * name one: plain HTTP requests with an absolute URI are forwarded, CONNECT
 * opens a tunnel. It counts requests (and tunnels) per target `host:port`, so
 * a test can tell which traffic went through it.
 */
export interface ForwardProxy {
  /** `http://127.0.0.1:<port>`: the value for HTTP_PROXY / HTTPS_PROXY. */
  url: string;
  /** Forwarded requests plus CONNECT tunnels, per target host:port. */
  counts(): Record<string, number>;
  /** Total over all targets. */
  total(): number;
  stop(): Promise<void>;
}

export async function startForwardProxy(): Promise<ForwardProxy> {
  const counts = new Map<string, number>();
  const sockets = new Set<Socket>();
  const count = (target: string): void => {
    counts.set(target, (counts.get(target) ?? 0) + 1);
  };

  const server = createServer((req: IncomingMessage, res) => {
    let target: URL;
    try {
      target = new URL(req.url ?? '');
    } catch {
      res.writeHead(400).end('a forward proxy needs an absolute URI');
      return;
    }
    count(target.host);
    const headers = { ...req.headers };
    delete headers['proxy-connection'];
    delete headers['proxy-authorization'];
    const out = request(
      { host: target.hostname, port: target.port || 80, method: req.method, path: `${target.pathname}${target.search}`, headers },
      (answer) => {
        res.writeHead(answer.statusCode ?? 502, answer.headers);
        answer.pipe(res);
      },
    );
    out.once('error', () => res.destroy());
    req.pipe(out);
  });

  server.on('connect', (req: IncomingMessage, client: Socket, head: Buffer) => {
    const [host, port] = (req.url ?? '').split(':');
    count(req.url ?? '');
    const upstream = connect(Number(port) || 443, host ?? '127.0.0.1', () => {
      client.write('HTTP/1.1 200 Connection Established\r\n\r\n');
      if (head.length > 0) upstream.write(head);
      upstream.pipe(client);
      client.pipe(upstream);
    });
    sockets.add(upstream);
    upstream.once('close', () => sockets.delete(upstream));
    const fail = (): void => {
      client.destroy();
      upstream.destroy();
    };
    upstream.once('error', fail);
    client.once('error', fail);
  });

  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    counts: () => Object.fromEntries(counts),
    total: () => [...counts.values()].reduce((a, b) => a + b, 0),
    stop: async () => {
      for (const socket of sockets) socket.destroy();
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeAllConnections();
      await closed;
    },
  };
}
