import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { z } from 'zod';
import { main } from '../../../agent/cli/main.ts';
import { etcdKeysSpec } from '../../../agent/core/engine-options/etcd-keys.ts';
import { mariadbSpec } from '../../../agent/core/engine-options/mariadb.ts';
import { pgdumpSpec } from '../../../agent/core/engine-options/pgdump.ts';
import { defineEngineSpec } from '../../../agent/core/engine-options/spec.ts';
import { ExitCode } from '../../../agent/core/errors.ts';
import { createEngineRegistry, type EngineRegistry } from '../../../agent/engines/registry.ts';
import { tempDir } from '../../helpers/repo.ts';
import { recordingEngine, type RecordedCall } from './recording-engine.ts';

/**
 * The CLI's engine flags come from the engines' specs: the flags, their
 * environment variables and parsers are the specs' own, and the values reach
 * the engine that runs (backup: --engine; restore: the snapshot's) under the
 * spec's keys. Engines here record their options instead of talking to a
 * server; the flags and schemas are the shipped ones.
 */

class Captured extends Writable {
  text = '';
  override _write(chunk: Buffer, _encoding: BufferEncoding, done: () => void): void {
    this.text += chunk.toString();
    done();
  }
  lines(): Array<Record<string, unknown>> {
    return this.text
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as Record<string, unknown>);
  }
}

async function cairn(
  args: string[],
  env: NodeJS.ProcessEnv,
  engines?: EngineRegistry,
): Promise<{ code: number; stdout: Captured; stderr: Captured }> {
  const stdout = new Captured();
  const stderr = new Captured();
  const code = await main(['node', 'cairn', ...args], { CAIRN_JSON: '1', ...env }, { stdout, stderr }, engines);
  return { code, stdout, stderr };
}

/** A test-only engine with a flag no shipped engine has. */
const kvSpec = defineEngineSpec({
  name: 'test-kv',
  description: 'test only',
  schema: z.object({ dir: z.string().optional() }),
  flags: [{ flags: '--kv-dir <dir>', description: 'test-kv: the directory to copy', key: 'dir', commands: ['backup'], env: 'KV_DIR' }],
  capabilities: { kind: 'logical', drill: false },
});

const etcdKeys = recordingEngine(etcdKeysSpec);
const pgdump = recordingEngine(pgdumpSpec);
const mariadb = recordingEngine(mariadbSpec);
const kv = recordingEngine(kvSpec);
const registry = createEngineRegistry([etcdKeys.engine, pgdump.engine, mariadb.engine, kv.engine]);

function last(calls: RecordedCall[], operation: RecordedCall['operation']): Record<string, unknown> {
  const call = calls.filter((c) => c.operation === operation).at(-1);
  assert.ok(call, `the engine ran no ${operation}`);
  return call.options;
}

function snapshotId(run: { stdout: Captured }): string {
  const summary = run.stdout.lines().find((l) => l.type === 'summary');
  assert.equal(typeof summary?.snapshotId, 'string', run.stdout.text);
  return String(summary?.snapshotId);
}

