import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmod, mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { runCli, lastOfType } from '../../helpers/cli.ts';
import { tempDir, PASSPHRASE } from '../../helpers/repo.ts';
import { missingMariadb, startMariadb, type MariadbServer } from '../../helpers/mariadb.ts';
import { missingPostgres, startPostgres, type PostgresServer } from '../../helpers/postgres.ts';
import { missingEtcd, startEtcd, type EtcdServer } from '../../helpers/etcd.ts';

/**
 * Issue 16, item 7: the secrets Cairn holds in its environment never reach a
 * child process. Real backups through the CLI, with hooks and wrapper tools
 * that record the environment they were given.
 */
const TASK_TOKEN = 'task-token-4b1d9e';
const NEW_PASSWORD = 'new-passphrase-77c2';
const AWS_SECRET = 'aws-secret-0f3a';

/** The secret values a child's environment must not contain. */
function assertNoSecret(text: string, secrets: string[], where: string): void {
  for (const secret of secrets) assert.ok(!text.includes(secret), `${where} sees the secret ${JSON.stringify(secret)}`);
}

/** The files in `dir`, name to contents. */
async function records(dir: string): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  for (const name of await readdir(dir)) out.set(name, await readFile(join(dir, name), 'utf8'));
  return out;
}

/** Wrapper scripts named after the real tools, first on PATH: each writes its argv and env to `log`, then execs the tool. */
async function wrapTools(bin: string, log: string, tools: string[]): Promise<void> {
  await mkdir(bin, { recursive: true });
  await mkdir(log, { recursive: true });
  for (const tool of tools) {
    const real = spawnSync('sh', ['-c', `command -v ${tool}`], { encoding: 'utf8' }).stdout.trim();
    assert.ok(real, `${tool} is installed`);
    const script = `#!/bin/sh\n{ echo "argv: $*"; env; } > "${log}/${tool}.$$"\nexec ${real} "$@"\n`;
    await writeFile(join(bin, tool), script);
    await chmod(join(bin, tool), 0o755);
  }
}

describe('hooks, stop/start commands and storage hooks get no Cairn secret', () => {
  let work: Awaited<ReturnType<typeof tempDir>>;
  let env: Record<string, string>;
  let envDir: string;
  before(async () => {
    work = await tempDir('child-secrets');
    envDir = join(work.path, 'envs');
    await mkdir(envDir);
    await mkdir(join(work.path, 'data'));
    await writeFile(join(work.path, 'data', 'table.db'), 'rows');
    // A storage hook that records its environment on every call, then passes the bytes through.
    const hook = join(work.path, 'storage-hook.sh');
    await writeFile(hook, `#!/bin/sh\nenv > "${envDir}/storage-$CAIRN_HOOK_OPERATION.$$"\nexec cat\n`);
    await chmod(hook, 0o755);
    env = {
      CAIRN_REPOSITORY: join(work.path, 'repo'),
      CAIRN_PASSWORD: PASSPHRASE,
      CAIRN_NEW_PASSWORD: NEW_PASSWORD,
      CAIRN_DB_PASSWORD: 'db-password-9e21',
      CAIRN_TASK_TOKEN: TASK_TOKEN,
      PGPASSWORD: 'pg-password-31aa',
      MYSQL_PWD: 'mysql-password-5d0c',
      AWS_SECRET_ACCESS_KEY: AWS_SECRET,
      CAIRN_STORAGE_HOOK: hook,
    };
    const init = await runCli(['init'], env);
    assert.equal(init.code, 0, init.stderr);
  });
  after(async () => {
    await work.remove();
  });

  it('a real backup runs every hook without CAIRN_PASSWORD, CAIRN_DB_PASSWORD, CAIRN_TASK_TOKEN or a database password', async () => {
    const record = (name: string): string => `env > ${envDir}/${name}`;
    const r = await runCli(
      [
        'backup',
        join(work.path, 'data'),
        '--pre-hook',
        record('pre'),
        '--post-hook',
        record('post'),
        '--stop-cmd',
        record('stop'),
        '--start-cmd',
        record('start'),
      ],
      env,
    );
    assert.equal(r.code, 0, r.stderr);
    const seen = await records(envDir);
    for (const name of ['pre', 'post', 'stop', 'start']) assert.ok(seen.has(name), `the ${name} hook ran`);
    const storage = [...seen.keys()].filter((n) => n.startsWith('storage-'));
    assert.ok(
      storage.some((n) => n.startsWith('storage-write')),
      'the storage hook ran on the way in',
    );
    const secrets = [PASSPHRASE, NEW_PASSWORD, 'db-password-9e21', TASK_TOKEN, 'pg-password-31aa', 'mysql-password-5d0c'];
    for (const [name, text] of seen) {
      assertNoSecret(text, secrets, name);
      assert.doesNotMatch(text, /^(CAIRN_PASSWORD|CAIRN_NEW_PASSWORD|CAIRN_DB_PASSWORD|CAIRN_TASK_TOKEN|PGPASSWORD|MYSQL_PWD)=/m, name);
      // The documented choice: an operator's command keeps the cloud credentials (a storage hook may encrypt with KMS).
      assert.match(text, new RegExp(`^AWS_SECRET_ACCESS_KEY=${AWS_SECRET}$`, 'm'), name);
      assert.match(text, /^PATH=/m, name);
    }
    assert.match(seen.get('post') ?? '', /^CAIRN_RESULT=success$/m);
    assert.match(seen.get('pre') ?? '', /^CAIRN_OPERATION=backup$/m);
    assert.match(seen.get(storage[0] ?? '') ?? '', /^CAIRN_OBJECT=/m);

    // The backup is real: it restores through the same storage hook (which still sees no secret on the way out).
    const target = join(work.path, 'restored');
    const restored = await runCli(['restore', 'latest', '--target', target], env);
    assert.equal(restored.code, 0, restored.stderr);
    assert.equal(await readFile(join(target, 'table.db'), 'utf8'), 'rows');
    const reads = [...(await records(envDir))].filter(([n]) => n.startsWith('storage-read'));
    assert.ok(reads.length > 0, 'the storage hook ran on the way out');
    for (const [name, text] of reads) assertNoSecret(text, secrets, name);
  });
});

