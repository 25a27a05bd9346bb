import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

/**
 * STAND-INS for the two AWS APIs that cannot run here (no offline emulator of them):
 * Systems Manager's Parameter Store / instance inventory, and the Step
 * Functions callback API. Each is a small HTTP server speaking the service's
 * JSON protocol, so the real AWS SDK clients (SSMClient in the functions and
 * the agent, SFNClient in the agent) talk to them through AWS_ENDPOINT_URL_SSM
 * and AWS_ENDPOINT_URL_SFN exactly as they would to AWS.
 */

interface JsonServer {
  endpoint: string;
  calls: Array<{ target: string; body: Record<string, unknown> }>;
  close(): Promise<void>;
}

class ServiceError extends Error {
  readonly type: string;
  constructor(type: string, message: string) {
    super(message);
    this.type = type;
  }
}

async function startJsonServer(handle: (target: string, body: Record<string, unknown>) => unknown): Promise<JsonServer> {
  const calls: JsonServer['calls'] = [];
  const server: Server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const target =
        String(req.headers['x-amz-target'] ?? '')
          .split('.')
          .pop() ?? '';
      const body = JSON.parse(Buffer.concat(chunks).toString('utf8') || '{}') as Record<string, unknown>;
      calls.push({ target, body });
      void (async () => {
        try {
          const result = await handle(target, body);
          res.writeHead(200, { 'content-type': 'application/x-amz-json-1.1' });
          res.end(JSON.stringify(result ?? {}));
        } catch (error) {
          const type = error instanceof ServiceError ? error.type : 'InternalServerError';
          res.writeHead(400, { 'content-type': 'application/x-amz-json-1.1', 'x-amzn-errortype': type });
          res.end(JSON.stringify({ __type: type, message: error instanceof Error ? error.message : String(error) }));
        }
      })();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    endpoint: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    calls,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

export interface SsmStandin extends JsonServer {
  parameters: Map<string, string>;
  /** Instance id → tags; every listed instance is Online. */
  instances: Map<string, Record<string, string>>;
  /**
   * Instance id → host name (SSM's ComputerName): an instance with one is a machine of its own,
   * and the harness runs its commands under that host name (test/e2e/harness.ts).
   */
  hostNames: Map<string, string>;
}

/** Stand-in for SSM: GetParameter (String and SecureString alike) and DescribeInstanceInformation. */
export async function startSsmStandin(): Promise<SsmStandin> {
  const parameters = new Map<string, string>();
  const instances = new Map<string, Record<string, string>>();
  const hostNames = new Map<string, string>();
  const server = await startJsonServer((target, body) => {
    if (target === 'GetParameter') {
      const name = String(body.Name);
      const value = parameters.get(name);
      if (value === undefined) throw new ServiceError('ParameterNotFound', `Parameter ${name} not found.`);
      return { Parameter: { Name: name, Value: value, Type: 'String', Version: 1 } };
    }
    if (target === 'DescribeInstanceInformation') {
      const filters = (body.Filters ?? []) as Array<{ Key: string; Values: string[] }>;
      const list = [...instances.entries()]
        .filter(([id, tags]) =>
          filters.every((f) =>
            f.Key === 'InstanceIds'
              ? f.Values.includes(id)
              : f.Key.startsWith('tag:')
                ? f.Values.includes(tags[f.Key.slice(4)] ?? '')
                : true,
          ),
        )
        .map(([id]) => ({
          InstanceId: id,
          PingStatus: 'Online',
          PlatformType: 'Linux',
          ...(hostNames.has(id) ? { ComputerName: hostNames.get(id) } : {}),
        }));
      return { InstanceInformationList: list };
    }
    throw new ServiceError('InvalidAction', `the SSM stand-in does not implement ${target}`);
  });
  return { ...server, parameters, instances, hostNames };
}

export interface TaskOutcome {
  heartbeats: number;
}

/** Failure of a waiting task, as Step Functions reports it to the state's Catch. */
export class TaskFailure extends Error {
  override readonly cause: string;
  constructor(error: string, cause: string) {
    super(cause);
    this.name = error;
    this.cause = cause;
  }
}

interface Waiting {
  resolve: (output: unknown) => void;
  reject: (error: Error) => void;
  heartbeats: number;
  lastBeat: number;
  stopped: boolean;
  watchdog?: NodeJS.Timeout;
}

export interface SfnStandin extends JsonServer {
  /** Resolves with the SendTaskSuccess output, rejects with SendTaskFailure's error, or with States.HeartbeatTimeout. */
  waitFor(token: string, heartbeatSeconds: number): Promise<unknown>;
  /** The execution was stopped: later heartbeats and results for the token answer TaskTimedOut. */
  stop(token: string): void;
  heartbeats(token: string): number;
}

/**
 * Stand-in for the Step Functions callback API (SendTaskSuccess, SendTaskFailure,
 * SendTaskHeartbeat). The local runner enforces a task's TimeoutSeconds but not
 * HeartbeatSeconds, so this stand-in enforces the heartbeat timeout itself.
 */
export async function startSfnStandin(): Promise<SfnStandin> {
  const waiting = new Map<string, Waiting>();
  const settled = new Set<string>();
  const entry = (token: string): Waiting => {
    const w = waiting.get(token);
    if (!w || w.stopped || settled.has(token)) throw new ServiceError('TaskTimedOut', 'Task Timed Out');
    return w;
  };
  const finish = (token: string): Waiting => {
    const w = entry(token);
    settled.add(token);
    clearInterval(w.watchdog);
    return w;
  };
  const server = await startJsonServer((target, body) => {
    const token = String(body.taskToken);
    if (!waiting.has(token) && !settled.has(token)) throw new ServiceError('TaskDoesNotExist', 'Task does not exist anymore');
    if (target === 'SendTaskHeartbeat') {
      const w = entry(token);
      w.heartbeats++;
      w.lastBeat = Date.now();
      return {};
    }
    if (target === 'SendTaskSuccess') {
      finish(token).resolve(JSON.parse(String(body.output)));
      return {};
    }
    if (target === 'SendTaskFailure') {
      finish(token).reject(
        new TaskFailure(typeof body.error === 'string' ? body.error : '', typeof body.cause === 'string' ? body.cause : ''),
      );
      return {};
    }
    throw new ServiceError('UnknownOperationException', `the Step Functions stand-in does not implement ${target}`);
  });
  return {
    ...server,
    waitFor(token, heartbeatSeconds) {
      return new Promise((resolve, reject) => {
        const w: Waiting = { resolve, reject, heartbeats: 0, lastBeat: Date.now(), stopped: false };
        w.watchdog = setInterval(() => {
          if (Date.now() - w.lastBeat <= heartbeatSeconds * 1000) return;
          settled.add(token);
          clearInterval(w.watchdog);
          reject(new TaskFailure('States.HeartbeatTimeout', `no heartbeat for ${heartbeatSeconds} s`));
        }, 250);
        waiting.set(token, w);
      });
    },
    stop(token) {
      const w = waiting.get(token);
      if (!w) return;
      w.stopped = true;
      clearInterval(w.watchdog);
      settled.add(token);
      w.reject(new TaskFailure('States.Aborted', 'the execution was stopped'));
    },
    heartbeats: (token) => waiting.get(token)?.heartbeats ?? 0,
  };
}
