import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { chmod, chown, mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import type { Engine } from '../../../agent/engines/engine.ts';
import { mysqldumpEngine } from '../../../agent/engines/mysqldump.ts';
import { createEngineRegistry, engineRegistry } from '../../../agent/engines/registry.ts';
import { lastOfType, runCli } from '../../helpers/cli.ts';
import { missingMariadb } from '../../helpers/mariadb.ts';
import { PASSPHRASE, tempDir } from '../../helpers/repo.ts';
import { checkNamed, drillSnapshot } from './drill-harness.ts';

/**
 * Crafted mysqldump snapshots against the drill, on a host that also runs a production MariaDB
 * installed the Debian way (mariadb-install-db --user=mysql: `mysql`@`localhost` logs in through
 * unix_socket with every privilege). A snapshot is authentic to the repository but its dumps are
 * whatever its maker wrote, file names included. Each trap is first shown to work outside the
 * drill; the drill must then neither run it, nor reach production, nor write outside its scratch
 * directory.
 */

const asRoot = process.getuid?.() === 0;
const hasMysqlUser = spawnSync('id', ['-u', 'mysql']).status === 0;
const hasGcc = spawnSync('sh', ['-c', 'command -v gcc']).status === 0;
const skip = missingMariadb() ?? (asRoot && hasMysqlUser ? undefined : 'needs root and the mysql user (the Debian mariadb-server)');

function mariadbd(): string {
  const found = ['/usr/sbin/mariadbd', '/usr/sbin/mysqld'].find((p) => spawnSync('test', ['-x', p]).status === 0);
  if (!found) throw new Error('no mariadbd');
  return found;
}

/** A production-like server: datadir and socket owned by mysql, accounts as Debian's postinst makes them. */
interface Production {
  socket: string;
  datadir: string;
  /** Runs SQL as root over the socket (stdout, tab-separated, no headers). */
  sql(statement: string): string;
  stop(): Promise<void>;
}

async function startProduction(): Promise<Production> {
  const base = await mkdtemp(join(tmpdir(), 'cairn-attack-prod-'));
  await chmod(base, 0o711);
  const datadir = join(base, 'data');
  const run = join(base, 'run');
  await mkdir(datadir, { mode: 0o700 });
  await mkdir(run, { mode: 0o755 });
  spawnSync('chown', ['-R', 'mysql:', datadir, run]);
  const install = spawnSync('mariadb-install-db', ['--no-defaults', `--datadir=${datadir}`, '--user=mysql', '--skip-test-db'], {
    encoding: 'utf8',
  });
  assert.equal(install.status, 0, install.stderr);
  const socket = join(run, 'mysqld.sock');
  const child: ChildProcess = spawn(
    mariadbd(),
    [
      '--no-defaults',
      `--datadir=${datadir}`,
      `--socket=${socket}`,
      `--pid-file=${join(run, 'p.pid')}`,
      '--skip-networking',
      '--user=mysql',
    ],
    { stdio: 'ignore' },
  );
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const sql = (statement: string): string => {
    const r = spawnSync(
      'mariadb',
      ['--no-defaults', '--protocol=SOCKET', `--socket=${socket}`, '--user=root', '-N', '-B', '-e', statement],
      {
        encoding: 'utf8',
      },
    );
    if (r.status !== 0) throw new Error(`production sql failed: ${r.stderr}`);
    return r.stdout;
  };
  for (let tries = 0; ; tries++) {
    try {
      sql('SELECT 1');
      break;
    } catch (error) {
      if (tries > 600) throw error;
      await new Promise<void>((resolve) => setTimeout(resolve, 50));
    }
  }
  return {
    socket,
    datadir,
    sql,
    async stop() {
      child.kill('SIGTERM');
      await exited;
      await rm(base, { recursive: true, force: true });
    },
  };
}

/** The real mysqldump engine, but its backup stores the given dumps (name to content) as they are. */
function craftingEngine(files: Record<string, string | Buffer>): Engine<never> {
  return {
    ...(mysqldumpEngine as unknown as Engine<never>),
    async check() {},
    async backup(_options, sink) {
      for (const [path, content] of Object.entries(files))
        await sink.addStream(path, Readable.from([Buffer.from(content)]), { mode: 0o600 });
      return {};
    },
  };
}

async function craftedSnapshot(repo: string, files: Record<string, string | Buffer>): Promise<string> {
  const env = { CAIRN_REPOSITORY: repo, CAIRN_PASSWORD: PASSPHRASE, CAIRN_DB_PASSWORD: 'x' };
  if (!(await stat(repo).catch(() => undefined))) assert.equal((await runCli(['init'], env)).code, 0);
  const engines = createEngineRegistry([
    ...[...engineRegistry.engines.values()].filter((e) => e.name !== 'mysqldump'),
    craftingEngine(files),
  ]);
  const backup = await runCli(['backup', '--engine', 'mysqldump', '--db-host', '127.0.0.1', '--db-user', 'x', '--db-name', 'shop'], env, {
    engines,
  });
  assert.equal(backup.code, 0, backup.stderr);
  return (lastOfType(backup, 'summary') as { snapshotId: string }).snapshotId;
}

/** A directory outside every drill's scratch that anyone may write: what a hostile program would write into. */
async function outsideDir(name: string): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), `cairn-outside-${name}-`));
  await chmod(dir, 0o777);
  return dir;
}