describe('the mysqldump engine: mariadb-dump logs in through the option file only', { skip: missingMariadb() }, () => {
  let server: MariadbServer;
  let work: Awaited<ReturnType<typeof tempDir>>;
  before(async () => {
    server = await startMariadb();
    work = await tempDir('child-secrets-mysql');
    server.sql('CREATE DATABASE shop; CREATE TABLE shop.t (id INT PRIMARY KEY, v TEXT); INSERT INTO shop.t VALUES (1, "one"), (2, "two");');
  });
  after(async () => {
    await server?.stop();
    await work?.remove();
  });

  it('a real dump succeeds while the tools see neither the Cairn secrets nor the database password', async () => {
    const bin = join(work.path, 'bin');
    const log = join(work.path, 'log');
    await wrapTools(bin, log, ['mariadb-dump', 'mariadb']);
    const env = {
      PATH: `${bin}:${process.env.PATH ?? ''}`,
      CAIRN_REPOSITORY: join(work.path, 'repo'),
      CAIRN_PASSWORD: PASSPHRASE,
      CAIRN_DB_PASSWORD: server.password,
      CAIRN_TASK_TOKEN: TASK_TOKEN,
      MYSQL_PWD: server.password,
      AWS_SECRET_ACCESS_KEY: AWS_SECRET,
    };
    assert.equal((await runCli(['init'], env)).code, 0);
    const conn = ['--db-host', '127.0.0.1', '--db-port', String(server.port), '--db-user', server.user, '--db-name', 'shop'];
    const r = await runCli(['backup', '--engine', 'mysqldump', ...conn], env);
    assert.equal(r.code, 0, r.stderr);
    assert.ok((lastOfType(r, 'summary') as { bytesAdded: number }).bytesAdded > 0);
    const seen = await records(log);
    const dumps = [...seen].filter(([name]) => name.startsWith('mariadb-dump.'));
    assert.ok(dumps.length > 0, 'mariadb-dump ran through the wrapper');
    for (const [name, text] of seen) {
      assertNoSecret(text, [PASSPHRASE, server.password, TASK_TOKEN, AWS_SECRET], name);
      assert.match(text, /^argv: .*--defaults-extra-file=/, `${name} got the private option file`);
    }
  });
});

