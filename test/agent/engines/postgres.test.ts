import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmod, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runCli, lastOfType } from '../../helpers/cli.ts';
import { tempDir, PASSPHRASE } from '../../helpers/repo.ts';
import { missingPostgres, startPostgres, type PostgresServer } from '../../helpers/postgres.ts';

const skip =
  missingPostgres() ??
  (spawnSync('sh', ['-c', 'command -v pg_basebackup && command -v pgbench']).status === 0
    ? undefined
    : 'needs pg_basebackup and pgbench: apt-get install postgresql postgresql-contrib');

function state(server: PostgresServer): string {
  return createHash('sha256')
    .update(server.sql('SELECT aid, abalance FROM pgbench_accounts ORDER BY aid', 'bench'))
    .update(server.sql('SELECT * FROM notes ORDER BY id', 'bench'))
    .digest('hex');
}

describe('postgres physical engine against a real PostgreSQL server', { skip }, () => {
  let server: PostgresServer;
  let work: Awaited<ReturnType<typeof tempDir>>;
  let pgWork: string;
  let env: Record<string, string>;
  before(async () => {
    server = await startPostgres();
    work = await tempDir('pgphysical');
    // Restores go under a root-owned directory: as root, a restore refuses a target under one another
    // user owns (postgres owns postgresWorkDir's); 0755 so the restored cluster's user can reach it.
    pgWork = await mkdtemp(join(tmpdir(), 'cairn-pgrestore-'));
    await chmod(pgWork, 0o755);
    env = { CAIRN_REPOSITORY: join(work.path, 'repo'), CAIRN_PASSWORD: PASSPHRASE, CAIRN_DB_PASSWORD: server.password };
    assert.equal((await runCli(['init'], env)).code, 0);
    server.sql('CREATE DATABASE bench');
    const init = spawnSync('pgbench', ['-i', '-s', '3', '-q', '-h', '127.0.0.1', '-p', String(server.port), '-U', 'postgres', 'bench'], {
      env: { ...process.env, PGPASSWORD: server.password },
      encoding: 'utf8',
    });
    assert.equal(init.status, 0, init.stderr);
    server.sql(
      "CREATE TABLE notes (id serial PRIMARY KEY, body text, tags jsonb); INSERT INTO notes (body, tags) SELECT md5(g::text), jsonb_build_object('g', g) FROM generate_series(1, 5000) g",
      'bench',
    );
  });
  after(async () => {
    await server?.stop();
    await work?.remove();
    await rm(pgWork, { recursive: true, force: true });
  });

  it('streams a base backup split into files, records LSNs, dedupes the next one, and restores a data directory that starts', async () => {
    const expected = state(server);
    const conn = ['--engine', 'postgres', '--db-host', '127.0.0.1', '--db-port', String(server.port), '--db-user', 'postgres'];
    const first = await runCli(['backup', ...conn], env);
    assert.equal(first.code, 0, first.stderr);
    const summary = lastOfType(first, 'summary') as {
      snapshotId: string;
      bytesAdded: number;
      filesNew: number;
      engineMetadata: { startLsn: string; stopLsn: string; timeline: number };
    };
    assert.match(summary.engineMetadata.startLsn, /^[0-9A-F]+\/[0-9A-F]+$/);
    assert.match(summary.engineMetadata.stopLsn, /^[0-9A-F]+\/[0-9A-F]+$/);
    assert.equal(summary.engineMetadata.timeline, 1);
    assert.ok(summary.filesNew > 500, `the tar was split into the cluster's files (${summary.filesNew})`);

    server.sql("UPDATE notes SET body = body || '!' WHERE id % 100 = 0", 'bench');
    const second = await runCli(['backup', ...conn], env);
    assert.equal(second.code, 0, second.stderr);
    const added = (lastOfType(second, 'summary') as { bytesAdded: number }).bytesAdded;
    const afterChange = state(server);
    const secondId = (lastOfType(second, 'summary') as { snapshotId: string }).snapshotId;
    assert.ok(added < summary.bytesAdded * 0.5, `unchanged relation files are not stored again (added ${added} of ${summary.bytesAdded})`);

    const dataDir = join(pgWork, 'restored');
    const restored = await runCli(
      ['restore', summary.snapshotId, '--target', dataDir, ...(process.getuid?.() === 0 ? ['--owner', 'postgres'] : [])],
      env,
    );
    assert.equal(restored.code, 0, restored.stderr);
    const copy = await startPostgres({ dataDir });
    try {
      assert.equal(state(copy), expected);
    } finally {
      await copy.stop();
    }
    const secondDir = join(pgWork, 'restored-second');
    const restoredSecond = await runCli(
      ['restore', secondId, '--target', secondDir, ...(process.getuid?.() === 0 ? ['--owner', 'postgres'] : [])],
      env,
    );
    assert.equal(restoredSecond.code, 0, restoredSecond.stderr);
    const copy2 = await startPostgres({ dataDir: secondDir });
    try {
      assert.equal(state(copy2), afterChange);
    } finally {
      await copy2.stop();
    }
  });
});
