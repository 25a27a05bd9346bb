import { randomBytes } from 'node:crypto';
import { createServer } from 'node:net';
import { setTimeout as delay } from 'node:timers/promises';
import { CairnError, errorMessage } from '../core/errors.ts';
import { ProcessError, run, stream } from '../process/run.ts';

/**
 * A private etcd member for a drill: client and peer URLs on loopback ports it
 * chose, its own data directory, a name and cluster token of its own (a fresh
 * cluster identity, so it can never join or be joined by a production cluster),
 * and an environment with every ETCD_* and ETCDCTL_* variable removed: etcd
 * reads its whole configuration (discovery, initial cluster, TLS) from ETCD_*
 * variables, and etcdctl its endpoints from ETCDCTL_*, so an operator's
 * settings for the production member must not reach either.
 */
export interface PrivateEtcd {
  readonly clientUrl: string;
  /** etcdctl against this member only; returns stdout. */
  ctl(args: readonly string[], doing: string): Promise<string>;
  /** Stops the member (SIGTERM, then waits for it); safe to call twice. */
  stop(): Promise<void>;
}

export const DRILL_MEMBER_NAME = 'cairn-drill';

/** A fresh cluster token: the member's cluster id is derived from it, so no two drills (or production) share one. */
export function drillClusterToken(): string {
  return `cairn-drill-${randomBytes(8).toString('hex')}`;
}

/** A port on 127.0.0.1 nobody listens on now (the member binds it right after). */
export async function loopbackPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => (typeof address === 'object' && address ? resolve(address.port) : reject(new Error('no port'))));
    });
  });
}

/** The environment of the drill's etcd and etcdctl: the caller's without any ETCD_* and ETCDCTL_* setting. */
export function privateEtcdEnvironment(base: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  return { ...Object.fromEntries(Object.entries(base).filter(([name]) => !/^ETCD(CTL)?_/i.test(name))), ETCDCTL_API: '3' };
}

/** etcdctl for offline work (snapshot status/restore): no endpoint, nothing of the caller's etcd settings. */
export async function offlineEtcdctl(
  args: readonly string[],
  doing: string,
  env: NodeJS.ProcessEnv,
  signal?: AbortSignal,
): Promise<string> {
  try {
    return (
      await run(['etcdctl', ...args], {
        env: privateEtcdEnvironment(env),
        signal,
        hint: 'install etcdctl (Debian: apt-get install etcd-client)',
      })
    ).stdout;
  } catch (error) {
    if (error instanceof ProcessError)
      throw new CairnError('Cairn.Failure', `${doing} failed: ${error.message}`, { hint: error.hint, cause: error });
    throw error;
  }
}

/**
 * Starts `etcd` on a data directory (a restored snapshot's, or a new empty one) and
 * waits until it answers. The peer port must be the one the data directory was
 * restored with (`etcdctl snapshot restore --initial-advertise-peer-urls`).
 */
export async function startPrivateEtcd(options: {
  dataDir: string;
  peerPort: number;
  clusterToken: string;
  env: NodeJS.ProcessEnv;
  signal?: AbortSignal | undefined;
}): Promise<PrivateEtcd> {
  const env = privateEtcdEnvironment(options.env);
  for (let attempt = 1; ; attempt++) {
    const clientPort = await loopbackPort();
    const clientUrl = `http://127.0.0.1:${clientPort}`;
    const peerUrl = `http://127.0.0.1:${options.peerPort}`;
    const child = stream(
      [
        'etcd',
        '--name',
        DRILL_MEMBER_NAME,
        '--data-dir',
        options.dataDir,
        '--listen-client-urls',
        clientUrl,
        '--advertise-client-urls',
        clientUrl,
        '--listen-peer-urls',
        peerUrl,
        '--initial-advertise-peer-urls',
        peerUrl,
        '--initial-cluster',
        `${DRILL_MEMBER_NAME}=${peerUrl}`,
        '--initial-cluster-state',
        'new',
        '--initial-cluster-token',
        options.clusterToken,
        '--log-level',
        'warn',
      ],
      { env, signal: options.signal, hint: 'install etcd (Debian: apt-get install etcd-server)' },
    );
    child.stdout.resume();
    let exited: unknown;
    let stopped = false;
    const ended = child.done.then(
      () => (exited = new Error('etcd exited')),
      (error: unknown) => (exited = error),
    );
    const stop = async (): Promise<void> => {
      if (stopped) return;
      stopped = true;
      if (child.child.exitCode === null && child.child.signalCode === null) child.child.kill('SIGTERM');
      await ended;
    };
    const ctl = async (args: readonly string[], doing: string): Promise<string> => {
      try {
        return (await run(['etcdctl', '--endpoints', clientUrl, ...args], { env, signal: options.signal })).stdout;
      } catch (error) {
        if (error instanceof ProcessError)
          throw new CairnError('Cairn.Failure', `${doing} on the drill's etcd member failed: ${error.message}`, { cause: error });
        throw error;
      }
    };
    const deadline = Date.now() + 60_000;
    for (;;) {
      if (exited !== undefined) break;
      try {
        await ctl(['endpoint', 'health', '--command-timeout=2s'], 'checking health');
        return { clientUrl, ctl, stop };
      } catch {
        if (options.signal?.aborted) {
          await stop();
          throw new CairnError('Cairn.Cancelled', 'the drill was cancelled while its etcd member started');
        }
        if (Date.now() > deadline) {
          await stop();
          throw new CairnError('Cairn.Failure', "the drill's etcd member did not become healthy within 60 s", {
            hint: 'see the etcd output in the error; check free memory and disk in the temp directory',
          });
        }
        await delay(100);
      }
    }
    const message = exited instanceof ProcessError ? exited.stderr : errorMessage(exited);
    // Another process may take a chosen port between choosing and binding it: choose again, twice.
    if (/address already in use/i.test(message) && attempt < 3) continue;
    throw new CairnError('Cairn.Failure', `the drill's etcd member exited at start: ${message.split('\n').slice(-5).join(' | ')}`, {
      hint: 'install etcd (Debian: apt-get install etcd-server) and check the temp directory has room',
      cause: exited,
    });
  }
}
