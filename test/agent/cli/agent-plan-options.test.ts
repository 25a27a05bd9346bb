import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { runAgentOperation, type AgentRunOptions } from '../../../agent/commands/agent-operation.ts';
import { etcdSpec } from '../../../agent/core/engine-options/etcd.ts';
import { pgdumpSpec } from '../../../agent/core/engine-options/pgdump.ts';
import { postgresSpec } from '../../../agent/core/engine-options/postgres.ts';
import { CairnError } from '../../../agent/core/errors.ts';
import { createEngineRegistry } from '../../../agent/engines/registry.ts';
import { silentProgress } from '../../../agent/progress/progress.ts';
import { startSsmStandin, type SsmStandin } from '../../e2e/standins.ts';
import { PASSPHRASE, fileRepo, initSmallRepo, tempDir } from '../../helpers/repo.ts';
import { recordingEngine, type RecordedCall } from './recording-engine.ts';

/**
 * An orchestrated run (`cairn agent <operation>`) hands the plan's engine every
 * option the plan holds (engineOptionsOfPlan: the engine's own keys, the
 * connection flattened), not only the connection and databases: pgdump's
 * jobs, etcd's endpoints and TLS files. The plan and the passphrase come from
 * Parameter Store through the real SDK client and PlanSource, here served by
 * the SSM stand-in; the engines record what they were given.
 */

const PREFIX = '/cairn/test/plans/';
const PASSPHRASE_PARAMETER = '/cairn/test/passphrase';
const DB_PASSWORD_PARAMETER = '/cairn/test/db-password';

function plan(id: string, engine: string, engineOptions: Record<string, unknown>, extra: Record<string, unknown> = {}): string {
  return JSON.stringify({
    id,
    targets: { instanceIds: ['i-0123456789abcdef0'] },
    engine,
    engineOptions,
    schedule: { expression: 'rate(1 day)' },
    retention: { keepLast: 3 },
    keySource: { passphraseParameter: PASSPHRASE_PARAMETER },
    rpo: '26h',
    repository: { url: 's3://cairn-test-bucket/plans/options/' },
    ...extra,
  });
}

const pgdump = recordingEngine(pgdumpSpec);
const etcd = recordingEngine(etcdSpec);
// postgres only for its capabilities (a WAL, archived by the server): nothing runs it here.
const engines = createEngineRegistry([pgdump.engine, etcd.engine, recordingEngine(postgresSpec).engine]);

function only(calls: RecordedCall[], operation: RecordedCall['operation']): Record<string, unknown> {
  const matching = calls.filter((c) => c.operation === operation);
  assert.equal(matching.length, 1, `one ${operation} expected`);
  return matching[0]!.options;
}

