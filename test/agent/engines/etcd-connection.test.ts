import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { CairnError } from '../../../agent/core/errors.ts';
import type { Repository } from '../../../agent/core/repository.ts';
import { engineByName } from '../../../agent/engines/registry.ts';
import { missingEtcd, startEtcd, type EtcdServer } from '../../helpers/etcd.ts';
import { freePort } from '../../helpers/mariadb.ts';
import { backupDir, fileRepo, initSmallRepo, restoreTo, tempDir } from '../../helpers/repo.ts';

/**
 * Both etcd engines reach a member through their options: the endpoints (tried
 * in order), and the TLS files. Against real etcd members: the test helpers'
 * plain one, and one this test starts with TLS and client-certificate auth.
 */
const skip = missingEtcd() ?? (spawnSync('sh', ['-c', 'command -v openssl']).status === 0 ? undefined : 'needs openssl');

function openssl(dir: string, ...args: string[]): void {
  const out = spawnSync('openssl', args, { cwd: dir, encoding: 'utf8' });
  if (out.status !== 0) throw new Error(`openssl ${args.join(' ')}: ${out.stderr}`);
}

/** A CA, a server certificate for 127.0.0.1 and a client certificate, all EC P-256. */
async function certificates(dir: string): Promise<void> {
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  openssl(dir, 'req', '-x509', ...ec, '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '2', '-subj', '/CN=cairn-test-ca');
  for (const [name, usage] of [
    ['server', 'serverAuth,clientAuth'],
    ['client', 'clientAuth'],
  ] as const) {
    await writeFile(join(dir, `${name}.ext`), `subjectAltName=IP:127.0.0.1\nextendedKeyUsage=${usage}\n`);
    openssl(dir, 'req', ...ec, '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${name}`);
    openssl(
      dir,
      'x509',
      '-req',
      '-in',
      `${name}.csr`,
      '-CA',
      'ca.pem',
      '-CAkey',
      'ca.key',
      '-CAcreateserial',
      '-out',
      `${name}.pem`,
      '-days',
      '2',
      '-extfile',
      `${name}.ext`,
    );
  }
}

/** An etcd member serving clients over TLS only, requiring a client certificate; resolves once it serves. */
async function startTlsEtcd(dir: string): Promise<{ port: number; child: ChildProcess }> {
  const port = await freePort();
  const peer = `http://127.0.0.1:${await freePort()}`;
  const url = `https://127.0.0.1:${port}`;
  const child = spawn(
    'etcd',
    [
      ...['--name', 'tls', '--data-dir', join(dir, 'data'), '--listen-client-urls', url, '--advertise-client-urls', url],
      ...['--listen-peer-urls', peer, '--initial-advertise-peer-urls', peer, '--initial-cluster', `tls=${peer}`],
      ...['--cert-file', join(dir, 'server.pem'), '--key-file', join(dir, 'server.key')],
      ...['--trusted-ca-file', join(dir, 'ca.pem'), '--client-cert-auth'],
    ],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let log = '';
  await new Promise<void>((resolve, reject) => {
    child.stderr?.on('data', (d: Buffer) => {
      log += d.toString();
      if (/ready to serve client requests|serving client traffic securely/.test(log)) resolve();
    });
    child.once('exit', (code) => reject(new Error(`etcd exited with ${code}: ${log.slice(-2000)}`)));
  });
  child.stderr?.resume();
  return { port, child };
}

describe('the etcd engines honour their endpoints and TLS options', { skip }, () => {
  let work: Awaited<ReturnType<typeof tempDir>>;
  let repo: Repository;
  let plain: EtcdServer;
  let tls: { port: number; child: ChildProcess };
  before(async () => {
    work = await tempDir('etcd-connection');
    repo = await initSmallRepo(fileRepo(join(work.path, 'repo')));
    plain = await startEtcd();
    await certificates(work.path);
    tls = await startTlsEtcd(work.path);
  });
  after(async () => {
    await plain?.stop();
    if (tls && tls.child.exitCode === null) {
      tls.child.kill('SIGTERM');
      await new Promise((r) => tls.child.once('exit', r));
    }
    await work?.remove();
  });

  const snapshotOf = async (name: 'etcd' | 'etcd-keys', raw: Record<string, unknown>) => {
    const engine = engineByName(name);
    return backupDir(repo, '/unused', { paths: [], engine: { engine, options: engine.parseOptions(raw), source: `${name}:test` } });
  };

  it('etcd: backs up through the first endpoint that answers, ignoring --db-host/--db-port', async () => {
    plain.ctl('put', '/endpoints/key', 'from the plain member');
    const dead = `http://127.0.0.1:${await freePort()}`;
    const snapshot = await snapshotOf('etcd', { host: '192.0.2.1', port: 9, endpoints: `${dead},http://127.0.0.1:${plain.clientPort}` });
    assert.equal(snapshot.engine, 'etcd');
    assert.ok(Number(snapshot.engineMetadata.revision) >= 2);

    const dataDir = join(work.path, 'restored');
    const peerPort = await freePort();
    await restoreTo(repo, snapshot.id, dataDir, {
      engineOptions: { name: 'copy', initialAdvertisePeerUrls: `http://127.0.0.1:${peerPort}` },
    });
    const copy = await startEtcd({ dataDir, name: 'copy', peerPort });
    try {
      assert.equal(copy.ctl('get', '/endpoints/key', '--print-value-only').trim(), 'from the plain member');
    } finally {
      await copy.stop();
    }
  });

  it('etcd: refuses clearly when no endpoint answers', async () => {
    const dead = `http://127.0.0.1:${await freePort()}`;
    await assert.rejects(snapshotOf('etcd', { endpoints: [dead] }), (error: unknown) => {
      assert.ok(error instanceof CairnError);
      assert.match(error.message, /etcd is not reachable: no member answered/);
      assert.match(error.hint ?? '', /--etcd-endpoints/);
      return true;
    });
  });

  it('etcd and etcd-keys: back up a TLS member with the CA and client certificate, and fail without them', async () => {
    const endpoints = `https://127.0.0.1:${tls.port}`;
    const files = { cacert: join(work.path, 'ca.pem'), cert: join(work.path, 'client.pem'), key: join(work.path, 'client.key') };
    const put = spawnSync('etcdctl', ['put', '/tls/key', 'over TLS'], {
      encoding: 'utf8',
      env: {
        ...process.env,
        ETCDCTL_API: '3',
        ETCDCTL_ENDPOINTS: endpoints,
        ETCDCTL_CACERT: files.cacert,
        ETCDCTL_CERT: files.cert,
        ETCDCTL_KEY: files.key,
      },
    });
    assert.equal(put.status, 0, put.stderr);
    const snapshot = await snapshotOf('etcd', { endpoints, ...files });
    assert.ok(Number(snapshot.engineMetadata.revision) >= 2, `revision ${String(snapshot.engineMetadata.revision)}`);
    assert.ok(Number(snapshot.engineMetadata.totalKeys) >= 1);

    const keys = await snapshotOf('etcd-keys', { endpoints, ...files });
    assert.equal(keys.engine, 'etcd-keys');
    assert.equal(keys.engineMetadata.keyCount, 1);

    // Without the client certificate the member refuses the connection; without the CA the server is not trusted.
    await assert.rejects(snapshotOf('etcd', { endpoints, cacert: files.cacert }), /etcd is not reachable: no member answered/);
    await assert.rejects(snapshotOf('etcd', { endpoints, cert: files.cert, key: files.key }), /etcd is not reachable: no member answered/);
    await assert.rejects(snapshotOf('etcd-keys', { endpoints, cacert: files.cacert }), CairnError);
  });
});