describe('the pgdump engine: the PostgreSQL tools log in through PGPASSFILE only', { skip: missingPostgres() }, () => {
  let server: PostgresServer;
  let work: Awaited<ReturnType<typeof tempDir>>;
  before(async () => {
    server = await startPostgres();
    work = await tempDir('child-secrets-pg');
    server.sql('CREATE DATABASE shop');
    server.sql("CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t VALUES (1, 'one'), (2, 'two');", 'shop');
  });
  after(async () => {
    await server?.stop();
    await work?.remove();
  });

  it('a real dump succeeds while pg_dump, pg_dumpall and psql see neither the Cairn secrets nor PGPASSWORD', async () => {
    const bin = join(work.path, 'bin');
    const log = join(work.path, 'log');
    await wrapTools(bin, log, ['pg_dump', 'pg_dumpall', 'psql']);
    const env = {
      PATH: `${bin}:${process.env.PATH ?? ''}`,
      CAIRN_REPOSITORY: join(work.path, 'repo'),
      CAIRN_PASSWORD: PASSPHRASE,
      CAIRN_DB_PASSWORD: server.password,
      CAIRN_TASK_TOKEN: TASK_TOKEN,
      PGPASSWORD: server.password,
      AWS_SECRET_ACCESS_KEY: AWS_SECRET,
    };
    assert.equal((await runCli(['init'], env)).code, 0);
    const conn = ['--db-host', '127.0.0.1', '--db-port', String(server.port), '--db-user', server.user, '--db-name', 'shop'];
    const r = await runCli(['backup', '--engine', 'pgdump', ...conn], env);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual((lastOfType(r, 'summary') as { engineMetadata: { databases: string[] } }).engineMetadata.databases, ['shop']);
    const seen = await records(log);
    assert.ok(
      [...seen.keys()].some((name) => name.startsWith('pg_dump.')),
      'pg_dump ran through the wrapper',
    );
    for (const [name, text] of seen) {
      assertNoSecret(text, [PASSPHRASE, server.password, TASK_TOKEN, AWS_SECRET], name);
      assert.match(text, /^PGPASSFILE=/m, `${name} got the private password file`);
    }
  });
});

describe('the etcd engine: etcdctl gets its own login, granted on purpose, and nothing else secret', { skip: missingEtcd() }, () => {
  let server: EtcdServer;
  let work: Awaited<ReturnType<typeof tempDir>>;
  before(async () => {
    server = await startEtcd();
    work = await tempDir('child-secrets-etcd');
    server.ctl('user', 'add', 'root:rootpw-6e0b');
    server.ctl('role', 'add', 'root');
    server.ctl('user', 'grant-role', 'root', 'root');
    server.ctl('--user', 'root:rootpw-6e0b', 'put', '/k', 'v');
    server.ctl('auth', 'enable');
  });
  after(async () => {
    await server?.stop();
    await work?.remove();
  });

  it('a snapshot through etcdctl with auth enabled succeeds; its environment holds ETCDCTL_USER but no Cairn secret', async () => {
    const bin = join(work.path, 'bin');
    const log = join(work.path, 'log');
    await wrapTools(bin, log, ['etcdctl']);
    const env = {
      PATH: `${bin}:${process.env.PATH ?? ''}`,
      CAIRN_REPOSITORY: join(work.path, 'repo'),
      CAIRN_PASSWORD: PASSPHRASE,
      CAIRN_DB_PASSWORD: 'rootpw-6e0b',
      CAIRN_TASK_TOKEN: TASK_TOKEN,
      AWS_SECRET_ACCESS_KEY: AWS_SECRET,
    };
    assert.equal((await runCli(['init'], env)).code, 0);
    const r = await runCli(
      ['backup', '--engine', 'etcd', '--db-host', '127.0.0.1', '--db-port', String(server.clientPort), '--db-user', 'root'],
      env,
    );
    assert.equal(r.code, 0, r.stderr);
    const seen = await records(log);
    const online = [...seen].filter(([, text]) => /^ETCDCTL_ENDPOINTS=/m.test(text));
    assert.ok(online.length > 0, 'etcdctl ran against the member through the wrapper');
    for (const [name, text] of seen) {
      assertNoSecret(text, [PASSPHRASE, TASK_TOKEN, AWS_SECRET], name);
      assert.doesNotMatch(text, /^(CAIRN_DB_PASSWORD|ETCDCTL_PASSWORD)=/m, name);
      assert.doesNotMatch(text, /^argv: .*rootpw/, `${name}: the password stays off argv`);
    }
    for (const [name, text] of online) assert.match(text, /^ETCDCTL_USER=root:rootpw-6e0b$/m, `${name} got its login`);
  });
});
