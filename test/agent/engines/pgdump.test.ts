import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { runCli, lastOfType } from '../../helpers/cli.ts';
import { fileRepo, initSmallRepo, tempDir, PASSPHRASE } from '../../helpers/repo.ts';
import { missingPostgres, startPostgres, type PostgresServer } from '../../helpers/postgres.ts';

const skip = missingPostgres();

function tableHash(server: PostgresServer, db: string, table: string): string {
  return createHash('sha256')
    .update(server.sql(`SELECT * FROM ${table} ORDER BY 1`, db))
    .digest('hex');
}

describe('pgdump engine against a real PostgreSQL server', { skip }, () => {
  let server: PostgresServer;
  let work: Awaited<ReturnType<typeof tempDir>>;
  let env: Record<string, string>;
  let conn: string[];
  before(async () => {
    server = await startPostgres();
    work = await tempDir('pgdump');
    env = { CAIRN_REPOSITORY: `${work.path}/repo`, CAIRN_PASSWORD: PASSPHRASE, CAIRN_DB_PASSWORD: server.password };
    conn = ['--db-host', '127.0.0.1', '--db-port', String(server.port), '--db-user', server.user];
    // Small chunks (at most 64 KiB): a change to a range of rows then re-uploads the few chunks around it (~1.5% of
    // the first dump here), whatever boundaries the repository's keyed chunker draws. With the default chunks of up
    // to 4 MiB, the share of a dump of a few MB re-uploaded depended on where they fell (0.62 against a bound of 0.6
    // in one run).
    await initSmallRepo(fileRepo(`${work.path}/repo`));
    server.sql('CREATE DATABASE shop');
    server.sql(
      `CREATE TABLE customers (id int PRIMARY KEY, name text NOT NULL, balance numeric(12,2), tags text[], created timestamptz, doc jsonb);
      CREATE INDEX ON customers (name);
      CREATE TABLE orders (id bigserial PRIMARY KEY, customer int REFERENCES customers, amount float8, payload bytea);
      INSERT INTO customers SELECT g, 'customer-' || g, g * 1.25, ARRAY['a' || g % 7, 'b'], '2026-01-01'::timestamptz + g * interval '1 minute', jsonb_build_object('n', g, 'md5', md5(g::text)) FROM generate_series(1, 40000) g;
      INSERT INTO orders (customer, amount, payload) SELECT 1 + g % 40000, g * 0.37, sha256(g::text::bytea) FROM generate_series(1, 80000) g;`,
      'shop',
    );
  });
  after(async () => {
    await server?.stop();
    await work?.remove();
  });

  it('backs up every database with the globals, dedupes the second run, and restores under another name', async () => {
    const before = { customers: tableHash(server, 'shop', 'customers'), orders: tableHash(server, 'shop', 'orders') };
    const first = await runCli(['backup', '--engine', 'pgdump', ...conn, '--db-name', 'shop'], env);
    assert.equal(first.code, 0, first.stderr);
    const summary = lastOfType(first, 'summary') as {
      snapshotId: string;
      bytesAdded: number;
      engineMetadata: { serverVersion: string; databases: string[] };
    };
    assert.match(summary.engineMetadata.serverVersion, /^15\./);
    assert.deepEqual(summary.engineMetadata.databases, ['shop']);

    // A day's worth of changes to a range of rows (rows updated in place in scattered pages defeat any chunking of a logical dump).
    server.sql('UPDATE customers SET balance = balance + 1 WHERE id <= 400', 'shop');
    const second = await runCli(['backup', '--engine', 'pgdump', ...conn, '--db-name', 'shop'], env);
    assert.equal(second.code, 0, second.stderr);
    const added = (lastOfType(second, 'summary') as { bytesAdded: number }).bytesAdded;
    assert.ok(added < summary.bytesAdded * 0.1, `the second dump shares pieces with the first (added ${added} of ${summary.bytesAdded})`);

    const after = { customers: tableHash(server, 'shop', 'customers'), orders: tableHash(server, 'shop', 'orders') };
    const secondId = (lastOfType(second, 'summary') as { snapshotId: string }).snapshotId;
    // The first snapshot into a fresh server under its own name; the second under another name.
    const fresh = await startPostgres();
    try {
      const intoFresh = await runCli(
        ['restore', summary.snapshotId, '--db-host', '127.0.0.1', '--db-port', String(fresh.port), '--db-user', fresh.user],
        { ...env, CAIRN_DB_PASSWORD: fresh.password },
      );
      assert.equal(intoFresh.code, 0, intoFresh.stderr);
      assert.deepEqual({ customers: tableHash(fresh, 'shop', 'customers'), orders: tableHash(fresh, 'shop', 'orders') }, before);
    } finally {
      await fresh.stop();
    }
    const restored = await runCli(['restore', secondId, '--target-database', 'shop_copy', '--jobs', '2', ...conn], env);
    assert.equal(restored.code, 0, restored.stderr);
    assert.deepEqual({ customers: tableHash(server, 'shop_copy', 'customers'), orders: tableHash(server, 'shop_copy', 'orders') }, after);
    assert.equal(server.sql("SELECT count(*) FROM pg_indexes WHERE tablename = 'customers'", 'shop_copy').trim(), '2');

    const all = await runCli(['backup', '--engine', 'pgdump', ...conn], env);
    assert.equal(all.code, 0, all.stderr);
    assert.deepEqual((lastOfType(all, 'summary') as { engineMetadata: { databases: string[] } }).engineMetadata.databases, [
      'postgres',
      'shop',
      'shop_copy',
    ]);
  });

  it('a wrong password fails clearly and commits nothing', async () => {
    const count = async (): Promise<number> =>
      (lastOfType(await runCli(['snapshots'], env), 'snapshots') as { snapshots: unknown[] }).snapshots.length;
    const before = await count();
    const wrong = await runCli(['backup', '--engine', 'pgdump', ...conn], { ...env, CAIRN_DB_PASSWORD: 'wrong' });
    assert.notEqual(wrong.code, 0);
    assert.match(wrong.stderr, /password authentication failed/);
    assert.match(wrong.stderr, /check the user and CAIRN_DB_PASSWORD/);
    assert.equal(await count(), before);
  });
});