describe('orchestrated runs hand the engine the options of its plan', () => {
  let work: Awaited<ReturnType<typeof tempDir>>;
  let ssm: SsmStandin;
  let options: AgentRunOptions;
  before(async () => {
    work = await tempDir('agent-plan-options');
    const repoDir = join(work.path, 'repo');
    await initSmallRepo(fileRepo(repoDir));
    ssm = await startSsmStandin();
    // PlanSource's SSMClient reads its endpoint, region and credentials from the process environment.
    Object.assign(process.env, {
      AWS_ENDPOINT_URL_SSM: ssm.endpoint,
      AWS_REGION: 'eu-central-1',
      AWS_ACCESS_KEY_ID: 'test',
      AWS_SECRET_ACCESS_KEY: 'test',
    });
    ssm.parameters.set(PASSPHRASE_PARAMETER, PASSPHRASE);
    ssm.parameters.set(DB_PASSWORD_PARAMETER, 'db secret');
    ssm.parameters.set(
      `${PREFIX}pg`,
      plan('pg', 'pgdump', {
        connection: { host: 'db.internal', port: 5433, user: 'backup' },
        passwordParameter: DB_PASSWORD_PARAMETER,
        databases: ['app', 'audit'],
        jobs: 4,
      }),
    );
    ssm.parameters.set(
      `${PREFIX}kv`,
      plan('kv', 'etcd', {
        endpoints: ['https://etcd-1:2379', 'https://etcd-2:2379'],
        cacert: '/etc/etcd/ca.pem',
        cert: '/etc/etcd/client.pem',
        key: '/etc/etcd/client-key.pem',
        initialCluster: 'restored=http://10.0.0.9:2380',
      }),
    );
    ssm.parameters.set(`${PREFIX}wal`, plan('wal', 'postgres', {}, { pitr: { enabled: true } }));
    options = {
      who: { host: 'test-host', user: 'tester' },
      progress: silentProgress,
      concurrency: 2,
      signal: new AbortController().signal,
      env: { CAIRN_PLAN_PARAMETER_PREFIX: PREFIX },
      openStorage: () => Promise.resolve(fileRepo(repoDir)),
      cairnProgram: [process.execPath, 'cairn'],
      onArchived: () => assert.fail('no binlog is archived here'),
      onPushed: () => assert.fail('no binlog is pushed here'),
      engines,
    };
  });
  after(async () => {
    await ssm?.close();
    await work?.remove();
  });

  it('pgdump: the connection flattened, databases and jobs, on backup and restore', async () => {
    const backup = await runAgentOperation({ operation: 'backup', planId: 'pg', runId: 'run-1', heartbeatSeconds: 60 }, options);
    assert.equal(backup.engine, 'pgdump');
    const backedUp = only(pgdump.calls, 'backup');
    assert.deepEqual(
      { host: backedUp.host, port: backedUp.port, user: backedUp.user, databases: backedUp.databases, jobs: backedUp.jobs },
      { host: 'db.internal', port: 5433, user: 'backup', databases: ['app', 'audit'], jobs: 4 },
    );
    assert.equal('passwordParameter' in backedUp, false, 'the parameter name is the agent’s, not the engine’s');

    const snapshotId = backup.snapshotId;
    assert.ok(snapshotId);
    await runAgentOperation({ operation: 'restore', planId: 'pg', snapshotId, targetDatabase: 'app_copy', heartbeatSeconds: 60 }, options);
    const restored = only(pgdump.calls, 'restore');
    assert.equal(restored.jobs, 4, "the plan's jobs reach pg_restore");
    assert.equal(restored.host, 'db.internal');
  });

  it('etcd: endpoints and TLS files on backup, the new cluster on restore', async () => {
    const backup = await runAgentOperation({ operation: 'backup', planId: 'kv', runId: 'run-2', heartbeatSeconds: 60 }, options);
    const backedUp = only(etcd.calls, 'backup');
    assert.deepEqual(backedUp.endpoints, ['https://etcd-1:2379', 'https://etcd-2:2379']);
    assert.equal(backedUp.cacert, '/etc/etcd/ca.pem');
    assert.equal(backedUp.cert, '/etc/etcd/client.pem');
    assert.equal(backedUp.key, '/etc/etcd/client-key.pem');

    assert.ok(backup.snapshotId);
    await runAgentOperation(
      { operation: 'restore', planId: 'kv', snapshotId: backup.snapshotId, targetPath: join(work.path, 'member'), heartbeatSeconds: 60 },
      options,
    );
    const restored = only(etcd.calls, 'restore');
    assert.equal(restored.initialCluster, 'restored=http://10.0.0.9:2380');
    assert.deepEqual(restored.endpoints, ['https://etcd-1:2379', 'https://etcd-2:2379']);
  });

  it('archive is refused for a plan whose engine has no binlog, by its capabilities', async () => {
    const refusal = async (planId: string): Promise<CairnError> => {
      try {
        await runAgentOperation({ operation: 'archive', planId, heartbeatSeconds: 60 }, options);
      } catch (error) {
        assert.ok(error instanceof CairnError, String(error));
        return error;
      }
      assert.fail(`archive of plan ${planId} was not refused`);
    };
    const logical = await refusal('pg');
    assert.match(logical.message, /plan pg does not push binlogs/);
    assert.match(logical.hint ?? '', /set pitr\.enabled/);
    const wal = await refusal('wal');
    assert.match(wal.hint ?? '', /archive_command \(cairn wal-push\)/, 'a WAL engine archives through the server');
  });
});
