import { randomBytes } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { CairnError, errorMessage } from '../core/errors.ts';
import { ProcessError, run, stream } from '../process/run.ts';
import { privateServerPrefix } from './drill-server-user.ts';

/**
 * A private etcd member for a drill: client and peer URLs on loopback ports it
 * chose, its own data directory, a name and cluster token of its own (a fresh
 * cluster identity, so it can never join or be joined by a production cluster),
 * and an environment with every ETCD_* and ETCDCTL_* variable removed: etcd
 * reads its whole configuration (discovery, initial cluster, TLS) from ETCD_*
 * variables, and etcdctl its endpoints from ETCDCTL_*, so an operator's
 * settings for the production member must not reach either.
 *
 * Loopback is open to every local user, and the member holds the snapshot's
 * keys (secrets, often), so both its ports speak TLS and accept only clients
 * with a certificate of a CA made for this one drill (drillCertificates): its
 * key and the member's live in a 0700 directory of the drill's, and nothing
 * secret goes through argv or a child's environment (only file paths do).
 * A Unix socket would do as well for etcdctl, but the etcd-keys drill loads
 * through the engine's own HTTP client, which reaches members by URL.
 */
export interface PrivateEtcd {
  readonly clientUrl: string;
  /** The CA, certificate and key a client needs (etcdctl --cacert/--cert/--key, the etcd-keys engine's options). */
  readonly tls: DrillCertificates;
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

/** Files (all in one 0700 directory) of a drill's own CA and the one certificate it signed, for the member and its clients alike. */
export interface DrillCertificates {
  cacert: string;
  cert: string;
  key: string;
}

/** The peer URL of a private member on `port` (TLS, as its client URL): what `etcdctl snapshot restore` must record too. */
export function drillPeerUrl(port: number): string {
  return `https://127.0.0.1:${port}`;
}

/**
 * A CA made for one drill and a certificate it signed for 127.0.0.1, usable by
 * the member (server, peer) and its clients (etcd's own gateway dials the member
 * with the member's certificate, hence clientAuth too), written with openssl
 * into `dir` (created 0700). The CA's key is used once and stays there.
 */
export async function drillCertificates(dir: string, env: NodeJS.ProcessEnv, signal?: AbortSignal): Promise<DrillCertificates> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const file = (name: string): string => join(dir, name);
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  const openssl = async (args: string[]): Promise<void> => {
    try {
      await run(['openssl', ...args], { env, signal, hint: 'install openssl (Debian: apt-get install openssl)' });
    } catch (error) {
      if (error instanceof ProcessError)
        throw new CairnError('Cairn.Failure', `making the drill's TLS certificates failed: ${error.message}`, {
          hint: error.hint,
          cause: error,
        });
      throw error;
    }
  };
  await writeFile(
    file('member.ext'),
    'basicConstraints=CA:FALSE\nsubjectAltName=IP:127.0.0.1\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth,clientAuth\n',
    { mode: 0o600 },
  );
  await openssl(['req', '-x509', ...ec, '-keyout', file('ca.key'), '-out', file('ca.crt'), '-days', '2', '-subj', '/CN=cairn-drill-ca']);
  await openssl(['req', ...ec, '-keyout', file('member.key'), '-out', file('member.csr'), '-subj', '/CN=cairn-drill-member']);
  await openssl([
    'x509',
    '-req',
    '-in',
    file('member.csr'),
    '-CA',
    file('ca.crt'),
    '-CAkey',
    file('ca.key'),
    '-set_serial',
    `0x${randomBytes(8).toString('hex')}`,
    '-days',
    '2',
    '-extfile',
    file('member.ext'),
    '-out',
    file('member.crt'),
  ]);
  return { cacert: file('ca.crt'), cert: file('member.crt'), key: file('member.key') };
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
  /** The drill's certificates (drillCertificates). */
  tls: DrillCertificates;
  env: NodeJS.ProcessEnv;
  signal?: AbortSignal | undefined;
}): Promise<PrivateEtcd> {
  const env = privateEtcdEnvironment(options.env);
  const { tls } = options;
  // Killed by the kernel when the drill's process ends, even by SIGKILL, where setpriv has --pdeathsig (drill-server-user.ts).
  const prefix = await privateServerPrefix(undefined, env);
  for (let attempt = 1; ; attempt++) {
    const clientPort = await loopbackPort();
    const clientUrl = `https://127.0.0.1:${clientPort}`;
    const peerUrl = drillPeerUrl(options.peerPort);
    const child = stream(
      [
        ...prefix,
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
        // Clients and peers alike must present a certificate of the drill's CA.
        '--cert-file',
        tls.cert,
        '--key-file',
        tls.key,
        '--trusted-ca-file',
        tls.cacert,
        '--client-cert-auth',
        '--peer-cert-file',
        tls.cert,
        '--peer-key-file',
        tls.key,
        '--peer-trusted-ca-file',
        tls.cacert,
        '--peer-client-cert-auth',
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
        return (
          await run(['etcdctl', '--endpoints', clientUrl, '--cacert', tls.cacert, '--cert', tls.cert, '--key', tls.key, ...args], {
            env,
            signal: options.signal,
          })
        ).stdout;
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
        return { clientUrl, tls, ctl, stop };
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
