import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { freePort } from './mariadb.ts';

export interface EtcdServer {
  clientPort: number;
  peerPort: number;
  /** etcdctl against this member (v3 API); returns stdout. */
  ctl(...args: string[]): string;
  /** Runs `etcdctl txn` with this input (compares, success ops, failure ops, blank-line separated). */
  txn(input: string): string;
  stop(): Promise<void>;
}

export function missingEtcd(): string | undefined {
  const missing = ['etcd', 'etcdctl'].filter((b) => spawnSync('sh', ['-c', `command -v ${b}`]).status !== 0);
  return missing.length ? `needs ${missing.join(', ')}: apt-get install etcd-server etcd-client` : undefined;
}

/** A single-member etcd (Debian's etcd-server) on free ports; from a given data dir when restoring. */
export async function startEtcd(options: { dataDir?: string; name?: string; peerPort?: number } = {}): Promise<EtcdServer> {
  const base = await mkdtemp(join(tmpdir(), 'cairn-etcd-'));
  const dataDir = options.dataDir ?? join(base, 'data');
  const clientPort = await freePort();
  const peerPort = options.peerPort ?? (await freePort());
  const name = options.name ?? 'default';
  const peer = `http://127.0.0.1:${peerPort}`;
  const child: ChildProcess = spawn(
    'etcd',
    [
      '--name',
      name,
      '--data-dir',
      dataDir,
      '--listen-client-urls',
      `http://127.0.0.1:${clientPort}`,
      '--advertise-client-urls',
      `http://127.0.0.1:${clientPort}`,
      '--listen-peer-urls',
      peer,
      '--initial-advertise-peer-urls',
      peer,
      '--initial-cluster',
      `${name}=${peer}`,
      '--log-level',
      'error',
    ],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let log = '';
  child.stderr?.on('data', (d: Buffer) => (log += d.toString()));
  const ctl = (...args: string[]): string => {
    const out = spawnSync('etcdctl', ['--endpoints', `http://127.0.0.1:${clientPort}`, ...args], {
      encoding: 'utf8',
      env: { ...process.env, ETCDCTL_API: '3' },
      maxBuffer: 1 << 28,
    });
    if (out.status !== 0) throw new Error(`etcdctl ${args.join(' ')} failed: ${out.stderr}`);
    return out.stdout;
  };
  for (let i = 0; ; i++) {
    if (child.exitCode !== null) throw new Error(`etcd exited: ${log.slice(-2000)}`);
    try {
      ctl('endpoint', 'health');
      break;
    } catch {
      if (i > 200) throw new Error(`etcd did not start: ${log.slice(-2000)}`);
      await sleep(100);
    }
  }
  const txn = (input: string): string => {
    const out = spawnSync('etcdctl', ['--endpoints', `http://127.0.0.1:${clientPort}`, 'txn'], {
      input,
      encoding: 'utf8',
      env: { ...process.env, ETCDCTL_API: '3' },
    });
    if (out.status !== 0) throw new Error(`etcdctl txn failed: ${out.stderr}`);
    return out.stdout;
  };
  return {
    clientPort,
    peerPort,
    ctl,
    txn,
    stop: async () => {
      if (child.exitCode === null) {
        child.kill('SIGTERM');
        await new Promise((r) => child.once('exit', r));
      }
      await rm(base, { recursive: true, force: true });
    },
  };
}
