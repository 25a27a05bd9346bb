import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { existsSync } from 'node:fs';
import { mkdir, readFile } from 'node:fs/promises';
import { runCli, lastOfType, CAIRN_BIN } from '../../helpers/cli.ts';
import { tempDir, PASSPHRASE, restoreTo } from '../../helpers/repo.ts';
import { STOPPED_AFTER_FILES, registryStoppingAfterFiles } from '../../helpers/stopping-engine.ts';
import { missingMariadb, startMariadb, type MariadbServer } from '../../helpers/mariadb.ts';
import { Repository } from '../../../agent/core/repository.ts';
import { PieceReader } from '../../../agent/core/piece-reader.ts';
import { decodeTree, type TreeEntry } from '../../../agent/core/tree.ts';
import { FileStorage } from '../../../agent/storage/file.ts';

const skip =
  missingMariadb() ??
  (spawnSync('sh', ['-c', 'command -v mariabackup']).status === 0 ? undefined : 'needs mariabackup: apt-get install mariadb-backup');

/** The entry at `path` (a/b/c) in a snapshot's trees. */
async function entryAt(repoPath: string, snapshotId: string, path: string): Promise<TreeEntry | undefined> {
  const repo = await Repository.open(new FileStorage(repoPath), PASSPHRASE);
  const reader = new PieceReader(repo, await repo.loadIndex());
  let tree = (await repo.readSnapshot(snapshotId)).tree;
  const names = path.split('/');
  for (const [i, name] of names.entries()) {
    const entry = decodeTree(await reader.read(Buffer.from(tree, 'hex')), tree).entries.find((e) => e.name === name);
    if (!entry || i === names.length - 1) return entry;
    if (!entry.subtree) return undefined;
    tree = entry.subtree;
  }
  return undefined;
}

function checksums(server: MariadbServer): string {
  return server.sql('CHECKSUM TABLE shop.items, shop.events EXTENDED');
}

