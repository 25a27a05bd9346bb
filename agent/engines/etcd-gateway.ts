import { readFile } from 'node:fs/promises';
import { request as httpRequest } from 'node:http';
import { request as httpsRequest, type RequestOptions } from 'node:https';
import { CairnError, errorMessage } from '../core/errors.ts';
import { resolveEtcdConnection, type EtcdConnectionOptions } from './etcd-connection.ts';

/**
 * A small client of etcd's v3 JSON gateway (what every etcd ≥ 3.4 serves on
 * its client URL) over node:http(s), for the etcd-keys engine: TLS with a CA
 * and client certificate, password auth (a token from /v3/auth/authenticate,
 * taken again when it expires), and the next endpoint when one cannot be reached.
 */

export interface GatewayHeader {
  cluster_id?: string;
  member_id?: string;
  revision?: string;
}

export interface GatewayContext {
  env: NodeJS.ProcessEnv;
  signal?: AbortSignal | undefined;
}

export interface EtcdClient {
  call<T = unknown>(path: string, body: unknown, doing: string, options?: { resize?: () => void }): Promise<T>;
}

interface GatewayError {
  error?: string;
  message?: string;
  code?: number;
}

/** Connects (logs in when a user is given); the client then moves to the next endpoint when one cannot be reached. */
export async function connectGateway(options: EtcdConnectionOptions, ctx: GatewayContext): Promise<EtcdClient> {
  const connection = await resolveEtcdConnection(options, ctx.env);
  const readPem = async (file: string | undefined, what: string): Promise<Buffer | undefined> => {
    if (!file) return undefined;
    try {
      return await readFile(file);
    } catch (error) {
      throw new CairnError('Cairn.Usage', `cannot read the etcd ${what} ${file}: ${errorMessage(error)}`, { cause: error });
    }
  };
  const tls: RequestOptions = {};
  const ca = await readPem(connection.cacert, 'CA file');
  const cert = await readPem(connection.cert, 'client certificate');
  const key = await readPem(connection.key, 'client key');
  if (ca) tls.ca = ca;
  if (cert) tls.cert = cert;
  if (key) tls.key = key;
  const { endpoints, user, password } = connection;
  let current = 0;
  let token: string | undefined;

  const send = async (path: string, body: unknown, doing: string): Promise<{ status: number; json: unknown }> => {
    const failures: string[] = [];
    for (let tried = 0; tried < endpoints.length; tried++) {
      const url = new URL(path, endpoints[current]);
      try {
        return await post(url, JSON.stringify(body), tls, token, ctx.signal);
      } catch (error) {
        if (ctx.signal?.aborted) throw error;
        failures.push(`${endpoints[current]!.origin}: ${errorMessage(error)}`);
        current = (current + 1) % endpoints.length;
      }
    }
    throw new CairnError('Cairn.Failure', `${doing} failed: etcd is not reachable (${failures.join('; ')})`, {
      hint: 'check that etcd runs and --etcd-endpoints (or --db-host/--db-port); for TLS give --etcd-cacert (and --etcd-cert/--etcd-key)',
    });
  };
  const authenticate = async (): Promise<void> => {
    if (user === undefined) return;
    token = undefined;
    const answer = await send('/v3/auth/authenticate', { name: user, password: password ?? '' }, 'logging in to etcd');
    const json = answer.json as GatewayError & { token?: string };
    if (answer.status !== 200 || !json.token) throw gatewayError(json, 'logging in to etcd', answer.status);
    token = json.token;
  };
  await authenticate();

  return {
    async call<T>(path: string, body: unknown, doing: string, opts: { resize?: () => void } = {}): Promise<T> {
      for (let attempt = 0; ; attempt++) {
        const answer = await send(path, body, doing);
        if (answer.status === 200) return answer.json as T;
        const json = answer.json as GatewayError;
        const message = json.message ?? json.error ?? '';
        if (attempt < 3 && user !== undefined && /invalid auth token|token.*expired/i.test(message)) {
          await authenticate();
          continue;
        }
        // A page larger than the gateway's message limit: ask again for fewer keys.
        if (attempt < 20 && opts.resize && (json.code === 8 || /larger than max/i.test(message))) {
          opts.resize();
          const limited = body as { limit?: number };
          if (typeof limited.limit === 'number' && limited.limit > 1) limited.limit = Math.max(1, limited.limit >> 1);
          continue;
        }
        throw gatewayError(json, doing, answer.status);
      }
    },
  };
}

function gatewayError(json: GatewayError, doing: string, status: number): CairnError {
  const message = json.message ?? json.error ?? `HTTP ${status}`;
  let hint: string | undefined;
  if (/permission denied/i.test(message)) hint = 'the etcd user lacks a role with read (backup) or readwrite (restore) on these prefixes';
  else if (/user name is empty|authentication failed|invalid auth token/i.test(message))
    hint = 'etcd has auth enabled: give --db-user and the password (CAIRN_DB_PASSWORD or --db-password-file)';
  else if (/compacted/i.test(message)) hint = 'etcd compacted the pinned revision while the backup read it: run the backup again';
  else if (/too large|too many operations/i.test(message))
    hint = "lower the batch (engine options batchOps/batchBytes) or raise etcd's --max-request-bytes / --max-txn-ops";
  return new CairnError('Cairn.Failure', `${doing} failed: etcd answered: ${message}`, hint ? { hint } : {});
}

function post(
  url: URL,
  body: string,
  tls: RequestOptions,
  token: string | undefined,
  signal: AbortSignal | undefined,
): Promise<{ status: number; json: unknown }> {
  return new Promise((resolve, reject) => {
    const request = (url.protocol === 'https:' ? httpsRequest : httpRequest)(
      url,
      {
        ...tls,
        method: 'POST',
        headers: {
          'content-type': 'application/json',
          'content-length': Buffer.byteLength(body),
          ...(token ? { authorization: token } : {}),
        },
        timeout: 60_000,
        ...(signal ? { signal } : {}),
      },
      (response) => {
        const chunks: Buffer[] = [];
        response.on('data', (chunk: Buffer) => chunks.push(chunk));
        response.on('error', reject);
        response.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          try {
            resolve({ status: response.statusCode ?? 0, json: text ? JSON.parse(text) : {} });
          } catch {
            reject(new Error(`HTTP ${response.statusCode}: ${text.slice(0, 200)}`));
          }
        });
      },
    );
    request.on('timeout', () => request.destroy(new Error('no answer within 60 s')));
    request.on('error', reject);
    request.end(body);
  });
}
