import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { runCli, lastOfType } from '../../helpers/cli.ts';
import { fileRepo, initSmallRepo, tempDir, PASSPHRASE } from '../../helpers/repo.ts';
import { missingEtcd, startEtcd, type EtcdServer } from '../../helpers/etcd.ts';
import { freePort } from '../../helpers/mariadb.ts';
import { etcdKeysEngine } from '../../../agent/engines/etcd-keys.ts';
import type { ProgressEvent, ProgressListener } from '../../../agent/progress/progress.ts';
import type { SnapshotSink, SnapshotSource } from '../../../agent/engines/engine.ts';

const skip = missingEtcd();

/** etcd's v3 JSON gateway, as the test's own independent client (keys and values are bytes). */
async function gateway<T>(server: EtcdServer, path: string, body: unknown): Promise<T> {
  const response = await fetch(`http://127.0.0.1:${server.clientPort}${path}`, { method: 'POST', body: JSON.stringify(body) });
  const json = (await response.json()) as T & { error?: string };
  if (!response.ok) throw new Error(`${path}: ${json.error}`);
  return json;
}

async function putAll(server: EtcdServer, pairs: Array<[Buffer, Buffer]>, lease?: string): Promise<void> {
  for (let i = 0; i < pairs.length; i += 64) {
    const success = pairs
      .slice(i, i + 64)
      .map(([k, v]) => ({ request_put: { key: k.toString('base64'), value: v.toString('base64'), ...(lease ? { lease } : {}) } }));
    await gateway(server, '/v3/kv/txn', { success });
  }
}

interface Entry {
  value: string;
  lease: string;
}

/** Every key of the member (hex) with its value (base64) and lease. */
async function everything(server: EtcdServer): Promise<Map<string, Entry>> {
  const out = await gateway<{ kvs?: Array<{ key: string; value?: string; lease?: string }> }>(server, '/v3/kv/range', {
    key: 'AA==',
    range_end: 'AA==',
  });
  return new Map(
    (out.kvs ?? []).map((kv) => [Buffer.from(kv.key, 'base64').toString('hex'), { value: kv.value ?? '', lease: kv.lease ?? '0' }]),
  );
}

async function revision(server: EtcdServer): Promise<number> {
  const out = await gateway<{ header: { revision: string } }>(server, '/v3/kv/range', { key: 'AA==', range_end: 'AA==', count_only: true });
  return Number(out.header.revision);
}

const hex = (text: string): string => Buffer.from(text).toString('hex');

function underPrefix(all: Map<string, Entry>, prefix: string): Map<string, Entry> {
  const p = hex(prefix);
  return new Map([...all].filter(([k]) => k.startsWith(p)));
}

/** The keys of `from` under `oldPrefix`, as they should read under `newPrefix`. */
function renamed(from: Map<string, Entry>, oldPrefix: string, newPrefix: string): Map<string, string> {
  return new Map([...underPrefix(from, oldPrefix)].map(([k, e]) => [hex(newPrefix) + k.slice(hex(oldPrefix).length), e.value]));
}

function values(map: Map<string, Entry>): Map<string, string> {
  return new Map([...map].map(([k, e]) => [k, e.value]));
}