const TABLE = 'CREATE TABLE items (id INT PRIMARY KEY) ENGINE=InnoDB;\nINSERT INTO items VALUES (1),(2),(3);\n';
/** mariadb-dump's last line: a crafted dump carries it like a whole one. */
const END = '-- Dump completed on 2026-01-01  0:00:00\n';

describe('mysqldump drill of a crafted snapshot on a host running production MariaDB', { skip }, () => {
  let prod: Production;
  let work: Awaited<ReturnType<typeof tempDir>>;
  let outside: string;
  let repo: string;
  before(async () => {
    prod = await startProduction();
    prod.sql(
      "CREATE DATABASE bank; CREATE TABLE bank.accounts (id INT PRIMARY KEY, owner TEXT); INSERT INTO bank.accounts VALUES (1, 'alice')",
    );
    work = await tempDir('attack-mysqldump');
    await chmod(work.path, 0o711);
    repo = join(work.path, 'repo');
    outside = await outsideDir('mysqldump');
  });
  after(async () => {
    await prod?.stop();
    await work?.remove();
    if (outside) await rm(outside, { recursive: true, force: true });
  });

  it('a dump named like a client option (--skip-sandbox.sql) does not turn the sandbox off: its shell escape never runs', async () => {
    const marker = join(outside, 'shell-escape-ran');
    const dump = `CREATE DATABASE IF NOT EXISTS shop;\nUSE shop;\n${TABLE}\\! touch ${marker}\n${END}`;
    // Control: the option the file name spells turns the client's sandbox off, and the line runs.
    const control = spawnSync(
      'mariadb',
      ['--no-defaults', '--protocol=SOCKET', `--socket=${prod.socket}`, '--user=root', '--sandbox', '--skip-sandbox', 'bank'],
      { input: `\\! touch ${marker}\n`, encoding: 'utf8' },
    );
    assert.equal(control.status, 0, control.stderr);
    assert.ok(await stat(marker).catch(() => undefined), 'the trap runs its command when the client is not sandboxed');
    await rm(marker);

    const id = await craftedSnapshot(repo, { '--skip-sandbox.sql': dump });
    const checks = await drillSnapshot(repo, id);
    const load = checkNamed(checks, 'load dump');
    assert.equal(await stat(marker).catch(() => undefined), undefined, `the dump's shell command ran on the host: ${load.found}`);
    assert.equal(load.ok, false, `the shell escape is refused, not run: ${load.found}`);
    assert.match(load.found, /sandbox/);
  });

  it('a restore of that dump into the live server runs no shell command from it either (--sandbox, the name as --database=)', async () => {
    const marker = join(outside, 'restore-shell-escape-ran');
    const dump = `${TABLE}\\! touch ${marker}\n${END}`;
    const id = await craftedSnapshot(repo, { '--skip-sandbox.sql': dump });
    const restore = await runCli(['restore', id, '--db-socket', prod.socket, '--db-user', 'root'], {
      CAIRN_REPOSITORY: repo,
      CAIRN_PASSWORD: PASSPHRASE,
      CAIRN_DB_PASSWORD: '',
    });
    assert.equal(
      await stat(marker).catch(() => undefined),
      undefined,
      `the dump's shell command ran on the restoring host: ${restore.stderr}`,
    );
    assert.notEqual(restore.code, 0, 'the shell escape fails the restore');
    assert.match(restore.stderr, /sandbox/);
    // The table before the escape did load, into the database the file name gives (a name, not an option).
    assert.equal(prod.sql('SELECT COUNT(*) FROM `--skip-sandbox`.items').trim(), '3');
  });

  it(
    'a database named like a client option, made at load time, never reaches mariadb-check as an option (no library of the dump is loaded)',
    { skip: hasGcc ? undefined : 'needs gcc' },
    async () => {
      const marker = join(outside, 'library-ran');
      const src = join(outside, 'lib.c');
      const lib = join(outside, 'lib.so');
      await writeFile(
        src,
        `#include <stdio.h>\n#include <unistd.h>\n__attribute__((constructor)) static void run(void) { FILE *f = fopen("${marker}", "w"); if (f) { fprintf(f, "uid=%d\\n", (int)getuid()); fclose(f); } }\n`,
      );
      const cc = spawnSync('gcc', ['-shared', '-fPIC', '-o', lib, src], { encoding: 'utf8' });
      assert.equal(cc.status, 0, cc.stderr);
      const hex = (await readFile(lib)).toString('hex');
      await rm(lib);
      await rm(src);
      // The dump writes the library where the private server may write (secure_file_priv, a directory the
      // drill made), then names two databases after client options pointing at it.
      const dump = [
        TABLE,
        "SET @d = TRIM(TRAILING '/' FROM @@secure_file_priv);",
        `SET @s = CONCAT('SELECT UNHEX(''${hex}'') INTO DUMPFILE ''', @d, '/cairnpwn.so''');`,
        'PREPARE st FROM @s; EXECUTE st; DEALLOCATE PREPARE st;',
        "SET @s = CONCAT('CREATE DATABASE `--plugin-dir=', @d, '`');",
        'PREPARE st FROM @s; EXECUTE st; DEALLOCATE PREPARE st;',
        'CREATE DATABASE `--default-auth=cairnpwn`;',
        END,
      ].join('\n');
      // Control: a client given those two options loads the library (written here, as the drill's server would).
      const controlDir = await mkdtemp(join(tmpdir(), 'cairn-attack-plugin-'));
      await writeFile(join(controlDir, 'cairnpwn.so'), Buffer.from(hex, 'hex'));
      spawnSync('mariadb-check', [
        '--no-defaults',
        '--protocol=SOCKET',
        `--socket=${prod.socket}`,
        '--user=root',
        '--check',
        '--databases',
        'bank',
        `--plugin-dir=${controlDir}`,
        '--default-auth=cairnpwn',
      ]);
      await rm(controlDir, { recursive: true, force: true });
      assert.ok(await stat(marker).catch(() => undefined), 'the client loads a library named by those options');
      await rm(marker);

      const id = await craftedSnapshot(repo, { 'all-databases.sql': `CREATE DATABASE shop;\nUSE shop;\n${dump}` });
      const checks = await drillSnapshot(repo, id);
      const load = checkNamed(checks, 'load dump');
      assert.ok(load.ok, load.found);
      const check = checkNamed(checks, 'mariadb-check');
      const ran = await readFile(marker, 'utf8').catch(() => undefined);
      assert.equal(ran, undefined, `a library the dump wrote ran inside the drill's mariadb-check (${ran?.trim() ?? ''}): ${check.found}`);
      assert.ok(check.ok, check.found);
    },
  );

  it("a FEDERATED table of the dump cannot reach production's socket (unix_socket login as the server's OS user)", async () => {
    // Control: the production server lets the OS user mysql in through its socket, with every privilege.
    const control = spawnSync(
      'setpriv',
      [
        '--reuid=mysql',
        '--regid=mysql',
        '--init-groups',
        '--',
        'mariadb',
        '--no-defaults',
        '--protocol=SOCKET',
        `--socket=${prod.socket}`,
        '--user=mysql',
        '-N',
        '-B',
        '-e',
        'SELECT owner FROM bank.accounts',
      ],
      { encoding: 'utf8' },
    );
    assert.equal(control.status, 0, control.stderr);
    assert.equal(control.stdout.trim(), 'alice');

    const dump = [
      TABLE,
      "INSTALL SONAME 'ha_federatedx';",
      `CREATE SERVER prod FOREIGN DATA WRAPPER mysql OPTIONS (SOCKET '${prod.socket}', USER 'mysql', DATABASE 'bank');`,
      "CREATE TABLE stolen (id INT PRIMARY KEY, owner TEXT) ENGINE=FEDERATED CONNECTION='prod/accounts';",
      "UPDATE stolen SET owner = 'mallory';",
      END,
    ].join('\n');
    const id = await craftedSnapshot(repo, { 'shop.sql': dump });
    const checks = await drillSnapshot(repo, id);
    const load = checkNamed(checks, 'load dump');
    assert.equal(prod.sql('SELECT owner FROM bank.accounts').trim(), 'alice', `the drill wrote into production: ${load.found}`);
    assert.equal(load.ok, false, `the federated table was refused: ${load.found}`);
  });

  it("the dump cannot point the server's general log at a directory of the mysql user (production's datadir)", async () => {
    // What production's datadir is to the mysql user: a directory it owns and nobody else may enter.
    const mine = join(outside, 'mysql-owned');
    await mkdir(mine, { mode: 0o700 });
    const info = spawnSync('id', ['-u', 'mysql'], { encoding: 'utf8' });
    await chown(mine, Number(info.stdout.trim()), 0);
    const dump = [
      TABLE,
      `SET GLOBAL general_log_file = '${join(mine, 'general.log')}';`,
      'SET GLOBAL general_log = ON;',
      "SELECT 'written by the drill';",
      'SET GLOBAL general_log = OFF;',
      END,
    ].join('\n');
    const id = await craftedSnapshot(repo, { 'shop.sql': dump });
    const checks = await drillSnapshot(repo, id);
    const load = checkNamed(checks, 'load dump');
    assert.deepEqual(await readdir(mine), [], `the drill's server wrote into a directory of the mysql user: ${load.found}`);
    assert.deepEqual(await readdir(join(prod.datadir, 'bank')).then((names) => names.sort()), ['accounts.frm', 'accounts.ibd', 'db.opt']);
  });
});