describe('engine flags generated from the engine specs', () => {
  let work: Awaited<ReturnType<typeof tempDir>>;
  let env: NodeJS.ProcessEnv;
  before(async () => {
    work = await tempDir('engine-flags');
    env = { CAIRN_REPOSITORY: join(work.path, 'repo'), CAIRN_PASSWORD: 'engine flags passphrase', CAIRN_LOCK_LEASE: '30' };
    const init = await cairn(['init'], env);
    assert.equal(init.code, ExitCode.ok, init.stderr.text);
  });
  after(async () => work?.remove());

  it('hands etcd-keys its flags and environment variables on backup and restore (restore --force included)', async () => {
    const backup = await cairn(
      [
        'backup',
        '--engine',
        'etcd-keys',
        '--etcd-endpoints',
        'https://a:2379,https://b:2379',
        '--etcd-prefix',
        '/app/',
        '--etcd-prefix',
        '/cfg/',
        '--db-user',
        'root',
      ],
      { ...env, ETCDCTL_CACERT: '/etc/etcd/ca.pem' },
      registry,
    );
    assert.equal(backup.code, ExitCode.ok, backup.stderr.text);
    const backedUp = last(etcdKeys.calls, 'backup');
    assert.equal(backedUp.endpoints, 'https://a:2379,https://b:2379');
    assert.deepEqual(backedUp.prefixes, ['/app/', '/cfg/']);
    assert.equal(backedUp.cacert, '/etc/etcd/ca.pem', 'ETCDCTL_CACERT is read when --etcd-cacert is not given');
    assert.equal(backedUp.user, 'root');
    assert.equal(backedUp.force, false, 'backup takes no --force');

    const restore = await cairn(
      ['restore', snapshotId(backup), '--force', '--clear-prefix', '--rename-prefix', '/app/:/new/', '--etcd-prefix', '/app/'],
      { ...env, ETCDCTL_ENDPOINTS: 'https://c:2379' },
      registry,
    );
    assert.equal(restore.code, ExitCode.ok, restore.stderr.text);
    const restored = last(etcdKeys.calls, 'restore');
    assert.equal(restored.force, true, "restore's own --force fills etcd-keys' force");
    assert.equal(restored.clearPrefix, true);
    assert.equal(restored.renamePrefix, '/app/:/new/');
    assert.deepEqual(restored.prefixes, ['/app/']);
    assert.equal(restored.endpoints, 'https://c:2379');
    assert.equal(restored.cacert, undefined, 'nothing is left over from the backup run');
  });

  it('hands pgdump and mariadb their own flags, with the specs’ parsers', async () => {
    const backup = await cairn(
      ['backup', '--engine', 'pgdump', '--db-name', 'app', '--db-name', 'audit', '--db-port', '5433'],
      { ...env, CAIRN_DB_HOST: 'db.internal' },
      registry,
    );
    assert.equal(backup.code, ExitCode.ok, backup.stderr.text);
    const backedUp = last(pgdump.calls, 'backup');
    assert.deepEqual(backedUp.databases, ['app', 'audit']);
    assert.equal(backedUp.port, 5433);
    assert.equal(backedUp.host, 'db.internal', 'CAIRN_DB_HOST is read when --db-host is not given');

    const restore = await cairn(['restore', snapshotId(backup), '--jobs', '4'], env, registry);
    assert.equal(restore.code, ExitCode.ok, restore.stderr.text);
    assert.equal(last(pgdump.calls, 'restore').jobs, 4);

    const refused = await cairn(['restore', snapshotId(backup), '--jobs', '0'], env, registry);
    assert.equal(refused.code, ExitCode.usage);
    assert.match(refused.stderr.text, /whole number from 1 to 64/);

    const physical = await cairn(['backup', '--engine', 'mariadb', '--parallel', '3', '--db-socket', '/run/mysqld.sock'], env, registry);
    assert.equal(physical.code, ExitCode.ok, physical.stderr.text);
    const mariadbOptions = last(mariadb.calls, 'backup');
    assert.equal(mariadbOptions.parallel, 3);
    assert.equal(mariadbOptions.socket, '/run/mysqld.sock');
  });

  it("lists a registry's engine flags in help, each once, and never a password flag", async () => {
    const help = await cairn(['backup', '--help'], env, registry);
    assert.equal(help.code, ExitCode.ok, help.stderr.text);
    assert.match(help.stdout.text, /--kv-dir <dir>\s+test-kv: the directory to copy \(env: KV_DIR\)/);
    assert.match(help.stdout.text, /--db-host <host>\s+database server host \(env: CAIRN_DB_HOST\)/);
    // Option rows only: the examples at the end of --help use the flag too.
    assert.equal(help.stdout.text.match(/^ +--db-host /gm)?.length, 1, 'a flag several engines share is added once');

    const shipped = await cairn(['backup', '--help'], env);
    assert.doesNotMatch(shipped.stdout.text, /--kv-dir/, 'the shipped registry has no test engine');

    const restoreHelp = await cairn(['restore', '--help'], env, registry);
    assert.equal(restoreHelp.stdout.text.match(/^ +--force\b/gm)?.length, 1, "etcd-keys' --force is restore's own");

    // Secrets never on argv: the password comes from --db-password-file or CAIRN_DB_PASSWORD.
    const password = await cairn(['backup', '--engine', 'pgdump', '--db-password', 'secret'], env, registry);
    assert.equal(password.code, ExitCode.usage);
    assert.match(password.stderr.text, /unknown option '--db-password'/);
  });
});
