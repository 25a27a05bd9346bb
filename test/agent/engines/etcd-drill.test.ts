import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, stat } from 'node:fs/promises';
import { request } from 'node:https';
import { join } from 'node:path';
import {
  drillCertificates,
  drillClusterToken,
  loopbackPort,
  privateEtcdEnvironment,
  startPrivateEtcd,
} from '../../../agent/engines/private-etcd.ts';
import { runCli, lastOfType } from '../../helpers/cli.ts';
import { tempDir, PASSPHRASE } from '../../helpers/repo.ts';
import { missingEtcd, startEtcd, type EtcdServer } from '../../helpers/etcd.ts';
import { checkNamed, drillSnapshot } from './drill-harness.ts';

const skip = missingEtcd();

function revision(server: EtcdServer): number {
  return (JSON.parse(server.ctl('endpoint', 'status', '-w', 'json')) as Array<{ Status: { header: { revision: number } } }>)[0]?.Status
    .header.revision as number;
}

describe('etcd drills: a private member from the snapshot, or the keys loaded into one', { skip }, () => {
  let source: EtcdServer;
  let work: Awaited<ReturnType<typeof tempDir>>;
  let env: Record<string, string>;
  let conn: string[];
  before(async () => {
    source = await startEtcd();
    work = await tempDir('etcd-drill');
    env = { CAIRN_REPOSITORY: join(work.path, 'repo'), CAIRN_PASSWORD: PASSPHRASE };
    assert.equal((await runCli(['init'], env)).code, 0);
    conn = ['--db-host', '127.0.0.1', '--db-port', String(source.clientPort)];
    for (let batch = 0; batch < 10; batch++) {
      const ops = Array.from(
        { length: 100 },
        (_, j) => `put /app/ns-${j % 5}/key-${batch * 100 + j} "${randomBytes(200).toString('base64')}"`,
      );
      source.txn(`\n${ops.join('\n')}\n\n\n`);
    }
    // History beyond the live keys: overwritten and deleted keys, and a compaction.
    source.ctl('put', '/app/ns-1/key-1', 'overwritten');
    source.ctl('del', '/app/ns-2/key-2');
    source.ctl('compact', String(revision(source) - 1));
    source.ctl('put', '/other/x', 'outside /app/');
  });
  after(async () => {
    await source?.stop();
    await work?.remove();
  });

  // A drill must not reach the production member whatever the environment says: these point etcdctl and the gateway client at it.
  const hostile = (): Record<string, string> => ({
    ETCDCTL_ENDPOINTS: `http://127.0.0.1:${source.clientPort}`,
    ETCD_INITIAL_CLUSTER: `default=http://127.0.0.1:${source.peerPort}`,
  });

  it('etcd: the snapshot restored into a private member has the recorded revision, key count and HashKV', async () => {
    const backup = await runCli(['backup', '--engine', 'etcd', ...conn], env);
    assert.equal(backup.code, 0, backup.stderr);
    const summary = lastOfType(backup, 'summary') as {
      snapshotId: string;
      engineMetadata: { keyCount: number; hashKv: number; hashKvCompactRevision: number };
    };
    assert.equal(
      summary.engineMetadata.keyCount,
      1000,
      'the live keys at the snapshot revision (1000 written, 1 deleted, 1 added outside /app/)',
    );
    assert.ok(summary.engineMetadata.hashKvCompactRevision > 0, 'the compaction point the hash was taken at');
    const before = revision(source);

    const checks = await drillSnapshot(env.CAIRN_REPOSITORY as string, summary.snapshotId, { env: hostile() });
    assert.deepEqual(
      checks.map((c) => c.name),
      ['restore', 'snapshot status', 'revision', 'key count', 'hash'],
    );
    for (const check of checks) assert.ok(check.ran && check.ok, `${check.name}: ${check.found}`);
    assert.match(checkNamed(checks, 'key count').found, /^1000 keys, as recorded/);
    assert.match(checkNamed(checks, 'hash').found, new RegExp(`HashKV at revision \\d+ is ${summary.engineMetadata.hashKv}, as recorded`));
    assert.equal(revision(source), before, 'the production member saw no write');
  });

  it('etcd-keys: the keys loaded into an empty private member read back with the recorded count and hash', async () => {
    const backup = await runCli(['backup', '--engine', 'etcd-keys', ...conn, '--etcd-prefix', '/app/'], env);
    assert.equal(backup.code, 0, backup.stderr);
    const summary = lastOfType(backup, 'summary') as { snapshotId: string; engineMetadata: { keyCount: number; keysSha256: string } };
    assert.equal(summary.engineMetadata.keyCount, 999);
    assert.match(summary.engineMetadata.keysSha256, /^[0-9a-f]{64}$/);
    const before = revision(source);

    const checks = await drillSnapshot(env.CAIRN_REPOSITORY as string, summary.snapshotId, { env: hostile() });
    assert.deepEqual(
      checks.map((c) => c.name),
      ['load keys', 'key count', 'hash'],
    );
    for (const check of checks) assert.ok(check.ran && check.ok, `${check.name}: ${check.found}`);
    assert.match(checkNamed(checks, 'key count').found, /^999 keys read back, as recorded/);
    assert.equal(revision(source), before, 'the keys went into the private member, not the production one');
  });
});

