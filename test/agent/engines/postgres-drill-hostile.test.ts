import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { appendFile, chmod, lstat, mkdir, mkdtemp, readdir, readFile, readlink, rename, rm, stat, symlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Engine } from '../../../agent/engines/engine.ts';
import { postgresEngine } from '../../../agent/engines/postgres.ts';
import { createEngineRegistry, engineRegistry } from '../../../agent/engines/registry.ts';
import { lastOfType, runCli } from '../../helpers/cli.ts';
import { missingPostgres, postgresWorkDir, startPostgres, type PostgresServer } from '../../helpers/postgres.ts';
import { PASSPHRASE, tempDir } from '../../helpers/repo.ts';
import { checkNamed, drillSnapshot } from './drill-harness.ts';

/**
 * Hostile snapshots against the PostgreSQL drills (issue 18): a snapshot is authentic to the
 * repository but its content is whatever its maker chose. Each case is made real (a live
 * cluster holding the hostile objects, backed up through cairn; a crafted data directory),
 * each trap is shown to work outside the drill first (it runs its program, it breaks a
 * login), and the drill must then neither run it nor write outside its scratch directory.
 * The programs read their input to the end (`cat >/dev/null`): one that exits first makes
 * PostgreSQL's write fail with a broken pipe, now and then, and the proof of the trap with it.
 */

const BIN = '/usr/lib/postgresql/15/bin';
const skip = missingPostgres();
const asRoot = process.getuid?.() === 0;

/** A directory outside every drill's scratch that anyone may write: what a hostile program would write into. */
async function outsideDir(name: string): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), `cairn-outside-${name}-`));
  await chmod(dir, 0o777);
  return dir;
}

async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}

/** Every entry under `dir` (links not followed), with a hash of each file's bytes: what "untouched" compares. */
async function state(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const name of (await readdir(dir, { recursive: true })).sort()) {
    const path = join(dir, name);
    const info = await stat(path);
    out.push(
      info.isFile()
        ? `${name} ${createHash('sha256')
            .update(await readFile(path))
            .digest('hex')}`
        : `${name}/`,
    );
  }
  return out;
}

