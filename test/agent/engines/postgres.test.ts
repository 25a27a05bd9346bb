import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { chmod, mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Repository } from '../../../agent/core/repository.ts';
import { FileStorage } from '../../../agent/storage/file.ts';
import { runCli, lastOfType } from '../../helpers/cli.ts';
import { tempDir, PASSPHRASE, restoreTo } from '../../helpers/repo.ts';
import { POSTGRES_BIN, missingPostgres, startPostgres, type PostgresServer } from '../../helpers/postgres.ts';
import { STOPPED_AFTER_FILES, registryStoppingAfterFiles } from '../../helpers/stopping-engine.ts';

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
  /** The first backup's snapshot (set by the first test). */
  let firstId = '';
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
    firstId = summary.snapshotId;

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

  it('a restore stopped before its end leaves a data directory PostgreSQL refuses to start: pg_control is placed last', async () => {
    assert.ok(firstId, 'the first test backed up the cluster');
    const registry = registryStoppingAfterFiles('postgres');
    const repo = await Repository.open(new FileStorage(join(work.path, 'repo')), PASSPHRASE);
    const dataDir = join(pgWork, 'stopped');
    await assert.rejects(restoreTo(repo, firstId, dataDir, { engines: registry }), new RegExp(STOPPED_AFTER_FILES));
    assert.ok(existsSync(join(dataDir, 'PG_VERSION')), 'the files were written');
    assert.ok(!existsSync(join(dataDir, 'global', 'pg_control')), 'pg_control is not in place');
    assert.ok(existsSync(join(dataDir, 'global', 'pg_control.cairn-restoring')), 'it waits under another name');

    // PostgreSQL refuses the directory (it would have started with whatever was written).
    await chmod(dataDir, 0o700);
    const asRoot = process.getuid?.() === 0;
    if (asRoot) assert.equal(spawnSync('chown', ['-R', 'postgres:', dataDir]).status, 0);
    const argv = [join(POSTGRES_BIN, 'postgres'), '-D', dataDir, '-c', 'listen_addresses=', '-k', dataDir];
    const started = spawnSync(asRoot ? 'runuser' : (argv[0] as string), asRoot ? ['-u', 'postgres', '--', ...argv] : argv.slice(1), {
      cwd: pgWork,
      encoding: 'utf8',
      // Only a guard: PostgreSQL exits at once here; a server that started would be stopped by it.
      timeout: 60_000,
    });
    assert.notEqual(started.status, 0, 'the server did not start');
    assert.match(started.stderr, /could not open file "[^"]*global\/pg_control"/);
    // Restoring into it again says what is there.
    const again = await runCli(['restore', firstId, '--target', dataDir], env);
    assert.equal(again.code, 15, again.stderr);
    assert.match(again.stderr, /holds a restore that stopped part-way \(global\/pg_control\.cairn-restoring was never moved into place\)/);
    // --if-empty (a replica's bootstrap) does not take it for a restored directory.
    const ifEmpty = await runCli(['restore', firstId, '--target', dataDir, '--if-empty'], env);
    assert.equal(ifEmpty.code, 15, ifEmpty.stderr);
    assert.match(ifEmpty.stderr, /holds a restore that stopped part-way/);
  });

  it('a restore with an --owner that does not exist fails before it writes anything', async () => {
    assert.ok(firstId, 'the first test backed up the cluster');
    const dataDir = join(pgWork, 'no-such-owner');
    const r = await runCli(['restore', firstId, '--target', dataDir, '--owner', 'cairn-no-such-user'], env);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /--owner cairn-no-such-user: there is no such user on this host; nothing was written/);
    assert.ok(!existsSync(join(dataDir, 'PG_VERSION')), 'nothing was written');
    // A numeric id is an owner too (chown cannot find the login group of `101:` by itself).
    const uid =
      process.getuid?.() === 0
        ? Number(spawnSync('id', ['-u', 'postgres'], { encoding: 'utf8' }).stdout.trim())
        : (process.getuid?.() ?? 0);
    const numericDir = join(pgWork, 'numeric-owner');
    const numeric = await runCli(['restore', firstId, '--target', numericDir, '--owner', String(uid)], env);
    assert.equal(numeric.code, 0, numeric.stderr);
    assert.equal((await stat(join(numericDir, 'global', 'pg_control'))).uid, uid);
  });
});
