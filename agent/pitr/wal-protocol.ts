/**
 * The WAL daemon's protocol: one JSON line from the client, one JSON line
 * back, then the daemon closes the connection. Paths are absolute (the
 * daemon's working directory is not the client's). Both sides validate what
 * they read: a line that is not one of these is an error answer, never a
 * crash of the daemon. Deliberately free of heavy imports: wal-push and
 * wal-fetch run once per WAL segment.
 */

export const PROTOCOL_VERSION = 1;
/** A request is a few paths; anything longer is not a client of ours. */
export const MAX_LINE = 64 * 1024;

export type WalRequest =
  /** Archive the file at `path`; `dataDir` is archive_command's working directory (for PG_VERSION). */
  | { v: 1; op: 'push'; path: string; dataDir: string }
  /**
   * Write the archived file `name` to `dest` (restore_command's %f and %p, made absolute). `stage`: the restore's
   * staging directory (absolute), where the daemon places the next segments for restore_command to take with `mv`.
   */
  | { v: 1; op: 'fetch'; name: string; dest: string; stage?: string | undefined }
  | { v: 1; op: 'status' }
  | { v: 1; op: 'stop' };

export interface WireError {
  code: string;
  message: string;
  hint?: string | undefined;
  /** The daemon is stopping: ask again, and a new one starts. */
  retry?: boolean | undefined;
}

export interface DaemonStatus {
  pid: number;
  repository: string;
  stream: string;
  startedAt: string;
  requests: number;
  pushed: number;
  fetched: number;
  servedFromPrefetch: number;
  /** Segments restore_command took from the staging directory itself (with `mv`, no cairn started). */
  takenFromStage: number;
  /** The staging directory the daemon fills, when a restore named one. */
  stageDir?: string | undefined;
  prefetched: string[];
}

export type WalResponse =
  | { ok: true; op: 'push'; outcome: 'stored' | 'already-archived' }
  | { ok: true; op: 'fetch'; found: boolean; source?: 'prefetch' | 'repository' | undefined }
  | { ok: true; op: 'status'; status: DaemonStatus }
  | { ok: true; op: 'stop' }
  | { ok: false; error: WireError };

export function encodeLine(message: WalRequest | WalResponse): string {
  return `${JSON.stringify(message)}\n`;
}

export class ProtocolError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ProtocolError';
  }
}

function parseObject(line: string): Record<string, unknown> {
  if (line.length > MAX_LINE) throw new ProtocolError(`message longer than ${MAX_LINE} bytes`);
  let value: unknown;
  try {
    value = JSON.parse(line);
  } catch {
    throw new ProtocolError('message is not JSON');
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new ProtocolError('message is not a JSON object');
  return value as Record<string, unknown>;
}

function text(object: Record<string, unknown>, field: string, absolute = false): string {
  const value = object[field];
  if (typeof value !== 'string' || value.length === 0 || value.includes('\0'))
    throw new ProtocolError(`${field} must be a non-empty string`);
  if (absolute && !value.startsWith('/')) throw new ProtocolError(`${field} must be an absolute path`);
  return value;
}

export function decodeRequest(line: string): WalRequest {
  const o = parseObject(line);
  if (o.v !== PROTOCOL_VERSION) throw new ProtocolError(`unsupported protocol version ${JSON.stringify(o.v)}`);
  switch (o.op) {
    case 'push':
      return { v: 1, op: 'push', path: text(o, 'path', true), dataDir: text(o, 'dataDir', true) };
    case 'fetch': {
      const fetch: Extract<WalRequest, { op: 'fetch' }> = { v: 1, op: 'fetch', name: text(o, 'name'), dest: text(o, 'dest', true) };
      if (o.stage !== undefined) fetch.stage = text(o, 'stage', true);
      return fetch;
    }
    case 'status':
    case 'stop':
      return { v: 1, op: o.op };
    default:
      throw new ProtocolError(`unknown operation ${JSON.stringify(o.op)}`);
  }
}

export function decodeResponse(line: string): WalResponse {
  const o = parseObject(line);
  if (o.ok === false) {
    const e = o.error;
    if (typeof e !== 'object' || e === null) throw new ProtocolError('error answer without an error');
    const error = e as Record<string, unknown>;
    return {
      ok: false,
      error: {
        code: text(error, 'code'),
        message: text(error, 'message'),
        hint: typeof error.hint === 'string' ? error.hint : undefined,
        retry: error.retry === true ? true : undefined,
      },
    };
  }
  if (o.ok !== true) throw new ProtocolError('answer without ok');
  switch (o.op) {
    case 'push':
      if (o.outcome !== 'stored' && o.outcome !== 'already-archived') throw new ProtocolError('push answer without an outcome');
      return { ok: true, op: 'push', outcome: o.outcome };
    case 'fetch':
      if (typeof o.found !== 'boolean') throw new ProtocolError('fetch answer without found');
      return { ok: true, op: 'fetch', found: o.found, source: o.source === 'prefetch' || o.source === 'repository' ? o.source : undefined };
    case 'status': {
      const s = o.status;
      if (typeof s !== 'object' || s === null || typeof (s as { pid?: unknown }).pid !== 'number')
        throw new ProtocolError('status answer without a status');
      return { ok: true, op: 'status', status: s as DaemonStatus };
    }
    case 'stop':
      return { ok: true, op: 'stop' };
    default:
      throw new ProtocolError(`unknown answer ${JSON.stringify(o.op)}`);
  }
}