describe('mysqldump drill of a snapshot whose dump is not whole', { skip: missingMariadb() }, () => {
  let work: Awaited<ReturnType<typeof tempDir>>;
  let repo: string;
  before(async () => {
    work = await tempDir('attack-mysqldump-cut');
    await chmod(work.path, 0o711);
    repo = join(work.path, 'repo');
  });
  after(async () => {
    await work?.remove();
  });

  it('a dump cut short at a statement boundary (no closing line) fails the drill as bad data; the whole one passes', async () => {
    const whole = await craftedSnapshot(repo, { 'shop.sql': `${TABLE}${END}` });
    const passed = await drillSnapshot(repo, whole);
    assert.ok(checkNamed(passed, 'load dump').ok, checkNamed(passed, 'load dump').found);
    assert.match(checkNamed(passed, 'row counts').found, /1 tables, 3 rows/);

    const cut = await craftedSnapshot(repo, { 'shop.sql': TABLE });
    const checks = await drillSnapshot(repo, cut);
    const load = checkNamed(checks, 'load dump');
    assert.equal(load.ok, false, `a dump without its last line passed: ${load.found}`);
    assert.match(load.found, /shop\.sql ends without mariadb-dump's closing "-- Dump completed" line/);
    assert.equal((load as { failure?: string }).failure, 'data');
  });

  it('an empty dump fails the drill as bad data', async () => {
    const id = await craftedSnapshot(repo, { 'shop.sql': '' });
    const checks = await drillSnapshot(repo, id);
    const load = checkNamed(checks, 'load dump');
    assert.equal(load.ok, false, `an empty dump passed: ${load.found}`);
    assert.equal((load as { failure?: string }).failure, 'data');
  });
});