describe('pgdump drill of a dump that runs programs when loaded', { skip }, () => {
  let live: PostgresServer;
  let work: Awaited<ReturnType<typeof tempDir>>;
  let outside: string;
  let env: Record<string, string>;
  before(async () => {
    live = await startPostgres();
    work = await tempDir('pg-hostile-dump');
    outside = await outsideDir('dump');
    env = { CAIRN_REPOSITORY: join(work.path, 'repo'), CAIRN_PASSWORD: PASSPHRASE, CAIRN_DB_PASSWORD: live.password };
    assert.equal((await runCli(['init'], env)).code, 0);
  });
  after(async () => {
    await live?.stop();
    await work?.remove();
    if (outside) await rm(outside, { recursive: true, force: true });
  });

  it('loads it as a role that is no superuser: COPY TO PROGRAM and a C function are refused, the drill fails naming them, nothing runs', async () => {
    const marker = join(outside, 'copy-to-program-ran');
    live.sql('CREATE DATABASE shop');
    // The trap runs in the drill's cluster (cluster_name cairn-drill), or when armed (the control below).
    live.sql(
      `CREATE TABLE items (id int PRIMARY KEY); INSERT INTO items SELECT generate_series(1, 10);
       CREATE FUNCTION evil() RETURNS int LANGUAGE plpgsql AS $f$
       BEGIN
         IF current_setting('cluster_name') = 'cairn-drill' OR current_setting('cairn.armed', true) = 'yes' THEN
           COPY (SELECT 1) TO PROGRAM 'touch ${marker}; cat >/dev/null';
         END IF;
         RETURN 1;
       END $f$;
       CREATE MATERIALIZED VIEW mv AS SELECT evil() AS x;`,
      'shop',
    );
    // A function in C, the untrusted language: a crafted dump would name a library of its choosing (the live
    // server checks the file exists, so here it is one that does; the restoring role may not create it at all).
    live.sql("CREATE FUNCTION evil_c() RETURNS int AS '$libdir/plpgsql', 'plpgsql_call_handler' LANGUAGE C", 'shop');
    // Control: as a superuser, refreshing the view (what pg_restore does after loading the data) runs the program.
    live.sql("SET cairn.armed = 'yes'; REFRESH MATERIALIZED VIEW mv", 'shop');
    assert.ok(await exists(marker), 'the trap runs its program when a superuser loads it');
    await rm(marker);

    const backup = await runCli(
      [
        'backup',
        '--engine',
        'pgdump',
        '--db-host',
        '127.0.0.1',
        '--db-port',
        String(live.port),
        '--db-user',
        'postgres',
        '--db-name',
        'shop',
      ],
      env,
    );
    assert.equal(backup.code, 0, backup.stderr);
    const id = (lastOfType(backup, 'summary') as { snapshotId: string }).snapshotId;

    const checks = await drillSnapshot(env.CAIRN_REPOSITORY as string, id);
    const cluster = checkNamed(checks, 'private cluster');
    assert.ok(cluster.ok, cluster.found);
    assert.match(cluster.found, /loaded as cairn_drill_restore, no superuser/);
    if (asRoot) assert.match(cluster.found, /as cairn-drill\b/, 'the server runs as the drill user, not postgres');
    const restore = checkNamed(checks, 'pg_restore');
    assert.equal(restore.ok, false, restore.found);
    assert.match(restore.found, /shop\.dump: pg_restore, as the unprivileged cairn_drill_restore, failed/);
    assert.match(restore.found, /permission denied for language c \(in: CREATE FUNCTION public\.evil_c\(\)/);
    assert.match(restore.found, /COPY to or from an external program \(in: REFRESH MATERIALIZED VIEW public\.mv/);
    assert.equal(await exists(marker), false, 'the program in the dump did not run');
    assert.deepEqual(await readdir(outside), [], 'nothing was written outside the scratch directory');
  });
});

describe('postgres drill of a cluster whose catalogs and configuration are traps', { skip }, () => {
  let live: PostgresServer;
  let work: Awaited<ReturnType<typeof tempDir>>;
  let outside: string;
  let env: Record<string, string>;
  before(async () => {
    live = await startPostgres();
    work = await tempDir('pg-hostile-physical');
    outside = await outsideDir('physical');
    env = { CAIRN_REPOSITORY: join(work.path, 'repo'), CAIRN_PASSWORD: PASSPHRASE, CAIRN_DB_PASSWORD: live.password };
    assert.equal((await runCli(['init'], env)).code, 0);
  });
  after(async () => {
    await live?.stop();
    await work?.remove();
    if (outside) await rm(outside, { recursive: true, force: true });
  });

  it('ignores per-role preload libraries, the restored configuration and event triggers: the drill passes and writes nothing outside', async () => {
    // Per-database role settings a login applies over the server's command line: every login to trap fails.
    live.sql('CREATE DATABASE trap');
    live.sql("ALTER ROLE postgres IN DATABASE trap SET session_preload_libraries = 'nonexistent_lib'");
    live.sql("ALTER DATABASE trap SET local_preload_libraries = 'nonexistent_local_lib'");
    assert.throws(() => live.sql('SELECT 1', 'trap'), /nonexistent_lib/, 'a login to trap fails');
    // An event trigger whose function runs a program at the next DDL (pg_amcheck's CREATE EXTENSION amcheck).
    const fired = join(outside, 'event-trigger-ran');
    live.sql(
      `CREATE FUNCTION trap_fn() RETURNS event_trigger LANGUAGE plpgsql AS $f$
       BEGIN
         IF current_setting('cluster_name') = 'cairn-drill' OR current_setting('cairn.armed', true) = 'yes' THEN
           COPY (SELECT 1) TO PROGRAM 'touch ${fired}; cat >/dev/null';
         END IF;
       END $f$;
       CREATE EVENT TRIGGER trap ON ddl_command_start EXECUTE FUNCTION trap_fn();`,
    );
    live.sql("SET cairn.armed = 'yes'; CREATE TABLE control (x int)");
    assert.ok(await exists(fired), 'the event trigger runs its program at DDL');
    await rm(fired);
    live.sql('DROP TABLE control');
    // A table of the superuser's whose index expression runs a program: pg_amcheck --heapallindexed evaluates
    // it as the table's owner, so the drill's demotion of every restored superuser is what stops it.
    const indexed = join(outside, 'index-expression-ran');
    live.sql(
      `CREATE FUNCTION run_program() RETURNS void LANGUAGE plpgsql AS $f$
       BEGIN
         IF current_setting('cluster_name') = 'cairn-drill' OR current_setting('cairn.armed', true) = 'yes' THEN
           COPY (SELECT 1) TO PROGRAM 'touch ${indexed}; cat >/dev/null';
         END IF;
       END $f$;
       -- An immutable function may not COPY itself, but may call one that does.
       CREATE FUNCTION idx_fn(x int) RETURNS int LANGUAGE plpgsql IMMUTABLE AS $f$
       BEGIN
         PERFORM public.run_program();
         RETURN x;
       END $f$;
       CREATE TABLE guarded (id int); CREATE INDEX guarded_idx ON guarded (idx_fn(id));`,
    );
    live.sql("SET cairn.armed = 'yes'; INSERT INTO guarded VALUES (1)");
    assert.ok(await exists(indexed), 'the index expression runs its program when evaluated as its owner');
    await rm(indexed);
    // Configuration the restored cluster would start with: a pid file and a library outside, …
    live.sql(`ALTER SYSTEM SET external_pid_file = '${join(outside, 'postmaster.pid')}'`);
    live.sql("ALTER SYSTEM SET shared_preload_libraries = 'nonexistent_shared_lib'");
    // … and, in postgresql.conf (the live server does not reload it), another data directory, hba file and an include.
    await appendFile(
      join(live.dataDir, 'postgresql.conf'),
      [
        `data_directory = '${join(outside, 'data')}'`,
        `hba_file = '${join(outside, 'pg_hba.conf')}'`,
        `ident_file = '${join(outside, 'pg_ident.conf')}'`,
        `include '${join(outside, 'production.conf')}'`,
        `unix_socket_directories = '${outside}'`,
        '',
      ].join('\n'),
    );

    const backup = await runCli(
      ['backup', '--engine', 'postgres', '--db-host', '127.0.0.1', '--db-port', String(live.port), '--db-user', 'postgres'],
      env,
    );
    assert.equal(backup.code, 0, backup.stderr);
    const id = (lastOfType(backup, 'summary') as { snapshotId: string }).snapshotId;

    const checks = await drillSnapshot(env.CAIRN_REPOSITORY as string, id);
    // This cluster has no data checksums: pg_checksums is skipped as expected; every other check runs and passes.
    for (const check of checks) assert.ok(check.ok && (check.ran || check.name === 'pg_checksums'), `${check.name}: ${check.found}`);
    const start = checkNamed(checks, 'start');
    assert.match(start.found, /its own configuration not read/);
    assert.match(start.found, /no restored role a superuser\)/);
    if (asRoot) assert.match(start.found, /as cairn-drill\b/);
    // pg_amcheck --all logged in to trap (its login would have failed with the preload) and made DDL in every database.
    assert.ok(checkNamed(checks, 'pg_amcheck').ran);
    assert.deepEqual(await readdir(outside), [], 'no pid file, no socket, no program ran: nothing was written outside');

    // --heapallindexed evaluates guarded_idx's expression as its owner, postgres, no superuser in the drill: refused.
    const thorough = await drillSnapshot(env.CAIRN_REPOSITORY as string, id, { thorough: true });
    const amcheck = checkNamed(thorough, 'pg_amcheck');
    assert.equal(amcheck.ok, false, amcheck.found);
    assert.match(amcheck.found, /COPY to or from an external program/);
    assert.deepEqual(await readdir(outside), [], 'the index expression ran no program');
  });
});

/** An engine named postgres whose "backup" stores a directory as it is, links included: a crafted snapshot. */
function craftingEngine(dir: string): Engine<never> {
  return {
    ...(postgresEngine as unknown as Engine<never>),
    async check() {},
    async backup(_options, sink) {
      // By hand: readdir's own recursion follows links to directories.
      const walk = async (rel: string): Promise<void> => {
        for (const name of (await readdir(join(dir, rel))).sort()) {
          const path = join(dir, rel, name);
          const info = await lstat(path);
          const meta = { mode: info.mode & 0o7777, mtimeMs: info.mtimeMs };
          const at = rel ? `${rel}/${name}` : name;
          if (info.isSymbolicLink()) await sink.addSymlink(at, await readlink(path), meta);
          else if (info.isDirectory()) {
            await sink.addDirectory(at, meta);
            await walk(at);
          } else await sink.addStream(at, createReadStream(path), meta);
        }
      };
      await walk('');
      return {};
    },
  };
}

describe('postgres drill of a crafted data directory whose links lead to production', { skip }, () => {
  let pgWork: string;
  let work: Awaited<ReturnType<typeof tempDir>>;
  let outside: string;
  before(async () => {
    pgWork = await postgresWorkDir();
    work = await tempDir('pg-hostile-links');
    outside = await outsideDir('links');
  });
  after(async () => {
    await work?.remove();
    if (pgWork) await rm(pgWork, { recursive: true, force: true });
    if (outside) await rm(outside, { recursive: true, force: true });
  });

  it('refuses a pg_wal and a pg_tblspc link leading outside the scratch directory, naming them; what they lead to is untouched', async () => {
    // A real, cleanly stopped cluster (a server started on it would at least write a shutdown checkpoint into pg_wal)…
    const dataDir = join(pgWork, 'data');
    const initdb = [join(BIN, 'initdb'), '-D', dataDir, '-U', 'postgres', '--auth=trust', '-E', 'UTF8', '--locale=C.UTF-8'];
    const argv = asRoot ? ['runuser', '-u', 'postgres', '--', ...initdb] : initdb;
    const init = spawnSync(argv[0] as string, argv.slice(1), { encoding: 'utf8', cwd: pgWork });
    assert.equal(init.status, 0, init.stderr);
    // … whose WAL is "production's" (moved outside, pg_wal a link to it), with a tablespace link to another outside directory.
    const productionWal = join(outside, 'pg_wal');
    await rename(join(dataDir, 'pg_wal'), productionWal);
    await symlink(productionWal, join(dataDir, 'pg_wal'));
    const productionTablespace = join(outside, 'tablespace');
    await mkdir(join(productionTablespace, 'PG_15_202209061'), { recursive: true });
    await symlink(productionTablespace, join(dataDir, 'pg_tblspc', '16999'));
    await chmod(outside, 0o777);
    const before = await state(outside);
    assert.ok(
      before.some((l) => l.startsWith('pg_wal/0000000')),
      'the outside WAL holds segments',
    );

    const env = { CAIRN_REPOSITORY: join(work.path, 'repo'), CAIRN_PASSWORD: PASSPHRASE };
    assert.equal((await runCli(['init'], env)).code, 0);
    const engines = createEngineRegistry([
      ...[...engineRegistry.engines.values()].filter((e) => e.name !== 'postgres'),
      craftingEngine(dataDir),
    ]);
    const backup = await runCli(['backup', '--engine', 'postgres', '--db-host', '127.0.0.1', '--db-user', 'postgres'], env, { engines });
    assert.equal(backup.code, 0, backup.stderr);
    const id = (lastOfType(backup, 'summary') as { snapshotId: string }).snapshotId;

    // The drill itself uses the real postgres engine.
    const checks = await drillSnapshot(env.CAIRN_REPOSITORY, id);
    const restore = checkNamed(checks, 'restore');
    assert.equal(restore.ok, false, restore.found);
    assert.match(restore.found, /2 symbolic links leading outside the drill's scratch directory/);
    assert.ok(restore.found.includes(`pg_wal -> ${productionWal}`), restore.found);
    assert.ok(restore.found.includes(`pg_tblspc/16999 -> ${productionTablespace}`), restore.found);
    const started = checkNamed(checks, 'start');
    assert.equal(started.ran, false, 'no server was started on it');
    assert.deepEqual(await state(outside), before, 'the directories the links lead to are untouched');
    // A refusal, not a finding (a real cluster with a tablespace holds such a link): nothing is marked damaged.
    assert.deepEqual(await readdir(join(env.CAIRN_REPOSITORY, 'damage')).catch(() => []), [], 'no damage marker');
  });
});
