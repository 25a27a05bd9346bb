import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { runCli, lastOfType } from '../../helpers/cli.ts';
import { tempDir, PASSPHRASE } from '../../helpers/repo.ts';
import { missingEtcd, startEtcd, type EtcdServer } from '../../helpers/etcd.ts';
import { freePort } from '../../helpers/mariadb.ts';

const skip = missingEtcd();

function listing(server: EtcdServer): string {
  const pairs = server.ctl('get', '', '--prefix');
  const keys = server.ctl('get', '', '--prefix', '--keys-only').split('\n').filter(Boolean).length;
  return `${createHash('sha256').update(pairs).digest('hex')}:${keys}`;
}

describe('etcd engine against a real etcd member', { skip }, () => {
  let source: EtcdServer;
  let work: Awaited<ReturnType<typeof tempDir>>;
  let env: Record<string, string>;
  before(async () => {
    source = await startEtcd();
    work = await tempDir('etcd');
    env = { CAIRN_REPOSITORY: join(work.path, 'repo'), CAIRN_PASSWORD: PASSPHRASE };
    assert.equal((await runCli(['init'], env)).code, 0);
  });
  after(async () => {
    await source?.stop();
    await work?.remove();
  });

  it('snapshots a running member with its revision and restores it into a new member with the same keys', async () => {
    // A few MB of keys, loaded through a transaction file per batch (one etcdctl call each).
    for (let batch = 0; batch < 60; batch++) {
      const ops = Array.from({ length: 100 }, (_, j) => {
        const i = batch * 100 + j;
        return `put /registry/pods/ns-${i % 7}/pod-${i} "${randomBytes(1200).toString('base64')}"`;
      });
      source.txn(`\n${ops.join('\n')}\n\n\n`);
    }
    const expected = listing(source);
    const conn = ['--engine', 'etcd', '--db-host', '127.0.0.1', '--db-port', String(source.clientPort)];
    const first = await runCli(['backup', ...conn], env);
    assert.equal(first.code, 0, first.stderr);
    const summary = lastOfType(first, 'summary') as {
      snapshotId: string;
      bytesAdded: number;
      engineMetadata: { revision: number; totalKeys: number };
    };
    assert.ok(summary.engineMetadata.revision >= 31, `revision ${summary.engineMetadata.revision}`);
    assert.ok(summary.engineMetadata.totalKeys >= 6000);

    source.ctl('put', '/registry/pods/ns-0/late', 'after the snapshot');
    const second = await runCli(['backup', ...conn], env);
    assert.equal(second.code, 0, second.stderr);
    const added = (lastOfType(second, 'summary') as { bytesAdded: number }).bytesAdded;
    assert.ok(added < summary.bytesAdded, `the second snapshot shares pieces (added ${added} of ${summary.bytesAdded})`);

    const dataDir = join(work.path, 'restored-member');
    const peerPort = await freePort();
    const restored = await runCli(
      [
        'restore',
        summary.snapshotId,
        '--target',
        dataDir,
        '--etcd-name',
        'copy',
        '--etcd-initial-advertise-peer-urls',
        `http://127.0.0.1:${peerPort}`,
      ],
      env,
    );
    assert.equal(restored.code, 0, restored.stderr);
    const copy = await startEtcd({ dataDir, name: 'copy', peerPort });
    try {
      assert.equal(listing(copy), expected);
      assert.equal(
        copy.ctl('get', '/registry/pods/ns-0/late', '--print-value-only').trim(),
        '',
        'a key written after the snapshot is absent',
      );
    } finally {
      await copy.stop();
    }
    const secondDir = join(work.path, 'restored-second');
    const secondPeer = await freePort();
    const secondId = (lastOfType(second, 'summary') as { snapshotId: string }).snapshotId;
    assert.equal(
      (
        await runCli(
          [
            'restore',
            secondId,
            '--target',
            secondDir,
            '--etcd-name',
            'copy2',
            '--etcd-initial-advertise-peer-urls',
            `http://127.0.0.1:${secondPeer}`,
          ],
          env,
        )
      ).code,
      0,
    );
    const copy2 = await startEtcd({ dataDir: secondDir, name: 'copy2', peerPort: secondPeer });
    try {
      assert.equal(copy2.ctl('get', '/registry/pods/ns-0/late', '--print-value-only').trim(), 'after the snapshot');
      assert.equal(listing(copy2), listing(source));
    } finally {
      await copy2.stop();
    }
    const again = await runCli(['restore', summary.snapshotId, '--target', dataDir], env);
    assert.equal(again.code, 15, 'a non-empty data directory is refused');
  });

  it('a member that is down fails clearly and commits nothing', async () => {
    const down = await runCli(['backup', '--engine', 'etcd', '--db-host', '127.0.0.1', '--db-port', String(await freePort())], env);
    assert.notEqual(down.code, 0);
    assert.match(down.stderr, /not reachable/);
  });
});