describe('etcd-keys engine against real etcd members', { skip }, () => {
  let source: EtcdServer;
  let target: EtcdServer;
  let work: Awaited<ReturnType<typeof tempDir>>;
  let env: Record<string, string>;
  let snapshotId = '';
  let expectedUnderB = new Map<string, string>();
  const A = '/pool/alpha/';
  const B = '/pool/gamma/';

  before(async () => {
    [source, target] = await Promise.all([startEtcd(), startEtcd()]);
    work = await tempDir('etcd-keys');
    env = { CAIRN_REPOSITORY: join(work.path, 'repo'), CAIRN_PASSWORD: PASSPHRASE };
    assert.equal((await runCli(['init'], env)).code, 0);

    const pairs: Array<[Buffer, Buffer]> = [];
    for (let i = 0; i < 300; i++) {
      // Values: text, binary (every byte value), and empty.
      const value =
        i % 3 === 0 ? Buffer.from(`value ${i}`) : i % 3 === 1 ? createHash('sha512').update(String(i)).digest() : Buffer.alloc(0);
      pairs.push([Buffer.from(`${A}key-${String(i).padStart(4, '0')}`), value]);
      pairs.push([Buffer.from(`/pool/beta/key-${i}`), Buffer.from(`beta ${i}`)]);
    }
    pairs.push([Buffer.concat([Buffer.from(A), Buffer.from([0x00, 0xff, 0xfe, 0x80])]), Buffer.from([0, 1, 2, 255])]);
    pairs.push([Buffer.from(`${A}big`), Buffer.from(Array.from({ length: 100 * 1024 }, (_, i) => (i * 7919) % 251))]);
    pairs.push([Buffer.from('/pool/alpha'), Buffer.from('next to the prefix, not under it')]);
    await putAll(source, pairs);
    // A key with a lease: restored without it.
    const lease = await gateway<{ ID: string }>(source, '/v3/lease/grant', { TTL: 3600 });
    await putAll(source, [[Buffer.from(`${A}leased`), Buffer.from('lease-bound')]], lease.ID);
    await putAll(target, [[Buffer.from('/other/x'), Buffer.from('unrelated')]]);
  });
  after(async () => {
    await Promise.all([source?.stop(), target?.stop()]);
    await work?.remove();
  });

  it('backs up one prefix at one revision and restores it under a renamed prefix into another etcd, writing nothing else', async () => {
    const atBackup = await everything(source);
    const rev = await revision(source);
    const backup = await runCli(
      ['backup', '--engine', 'etcd-keys', '--db-host', '127.0.0.1', '--db-port', String(source.clientPort), '--etcd-prefix', A],
      env,
    );
    assert.equal(backup.code, 0, backup.stderr);
    const summary = lastOfType(backup, 'summary') as {
      snapshotId: string;
      bytesAdded: number;
      engine: string;
      engineMetadata: Record<string, unknown>;
    };
    snapshotId = summary.snapshotId;
    assert.equal(summary.engine, 'etcd-keys');
    assert.equal(summary.engineMetadata.revision, rev, 'the revision the keys were read at');
    assert.equal(summary.engineMetadata.keyCount, underPrefix(atBackup, A).size);
    assert.deepEqual(summary.engineMetadata.prefixes, [A]);
    assert.match(String(summary.engineMetadata.clusterId), /^\d+$/);

    // Written after the backup: absent from the restore.
    await putAll(source, [[Buffer.from(`${A}late`), Buffer.from('after the backup')]]);

    const before = await everything(target);
    const restored = await runCli(
      ['restore', snapshotId, '--etcd-endpoints', `http://127.0.0.1:${target.clientPort}`, '--rename-prefix', `${A}:${B}`],
      env,
    );
    assert.equal(restored.code, 0, restored.stderr);
    const after = await everything(target);
    const expected = renamed(atBackup, A, B);
    expectedUnderB = expected;
    assert.ok(expected.size >= 303, `keys under the prefix: ${expected.size}`);
    assert.deepEqual(values(underPrefix(after, B)), expected, 'every key and value under the new prefix');
    assert.deepEqual(values(new Map([...after].filter(([k]) => !k.startsWith(hex(B))))), values(before), 'nothing else written');
    assert.equal(after.get(hex(`${B}leased`))?.lease, '0', 'leases are not restored');
    assert.equal(after.get(hex(`${B}big`))?.value.length, Math.ceil((100 * 1024) / 3) * 4, 'the 100 KB value');
  });

  it('stores unchanged keys once: a re-backup after one key changed adds a small part of the first', async () => {
    // A repository of its own with small chunks (at most 64 KiB): one changed key then adds at most the two
    // chunks around it and the lists, whatever boundaries the repository's keyed chunker draws. (With the
    // default chunks of up to 4 MiB the share added depended on where they fell, and one CI run in twenty
    // or so saw a third of the first backup.)
    const dedupEnv = { ...env, CAIRN_REPOSITORY: join(work.path, 'dedup-repo') };
    await initSmallRepo(fileRepo(dedupEnv.CAIRN_REPOSITORY));
    // ~11 MB of records (random values do not compress), so the chunker cuts it into many pieces.
    await putAll(
      target,
      Array.from({ length: 4000 }, (_, i): [Buffer, Buffer] => [Buffer.from(`/bulk/${String(i).padStart(5, '0')}`), randomBytes(2000)]),
    );
    const conn = ['backup', '--engine', 'etcd-keys', '--db-port', String(target.clientPort), '--etcd-prefix', '/bulk/'];
    const first = await runCli(conn, dedupEnv);
    assert.equal(first.code, 0, first.stderr);
    const firstAdded = (lastOfType(first, 'summary') as { bytesAdded: number }).bytesAdded;
    await putAll(target, [[Buffer.from('/bulk/02000'), Buffer.from('changed')]]);
    const second = await runCli(conn, dedupEnv);
    assert.equal(second.code, 0, second.stderr);
    const added = (lastOfType(second, 'summary') as { bytesAdded: number }).bytesAdded;
    assert.ok(firstAdded > 8_000_000, `first backup added ${firstAdded}`);
    assert.ok(added < firstAdded / 10, `the second backup deduplicates (added ${added} of ${firstAdded})`);
  });

  it('refuses a non-empty target prefix without writing; --clear-prefix replaces it and leaves keys outside alone', async () => {
    assert.ok(snapshotId, 'needs the snapshot of the first test');
    await putAll(target, [
      [Buffer.from(`${B}stale`), Buffer.from('stale')],
      [Buffer.from('/pool/gamma-outside'), Buffer.from('outside the prefix')],
    ]);
    const rev = await revision(target);
    const refused = await runCli(['restore', snapshotId, '--db-port', String(target.clientPort), '--rename-prefix', `${A}:${B}`], env);
    assert.equal(refused.code, 15, refused.stderr);
    assert.match(refused.stderr, /already holds keys under "\/pool\/gamma\/"/);
    assert.equal(await revision(target), rev, 'nothing was written (the revision did not move)');

    const forced = await runCli(
      ['restore', snapshotId, '--db-port', String(target.clientPort), '--rename-prefix', `${A}:${B}`, '--force'],
      env,
    );
    assert.equal(forced.code, 0, forced.stderr);
    assert.equal(
      (await everything(target)).get(hex(`${B}stale`))?.value,
      Buffer.from('stale').toString('base64'),
      '--force writes over, keeps other keys',
    );

    const outsideBefore = new Map([...(await everything(target))].filter(([k]) => !k.startsWith(hex(B))));
    const cleared = await runCli(
      ['restore', snapshotId, '--db-port', String(target.clientPort), '--rename-prefix', `${A}:${B}`, '--clear-prefix'],
      env,
    );
    assert.equal(cleared.code, 0, cleared.stderr);
    const after = await everything(target);
    assert.equal(after.has(hex(`${B}stale`)), false, 'the stale key is gone');
    assert.deepEqual(new Map([...after].filter(([k]) => !k.startsWith(hex(B)))), outsideBefore, 'keys outside the prefix are untouched');
    assert.ok(after.has(hex('/pool/gamma-outside')));
    assert.deepEqual(values(underPrefix(after, B)), expectedUnderB, "exactly the snapshot's keys under the prefix");
    assert.equal(after.has(hex(`${B}late`)), false, "the restore is the backup's point in time");
  });

  it('refuses a rename that does not cover every restored key, writing nothing', async () => {
    const rev = await revision(target);
    const result = await runCli(
      ['restore', snapshotId, '--db-port', String(target.clientPort), '--rename-prefix', '/pool/alpha/key-:/x/', '--clear-prefix'],
      env,
    );
    assert.equal(result.code, 2, result.stderr);
    assert.match(result.stderr, /outside "\/pool\/alpha\/key-"/);
    assert.equal(await revision(target), rev);
  });

  it('fails a backup from a server that is down and commits no snapshot', async () => {
    const count = (lastOfType(await runCli(['snapshots'], env), 'snapshots') as { snapshots: unknown[] }).snapshots.length;
    const down = await runCli(['backup', '--engine', 'etcd-keys', '--etcd-endpoints', `http://127.0.0.1:${await freePort()}`], env);
    assert.equal(down.code, 1, down.stderr);
    assert.match(down.stderr, /etcd is not reachable/);
    assert.match(down.stderr, /--etcd-endpoints/);
    assert.equal((lastOfType(await runCli(['snapshots'], env), 'snapshots') as { snapshots: unknown[] }).snapshots.length, count);
  });

  it('reports progress while it backs up and restores, in pages, and restores a chosen part of a snapshot', async () => {
    const files = new Map<string, Buffer>();
    const sink: SnapshotSink = {
      async addStream(path, data) {
        const chunks: Buffer[] = [];
        for await (const chunk of data) chunks.push(chunk as Buffer);
        files.set(path, Buffer.concat(chunks));
      },
      async addDirectory() {},
      async addSymlink() {},
    };
    const events: ProgressEvent[] = [];
    const progress: ProgressListener = { progress: (e) => events.push(e), warn: () => undefined };
    const ctx = { progress, env: {}, tempDir: work.path };
    const options = etcdKeysEngine.parseOptions({ port: source.clientPort });
    const metadata = await etcdKeysEngine.backup(options, sink, ctx);
    const all = await everything(source);
    assert.equal(metadata.keyCount, all.size);
    const backedUp = events.filter((e) => e.phase === 'backup');
    assert.ok(backedUp.length >= 2, `one event per page (${backedUp.length})`);
    assert.equal(backedUp.at(-1)?.files, all.size);
    assert.equal(backedUp.at(-1)?.totalFiles, all.size);
    assert.ok(backedUp.every((e, i) => i === 0 || e.files >= (backedUp[i - 1]?.files ?? 0)));

    const third = await startEtcd();
    try {
      const snapshot: SnapshotSource = {
        metadata,
        list: async () => [...files].map(([path, data]) => ({ path, size: data.length })),
        open: (path) => Readable.from([files.get(path) ?? Buffer.alloc(0)]),
        restoreTo: async () => undefined,
      };
      events.length = 0;
      await etcdKeysEngine.restore(
        etcdKeysEngine.parseOptions({ port: third.clientPort, prefixes: ['/pool/beta/'], batchOps: 50 }),
        snapshot,
        { ...ctx, target: {}, placeLast: async () => undefined },
      );
      const restored = await everything(third);
      assert.deepEqual(values(restored), values(underPrefix(all, '/pool/beta/')), 'only the chosen prefix');
      const restoring = events.filter((e) => e.phase === 'restore');
      assert.equal(restoring.length, 6, 'one event per transaction of 50 puts');
      assert.equal(restoring.at(-1)?.files, 300);
    } finally {
      await third.stop();
    }
  });

  it('logs in when etcd has auth enabled, and says what is missing when it is not given', async () => {
    const secured = await startEtcd();
    try {
      secured.ctl('user', 'add', 'root:rootpw');
      secured.ctl('role', 'add', 'root');
      secured.ctl('user', 'grant-role', 'root', 'root');
      secured.ctl('--user', 'root:rootpw', 'put', '/s/k', 'secret value');
      secured.ctl('auth', 'enable');
      const conn = ['backup', '--engine', 'etcd-keys', '--db-port', String(secured.clientPort)];
      const anonymous = await runCli(conn, env);
      assert.equal(anonymous.code, 1);
      assert.match(anonymous.stderr, /auth enabled|--db-user/);
      const logged = await runCli([...conn, '--db-user', 'root'], { ...env, CAIRN_DB_PASSWORD: 'rootpw' });
      assert.equal(logged.code, 0, logged.stderr);
      assert.equal((lastOfType(logged, 'summary') as { engineMetadata: { keyCount: number } }).engineMetadata.keyCount, 1);
    } finally {
      await secured.stop();
    }
  });

  it(
    'connects over TLS with a CA and a client certificate, and fails clearly without them',
    { skip: spawnSync('sh', ['-c', 'command -v openssl']).status !== 0 ? 'needs openssl: apt-get install openssl' : false },
    async () => {
      const dir = join(work.path, 'tls');
      const ssl = (...args: string[]): void => {
        const out = spawnSync('openssl', args, { cwd: dir, encoding: 'utf8' });
        assert.equal(out.status, 0, `openssl ${args.join(' ')}: ${out.stderr}`);
      };
      spawnSync('mkdir', ['-p', dir]);
      await writeFile(join(dir, 'ext.cnf'), 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n');
      ssl(
        'req',
        '-x509',
        '-newkey',
        'rsa:2048',
        '-nodes',
        '-keyout',
        'ca-key.pem',
        '-out',
        'ca.pem',
        '-days',
        '2',
        '-subj',
        '/CN=cairn test CA',
      );
      for (const name of ['server', 'client']) {
        ssl(
          'req',
          '-newkey',
          'rsa:2048',
          '-nodes',
          '-keyout',
          `${name}-key.pem`,
          '-out',
          `${name}.csr`,
          '-subj',
          `/CN=${name === 'server' ? '127.0.0.1' : 'root'}`,
        );
        ssl(
          'x509',
          '-req',
          '-in',
          `${name}.csr`,
          '-CA',
          'ca.pem',
          '-CAkey',
          'ca-key.pem',
          '-CAcreateserial',
          '-out',
          `${name}.pem`,
          '-days',
          '2',
          '-extfile',
          'ext.cnf',
        );
      }
      const [clientPort, peerPort] = [await freePort(), await freePort()];
      const url = `https://127.0.0.1:${clientPort}`;
      const peer = `http://127.0.0.1:${peerPort}`;
      const etcd = spawn(
        'etcd',
        [
          '--data-dir',
          join(dir, 'data'),
          '--listen-client-urls',
          url,
          '--advertise-client-urls',
          url,
          '--listen-peer-urls',
          peer,
          '--initial-advertise-peer-urls',
          peer,
          '--initial-cluster',
          `default=${peer}`,
          '--cert-file',
          join(dir, 'server.pem'),
          '--key-file',
          join(dir, 'server-key.pem'),
          '--trusted-ca-file',
          join(dir, 'ca.pem'),
          '--client-cert-auth',
          '--log-level',
          'error',
        ],
        { stdio: 'ignore' },
      );
      const tls = ['--cacert', join(dir, 'ca.pem'), '--cert', join(dir, 'client.pem'), '--key', join(dir, 'client-key.pem')];
      const ctl = (...args: string[]): ReturnType<typeof spawnSync> =>
        spawnSync('etcdctl', ['--endpoints', url, ...tls, ...args], { encoding: 'utf8', env: { ...process.env, ETCDCTL_API: '3' } });
      try {
        for (let i = 0; ctl('endpoint', 'health').status !== 0; i++) {
          assert.ok(i < 200 && etcd.exitCode === null, 'etcd with TLS did not start');
          await sleep(100);
        }
        assert.equal(ctl('put', '/tls/k', 'over tls').status, 0);
        const plain = await runCli(['backup', '--engine', 'etcd-keys', '--etcd-endpoints', url, '--etcd-prefix', '/tls/'], env);
        assert.equal(plain.code, 1, 'no CA given: the server certificate is not trusted');
        assert.match(plain.stderr, /not reachable.*(certificate|self.signed)/i);
        const flags = [
          '--etcd-endpoints',
          url,
          '--etcd-cacert',
          join(dir, 'ca.pem'),
          '--etcd-cert',
          join(dir, 'client.pem'),
          '--etcd-key',
          join(dir, 'client-key.pem'),
        ];
        const backedUp = await runCli(['backup', '--engine', 'etcd-keys', ...flags, '--etcd-prefix', '/tls/'], env);
        assert.equal(backedUp.code, 0, backedUp.stderr);
        const id = (lastOfType(backedUp, 'summary') as { snapshotId: string; engineMetadata: { keyCount: number } }).snapshotId;
        const restored = await runCli(['restore', id, ...flags, '--rename-prefix', '/tls/:/tls-copy/'], env);
        assert.equal(restored.code, 0, restored.stderr);
        assert.equal(String(ctl('get', '/tls-copy/k', '--print-value-only').stdout).trim(), 'over tls');
      } finally {
        etcd.kill('SIGTERM');
        if (etcd.exitCode === null) await new Promise((r) => etcd.once('exit', r));
      }
    },
  );
});
