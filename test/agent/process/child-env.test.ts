import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readdir, readFile } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { childEnvironment, isWithheld } from '../../../agent/core/child-env.ts';
import { run, runHook } from '../../../agent/process/run.ts';

const AGENT = fileURLToPath(new URL('../../../agent/', import.meta.url));

const PARENT: NodeJS.ProcessEnv = {
  PATH: '/usr/bin:/bin',
  HOME: '/root',
  CAIRN_REPOSITORY: '/srv/repo',
  CAIRN_PASSWORD: 'repo-passphrase',
  CAIRN_PASSWORD_FILE: '/etc/cairn/pass',
  CAIRN_NEW_PASSWORD: 'new-passphrase',
  CAIRN_RECOVERY_PASSWORD: 'recovery-passphrase',
  CAIRN_TO_PASSWORD: 'target-passphrase',
  CAIRN_DB_PASSWORD: 'db-password',
  CAIRN_TASK_TOKEN: 'task-token',
  CAIRN_SOME_API_KEY: 'future-key',
  CAIRN_SPOOL_DIR: '/var/spool/cairn',
  PGPASSWORD: 'pg-password',
  MYSQL_PWD: 'mysql-password',
  ETCDCTL_PASSWORD: 'etcd-password',
  ETCDCTL_USER: 'root:etcd-inline-password',
  ETCDCTL_CACERT: '/etc/etcd/ca.pem',
  PGPASSFILE: '/home/op/.pgpass',
  AWS_ACCESS_KEY_ID: 'AKIAEXAMPLE',
  AWS_SECRET_ACCESS_KEY: 'aws-secret',
  AWS_SESSION_TOKEN: 'aws-session',
  AWS_REGION: 'eu-west-1',
  AWS_PROFILE: 'backup',
};

const SECRET_NAMES = [
  'CAIRN_PASSWORD',
  'CAIRN_PASSWORD_FILE',
  'CAIRN_NEW_PASSWORD',
  'CAIRN_RECOVERY_PASSWORD',
  'CAIRN_TO_PASSWORD',
  'CAIRN_DB_PASSWORD',
  'CAIRN_TASK_TOKEN',
  'CAIRN_SOME_API_KEY',
  'PGPASSWORD',
  'MYSQL_PWD',
  'ETCDCTL_PASSWORD',
  'ETCDCTL_USER',
];
const CLOUD = ['AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY', 'AWS_SESSION_TOKEN'];
const KEPT = ['PATH', 'HOME', 'CAIRN_REPOSITORY', 'CAIRN_SPOOL_DIR', 'ETCDCTL_CACERT', 'PGPASSFILE', 'AWS_REGION', 'AWS_PROFILE'];