describe('mariadb physical engine (mariabackup) against a real MariaDB server', { skip }, () => {
  let server: MariadbServer;
  let work: Awaited<ReturnType<typeof tempDir>>;
  let env: Record<string, string>;
  /** The first backup's snapshot (set by the first test). */
  let firstId = '';
  before(async () => {
    server = await startMariadb();
    work = await tempDir('mariabackup');
    env = { CAIRN_REPOSITORY: join(work.path, 'repo'), CAIRN_PASSWORD: PASSPHRASE, CAIRN_DB_PASSWORD: server.password };
    assert.equal((await runCli(['init'], env)).code, 0);
    server.sql('CREATE DATABASE shop');
    server.sql(
      `CREATE TABLE items (id INT PRIMARY KEY, name VARCHAR(80), price DECIMAL(10,2), body TEXT, KEY (name)) ENGINE=InnoDB;
       CREATE TABLE events (id BIGINT AUTO_INCREMENT PRIMARY KEY, item INT, at DATETIME, payload BLOB, KEY (item, at)) ENGINE=InnoDB;
       INSERT INTO items SELECT seq, CONCAT('item-', seq), seq / 7, REPEAT(MD5(seq), 8) FROM seq_1_to_30000;
       INSERT INTO events (item, at, payload) SELECT 1 + seq % 30000, '2026-01-01' + INTERVAL seq SECOND, UNHEX(SHA2(seq, 256)) FROM seq_1_to_80000;`,
      'shop',
    );
  });
  after(async () => {
    await server?.stop();
    await work?.remove();
  });

  it('streams the datadir split into files, records the binlog position, dedupes the next backup, and restores a datadir that starts', async () => {
    const expected = checksums(server);
    const conn = ['--engine', 'mariadb', '--db-host', '127.0.0.1', '--db-port', String(server.port), '--db-user', server.user];
    const first = await runCli(['backup', ...conn], env);
    assert.equal(first.code, 0, first.stderr);
    const summary = lastOfType(first, 'summary') as {
      snapshotId: string;
      bytesAdded: number;
      filesNew: number;
      engineMetadata: { binlogFile: string; binlogPosition: number; gtid: string; toLsn: number };
    };
    assert.match(summary.engineMetadata.binlogFile, /^mariadb-bin\.\d+$/);
    assert.ok(summary.engineMetadata.binlogPosition > 0);
    assert.match(summary.engineMetadata.gtid, /^\d+-\d+-\d+$/);
    assert.ok(summary.engineMetadata.toLsn > 0);
    assert.ok(summary.filesNew > 20, `the stream was split into files (${summary.filesNew})`);
    firstId = summary.snapshotId;

    server.sql('UPDATE items SET price = price + 1 WHERE id % 500 = 0', 'shop');
    // A tablespace's first page may still be only in the buffer pool (zeroes on disk) right after CREATE TABLE,
    // and the page-file detector reads the header there: flush the table so the second backup sees it.
    server.sql('FLUSH TABLES items FOR EXPORT; UNLOCK TABLES;', 'shop');
    const second = await runCli(['backup', ...conn], env);
    assert.equal(second.code, 0, second.stderr);
    const added = (lastOfType(second, 'summary') as { bytesAdded: number }).bytesAdded;
    const afterChange = checksums(server);
    const secondId = (lastOfType(second, 'summary') as { snapshotId: string }).snapshotId;
    assert.ok(added < summary.bytesAdded * 0.7, `unchanged files are not stored again (added ${added} of ${summary.bytesAdded})`);
    // The tablespace is a page file (repository format 2) once its header is on disk.
    const items = await entryAt(env.CAIRN_REPOSITORY as string, secondId, 'shop/items.ibd');
    assert.ok(items?.extentLists && items.pageHashes && items.pageSize === 16384, 'shop/items.ibd is a page file in the second snapshot');

    const datadir = join(work.path, 'restored-datadir');
    const restored = await runCli(['restore', summary.snapshotId, '--target', datadir], env);
    assert.equal(restored.code, 0, restored.stderr);
    const copy = await startMariadb({ datadir });
    try {
      assert.equal(checksums(copy), expected);
    } finally {
      await copy.stop();
    }
    const secondDir = join(work.path, 'restored-second');
    assert.equal((await runCli(['restore', secondId, '--target', secondDir], env)).code, 0);
    const copy2 = await startMariadb({ datadir: secondDir });
    try {
      assert.equal(checksums(copy2), afterChange);
    } finally {
      await copy2.stop();
    }
    const again = await runCli(['restore', summary.snapshotId, '--target', datadir], env);
    assert.equal(again.code, 15, 'a non-empty datadir is refused');
  });

  it('a restore stopped before its end leaves a datadir MariaDB refuses to start: the grant table is placed last', async () => {
    assert.ok(firstId, 'the first test backed up the server');
    const repo = await Repository.open(new FileStorage(env.CAIRN_REPOSITORY as string), PASSPHRASE);
    const datadir = join(work.path, 'stopped-datadir');
    await assert.rejects(
      restoreTo(repo, firstId, datadir, { engines: registryStoppingAfterFiles('mariadb') }),
      new RegExp(STOPPED_AFTER_FILES),
    );
    assert.ok(existsSync(join(datadir, 'ibdata1')), 'the files were written');
    assert.ok(!existsSync(join(datadir, 'mysql', 'global_priv.frm')), 'the grant table is not in place');
    assert.ok(existsSync(join(datadir, 'mysql', 'global_priv.frm.cairn-restoring')), 'it waits under another name');
    // Unprepared and in part, this datadir would start (InnoDB recovers from the copied redo log); without
    // its grant table the server aborts.
    await assert.rejects(startMariadb({ datadir }), /Can't open and lock privilege tables/);
  });
});

describe(
  'a database backup uses bounded local disk and memory, whatever the database size',
  { skip: skip ?? (spawnSync('test', ['-x', '/usr/bin/time']).status === 0 ? undefined : 'needs /usr/bin/time: apt-get install time') },
  () => {
    let server: MariadbServer;
    let work: Awaited<ReturnType<typeof tempDir>>;
    let env: Record<string, string>;
    before(async () => {
      server = await startMariadb();
      work = await tempDir('bounded');
      env = { CAIRN_REPOSITORY: join(work.path, 'repo'), CAIRN_PASSWORD: PASSPHRASE, CAIRN_DB_PASSWORD: server.password };
      assert.equal((await runCli(['init'], env)).code, 0);
      server.sql('CREATE DATABASE big');
      server.sql('CREATE TABLE t (id INT PRIMARY KEY, body BLOB) ENGINE=InnoDB', 'big');
    });
    after(async () => {
      await server?.stop();
      await work?.remove();
    });

    /** Peak RSS (KiB) of a backup, and the most the engine's temp dir ever held while it ran. */
    async function measuredBackup(): Promise<{ rssKiB: number; tempMax: number; read: number }> {
      const tempRoot = join(work.path, `temp-${Date.now()}`);
      await mkdir(tempRoot);
      let tempMax = 0;
      const poll = setInterval(() => {
        const du = spawnSync('du', ['-sb', tempRoot], { encoding: 'utf8' });
        tempMax = Math.max(tempMax, Number(du.stdout.split('\t')[0]) || 0);
      }, 20);
      const timeFile = join(work.path, 'time.out');
      const r = spawnSync(
        '/usr/bin/time',
        [
          '-f',
          '%M',
          '-o',
          timeFile,
          process.execPath,
          CAIRN_BIN,
          'backup',
          '--engine',
          'mariadb',
          '--db-host',
          '127.0.0.1',
          '--db-port',
          String(server.port),
          '--db-user',
          server.user,
          '--temp-dir',
          tempRoot,
        ],
        {
          env: { ...process.env, CAIRN_JSON: '1', ...env },
          encoding: 'utf8',
          maxBuffer: 1 << 26,
        },
      );
      clearInterval(poll);
      assert.equal(r.status, 0, r.stderr);
      const summary = r.stdout
        .split('\n')
        .filter((l) => l.includes('"type":"summary"'))
        .map((l) => JSON.parse(l) as { bytesRead: number })[0];
      return { rssKiB: Number((await readFile(timeFile, 'utf8')).trim().split('\n').pop()), tempMax, read: summary?.bytesRead ?? 0 };
    }

    it('more than twice the data does not need more memory, and nothing near the data size lands in local temp space', async () => {
      server.sql('INSERT INTO t SELECT seq, RANDOM_BYTES(1000) FROM seq_1_to_25000', 'big');
      const small = await measuredBackup();
      server.sql('INSERT INTO t SELECT seq, RANDOM_BYTES(1000) FROM seq_25001_to_100000', 'big');
      const large = await measuredBackup();
      // Four times the rows; the fixed part of a datadir (system tablespace, redo and undo logs) makes
      // the bytes read grow less than that (1.97x was seen): 1.5x still means much more data.
      assert.ok(large.read > small.read * 1.5, `the second backup read ${large.read} bytes, the first ${small.read}`);
      assert.ok(
        large.rssKiB < small.rssKiB * 1.25 + 16_384,
        `peak RSS ${large.rssKiB} KiB for ${large.read} bytes vs ${small.rssKiB} KiB for ${small.read}`,
      );
      assert.ok(
        Math.max(small.tempMax, large.tempMax) < 1 << 20,
        `local temp space held at most ${Math.max(small.tempMax, large.tempMax)} bytes`,
      );
    });
  },
);
