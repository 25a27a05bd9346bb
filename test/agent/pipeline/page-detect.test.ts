import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { open, readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { detectPageSize } from '../../../agent/core/page-file.ts';
import { missingPostgres, startPostgres, type PostgresServer } from '../../helpers/postgres.ts';
import { missingMariadb, startMariadb, type MariadbServer } from '../../helpers/mariadb.ts';
import { tempDir } from '../../helpers/repo.ts';

/*
 * The page-file detector (core/page-file.ts) on files real servers wrote: the
 * first page of a PostgreSQL relation, of an InnoDB .ibd and of the system
 * tablespace; and files that are not pages (a WAL segment, a redo log, random
 * bytes). The header bytes come from the files, never from a description of them.
 */

/** The first `bytes` of a file (a whole page at the largest size the detector knows). */
async function head(path: string, bytes = 65536): Promise<Buffer> {
  const file = await open(path, 'r');
  try {
    const buffer = Buffer.alloc(bytes);
    const { bytesRead } = await file.read(buffer, 0, bytes, 0);
    return buffer.subarray(0, bytesRead);
  } finally {
    await file.close();
  }
}

describe('detectPageSize on random bytes', () => {
  it('finds no page in random bytes, zeroes or a short buffer', () => {
    let found = 0;
    for (let i = 0; i < 2000; i++) if (detectPageSize(randomBytes(16384)) !== undefined) found++;
    // A random buffer passes the PostgreSQL test with probability about 2^-13 (the version byte, a size byte, the order of three u16s).
    assert.ok(found <= 2, `${found} of 2000 random buffers looked like a page`);
    assert.equal(detectPageSize(Buffer.alloc(16384)), undefined);
    assert.equal(detectPageSize(Buffer.alloc(10)), undefined);
  });
});

describe('detectPageSize on a real PostgreSQL cluster', { skip: missingPostgres() }, () => {
  let server: PostgresServer;
  before(async () => {
    server = await startPostgres();
    server.sql('CREATE TABLE t (id int PRIMARY KEY, body text)');
    server.sql("INSERT INTO t SELECT g, repeat('x', 200) || g FROM generate_series(1, 5000) g");
    server.sql('CREATE TABLE one (id int)');
    server.sql('INSERT INTO one VALUES (1)');
    server.sql('VACUUM t');
    server.sql('CHECKPOINT');
  });
  after(async () => {
    await server?.stop();
  });

  it('reads 8192 from a relation of one page, a relation of many, its index, free space map and visibility map', async () => {
    const files: Record<string, string> = {
      'one page': server.sql("SELECT pg_relation_filepath('one')").trim(),
      table: server.sql("SELECT pg_relation_filepath('t')").trim(),
      index: server.sql("SELECT pg_relation_filepath('t_pkey')").trim(),
    };
    files.fsm = `${files.table}_fsm`;
    files.vm = `${files.table}_vm`;
    for (const [what, rel] of Object.entries(files)) {
      const path = join(server.dataDir, rel);
      const size = (await stat(path)).size;
      assert.ok(size >= 8192 && size % 8192 === 0, `${what} (${rel}) is whole pages: ${size} bytes`);
      assert.equal(detectPageSize(await head(path)), 8192, `${what} (${rel})`);
    }
    assert.ok((await stat(join(server.dataDir, files.table as string))).size >= 256 * 1024, 'the table is big enough to be a page file');
  });

  it('finds no page in a WAL segment, pg_control or a commit log (SLRU) file', async () => {
    const wal = (await readdir(join(server.dataDir, 'pg_wal'))).filter((n) => /^[0-9A-F]{24}$/.test(n));
    assert.ok(wal.length > 0);
    for (const name of wal) assert.equal(detectPageSize(await head(join(server.dataDir, 'pg_wal', name))), undefined, `pg_wal/${name}`);
    assert.equal(detectPageSize(await head(join(server.dataDir, 'global', 'pg_control'))), undefined, 'pg_control');
    const xact = await readdir(join(server.dataDir, 'pg_xact'));
    for (const name of xact) assert.equal(detectPageSize(await head(join(server.dataDir, 'pg_xact', name))), undefined, `pg_xact/${name}`);
  });
});

describe('detectPageSize on a real MariaDB server', { skip: missingMariadb() }, () => {
  let server: MariadbServer;
  before(async () => {
    server = await startMariadb();
    server.sql('CREATE DATABASE shop');
    server.sql('CREATE TABLE shop.items (id INT PRIMARY KEY, body VARCHAR(300)) ENGINE=InnoDB');
    server.sql("INSERT INTO shop.items SELECT seq, CONCAT(REPEAT('x', 200), seq) FROM seq_1_to_5000", 'shop');
    server.sql('CREATE TABLE shop.packed (id INT PRIMARY KEY, body VARCHAR(300)) ENGINE=InnoDB ROW_FORMAT=COMPRESSED KEY_BLOCK_SIZE=8');
    server.sql("INSERT INTO shop.packed SELECT seq, CONCAT(REPEAT('y', 200), seq) FROM seq_1_to_2000", 'shop');
    // Every dirty page on disk: what a cold backup of a stopped server would read.
    server.sql('FLUSH TABLES shop.items, shop.packed FOR EXPORT; UNLOCK TABLES');
    server.sql('SET GLOBAL innodb_max_dirty_pages_pct = 0');
  });
  after(async () => {
    await server?.stop();
  });

  it('reads 16384 from a table .ibd, the system tablespace ibdata1 and the undo/temporary tablespaces there are', async () => {
    for (const rel of ['shop/items.ibd', 'ibdata1', 'mysql/innodb_index_stats.ibd']) {
      assert.equal(detectPageSize(await head(join(server.datadir, rel))), 16384, rel);
    }
    for (const name of (await readdir(server.datadir)).filter((n) => /^undo\d+$/.test(n)))
      assert.equal(detectPageSize(await head(join(server.datadir, name))), 16384, name);
  });

  it('reads the physical page size, 8192, from a ROW_FORMAT=COMPRESSED KEY_BLOCK_SIZE=8 table', async () => {
    assert.equal(detectPageSize(await head(join(server.datadir, 'shop/packed.ibd'))), 8192);
  });

  it('finds no page in the redo log, the binary log or aria logs', async () => {
    const names = await readdir(server.datadir);
    const logs = names.filter((n) => /^ib_logfile\d+$|^mariadb-bin\.\d+$|^aria_log\.\d+$/.test(n));
    assert.ok(logs.includes('ib_logfile0'));
    for (const name of logs) assert.equal(detectPageSize(await head(join(server.datadir, name))), undefined, name);
  });
});

describe('detectPageSize on a MariaDB datadir of 4 KiB and 64 KiB pages', { skip: missingMariadb() }, () => {
  for (const pageSize of [4096, 65536]) {
    it(`reads ${pageSize} from the .ibd and ibdata1 of a server started with innodb_page_size=${pageSize}`, async () => {
      const work = await tempDir('mariadb-pagesize');
      let server: MariadbServer | undefined;
      try {
        const datadir = join(work.path, 'data');
        const asRoot = process.getuid?.() === 0 ? ['--user=root'] : [];
        const install = spawnSync(
          'mariadb-install-db',
          [
            '--no-defaults',
            `--datadir=${datadir}`,
            '--auth-root-authentication-method=socket',
            '--skip-test-db',
            `--innodb-page-size=${pageSize}`,
            ...asRoot,
          ],
          { encoding: 'utf8' },
        );
        assert.equal(install.status, 0, install.stderr);
        server = await startMariadb({ datadir, extraArgs: [`--innodb-page-size=${pageSize}`] });
        server.sql('CREATE DATABASE shop');
        server.sql('CREATE TABLE shop.items (id INT PRIMARY KEY, body VARCHAR(300)) ENGINE=InnoDB');
        server.sql("INSERT INTO shop.items SELECT seq, CONCAT(REPEAT('x', 200), seq) FROM seq_1_to_2000", 'shop');
        server.sql('FLUSH TABLES shop.items FOR EXPORT; UNLOCK TABLES');
        assert.equal(detectPageSize(await head(join(datadir, 'shop/items.ibd'))), pageSize, 'shop/items.ibd');
        assert.equal(detectPageSize(await head(join(datadir, 'ibdata1'))), pageSize, 'ibdata1');
      } finally {
        await server?.stop();
        await work.remove();
      }
    });
  }
});