describe('the child environment (deny-list)', () => {
  it('a database tool gets no Cairn secret, database password or cloud credential, and keeps the rest', () => {
    const env = childEnvironment(PARENT, 'tool');
    for (const name of [...SECRET_NAMES, ...CLOUD]) assert.equal(env[name], undefined, name);
    for (const name of KEPT) assert.equal(env[name], PARENT[name], name);
  });

  it("an operator's hook gets no Cairn secret or database password but keeps the cloud credentials", () => {
    const env = childEnvironment(PARENT, 'hook');
    for (const name of SECRET_NAMES) assert.equal(env[name], undefined, name);
    for (const name of [...CLOUD, ...KEPT]) assert.equal(env[name], PARENT[name], name);
  });

  it('Cairn itself (the WAL daemon) keeps only the repository passphrase, or where it lies, among the secrets', () => {
    const env = childEnvironment({ ...PARENT, CAIRN_PASSWORD_COMMAND: 'pass show cairn' }, 'cairn');
    assert.equal(env.CAIRN_PASSWORD, 'repo-passphrase');
    // It opens the repository as the client would: a passphrase given by file or command reaches it too.
    assert.equal(env.CAIRN_PASSWORD_FILE, '/etc/cairn/pass');
    assert.equal(env.CAIRN_PASSWORD_COMMAND, 'pass show cairn');
    const kept = new Set(['CAIRN_PASSWORD', 'CAIRN_PASSWORD_FILE']);
    for (const name of SECRET_NAMES.filter((n) => !kept.has(n))) assert.equal(env[name], undefined, name);
    for (const name of [...CLOUD, ...KEPT]) assert.equal(env[name], PARENT[name], name);
  });

  it('a granted variable passes the scrubbing; a bare ETCDCTL_USER (no password) is not withheld', () => {
    const env = childEnvironment(PARENT, 'tool', { ETCDCTL_USER: 'root:granted', EMPTY: undefined });
    assert.equal(env.ETCDCTL_USER, 'root:granted');
    assert.ok(!('EMPTY' in env));
    assert.equal(isWithheld('ETCDCTL_USER', 'root', 'hook'), false);
    assert.equal(isWithheld('cairn_db_password', 'x', 'hook'), true);
  });

  it('run() and runHook() hand the scrubbed environment to the real child', async () => {
    const tool = (await run(['/usr/bin/env'], { env: PARENT })).stdout;
    const hook = (await runHook('pre-hook', 'env', { env: PARENT })).stdout;
    const granted = (await run(['/usr/bin/env'], { env: PARENT, grant: { ETCDCTL_USER: 'root:granted' } })).stdout;
    for (const value of ['repo-passphrase', 'db-password', 'task-token', 'pg-password', 'mysql-password', 'etcd-password', 'future-key']) {
      assert.ok(!tool.includes(value), `tool sees ${value}`);
      assert.ok(!hook.includes(value), `hook sees ${value}`);
    }
    assert.ok(!tool.includes('aws-secret'));
    assert.ok(hook.includes('AWS_SECRET_ACCESS_KEY=aws-secret'));
    assert.ok(tool.includes('CAIRN_REPOSITORY=/srv/repo') && hook.includes('PGPASSFILE=/home/op/.pgpass'));
    assert.ok(granted.includes('ETCDCTL_USER=root:granted'));
  });
});

/** Every .ts file under agent/. */
async function sources(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) out.push(...(await sources(path)));
    else if (entry.name.endsWith('.ts') || entry.name.endsWith('.js') || entry.name.endsWith('.mjs')) out.push(path);
  }
  return out;
}

/**
 * The files allowed to start a process, each spawning only with an env built
 * by childEnvironment: a new spawn elsewhere must go through agent/process/run.ts
 * (or be added here with its own childEnvironment call).
 */
const SPAWN_SITES: Record<string, number> = {
  'process/run.ts': 1,
  'storage/hook.ts': 1,
  'pitr/wal-metadata.ts': 1,
  'pitr/wal-client.ts': 1,
  'pitr/binlog-replay.ts': 1,
  'cli/build-sea.ts': 1,
};

describe('every spawn in agent/ builds its environment through childEnvironment', () => {
  it('only the allowed files start processes, and each spawn there has its childEnvironment call', async () => {
    const found: Record<string, number> = {};
    for (const path of await sources(AGENT)) {
      const text = await readFile(path, 'utf8');
      const file = relative(AGENT, path);
      const imports =
        /from 'node:child_process'|from "node:child_process"|require\(['"](node:)?child_process['"]\)|from 'child_process'/.test(text);
      // Direct calls (a regex's .exec() is not one); a namespace import (cp.spawn) is caught by the import check and the count.
      const calls =
        text.match(
          /(?<![\w.])(spawn|spawnSync|exec|execSync|execFile|execFileSync|fork)\s*\(|\.(spawn|spawnSync|execFile|execFileSync|fork)\s*\(/g,
        ) ?? [];
      if (!imports) continue;
      found[file] = calls.length;
      const scrubbed = (text.match(/\bchildEnvironment\s*\(/g) ?? []).length;
      assert.ok(scrubbed >= calls.length, `${file}: ${calls.length} spawn call(s) but ${scrubbed} childEnvironment call(s)`);
    }
    assert.deepEqual(found, SPAWN_SITES, 'a file starts processes without being listed here: run it through agent/process/run.ts');
  });
});