/** What a local user without the drill's certificate gets from `etcdctl get` against `endpoint` (extra flags: what they may try). */
function strangerGet(endpoint: string, ...flags: string[]): { status: number | null; output: string } {
  const result = spawnSync('etcdctl', ['--endpoints', endpoint, '--command-timeout=5s', ...flags, 'get', '/secret/', '--prefix'], {
    encoding: 'utf8',
    env: privateEtcdEnvironment(process.env),
  });
  return { status: result.status, output: result.stdout + result.stderr };
}

/** An HTTPS request to `port` on 127.0.0.1, with a client certificate or without: 'accepted (…)' or the error. */
function tlsRequest(port: number, client?: { cert: Buffer; key: Buffer }): Promise<string> {
  return new Promise((resolve) => {
    const req = request({ host: '127.0.0.1', port, path: '/version', rejectUnauthorized: false, timeout: 10_000, ...client }, (res) => {
      res.resume();
      resolve(`accepted (HTTP ${res.statusCode})`);
    });
    req.on('error', (error) => resolve(`refused: ${error.message}`));
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.end();
  });
}

describe("a drill's private etcd member refuses every client but the drill's own", { skip }, () => {
  let work: Awaited<ReturnType<typeof tempDir>>;
  before(async () => {
    work = await tempDir('etcd-private');
  });
  after(async () => work?.remove());

  it('takes only TLS clients with a certificate of the drill’s CA, on the client and the peer port; its keys sit in a 0700 directory', async () => {
    const tlsDir = join(work.path, 'tls');
    const tls = await drillCertificates(tlsDir, process.env);
    assert.equal((await stat(tlsDir)).mode & 0o777, 0o700, 'the CA and member keys are the drill’s alone');
    const dataDir = join(work.path, 'member');
    await mkdir(dataDir, { mode: 0o700 });
    const peerPort = await loopbackPort();
    const member = await startPrivateEtcd({ dataDir, peerPort, clusterToken: drillClusterToken(), tls, env: process.env });
    try {
      await member.ctl(['put', '/secret/db-password', 'hunter2'], 'writing a secret');
      // The drill itself reads it (the control: the member is up and holds the key).
      assert.match(await member.ctl(['get', '/secret/', '--prefix'], 'reading it'), /hunter2/);
      const url = new URL(member.clientUrl);
      assert.equal(url.protocol, 'https:');

      // Another local user: plain HTTP, TLS without verifying the server, TLS trusting the drill's CA (world-readable or not): no certificate, no keys.
      for (const attempt of [
        strangerGet(`http://127.0.0.1:${url.port}`),
        strangerGet(member.clientUrl, '--insecure-transport=false', '--insecure-skip-tls-verify'),
        strangerGet(member.clientUrl, '--cacert', tls.cacert),
      ]) {
        assert.notEqual(attempt.status, 0, attempt.output);
        assert.doesNotMatch(attempt.output, /hunter2/);
      }
      // The same at the TLS handshake itself, on the client and the peer port (a peer could otherwise speak raft to it):
      // the drill's certificate is accepted, none is refused.
      const mine = { cert: await readFile(tls.cert), key: await readFile(tls.key) };
      for (const port of [Number(url.port), peerPort]) {
        assert.match(await tlsRequest(port, mine), /^accepted/, `port ${port} takes the drill's certificate`);
        const answer = await tlsRequest(port);
        assert.match(answer, /^refused/, `port ${port} without a certificate: ${answer}`);
      }
    } finally {
      await member.stop();
    }
  });
});
