import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { chmod, mkdir, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { runAgentOperation, type AgentRunOptions } from '../../../agent/commands/agent-operation.ts';
import { pgdumpSpec } from '../../../agent/core/engine-options/pgdump.ts';
import { CairnError } from '../../../agent/core/errors.ts';
import { createEngineRegistry, engineRegistry } from '../../../agent/engines/registry.ts';
import { silentProgress } from '../../../agent/progress/progress.ts';
import { startSsmStandin, type SsmStandin } from '../../e2e/standins.ts';
import { missingMariadb, startMariadb, type MariadbServer } from '../../helpers/mariadb.ts';
import { PASSPHRASE, fileRepo, initSmallRepo, tempDir } from '../../helpers/repo.ts';
import { recordingEngine } from '../cli/recording-engine.ts';

/**
 * The orchestrated drill (`cairn agent drill`): the plan from Parameter Store (the SSM
 * stand-in, the real SDK client), then the drill of `cairn drill`. A mysqldump plan whose
 * connection names the live server is drilled on a private server: the live server keeps its
 * data and sees no connection, and the run summary carries the checks. An engine whose drill
 * tools are missing on the host is refused before anything is restored, naming the package.
 */

const PREFIX = '/cairn/test/plans/';
const PASSPHRASE_PARAMETER = '/cairn/test/passphrase';
const DB_PASSWORD_PARAMETER = '/cairn/test/db-password';

function plan(id: string, engine: string, engineOptions: Record<string, unknown>): string {
  return JSON.stringify({
    id,
    targets: { instanceIds: ['i-0123456789abcdef0'] },
    engine,
    engineOptions,
    schedule: { expression: 'rate(1 day)' },
    retention: { keepLast: 3 },
    keySource: { passphraseParameter: PASSPHRASE_PARAMETER },
    rpo: '26h',
    repository: { url: 's3://cairn-test-bucket/plans/drill/' },
  });
}

describe('cairn agent drill', { skip: missingMariadb() }, () => {
  let work: Awaited<ReturnType<typeof tempDir>>;
  let ssm: SsmStandin;
  let live: MariadbServer;
  let options: AgentRunOptions;
  let scratch: string;
  let drilled = 0;
  // pgdump's spec, an engine that records instead of dumping, and a drill whose tool no host has.
  const missingTools = recordingEngine(pgdumpSpec).engine;
  Object.assign(missingTools, {
    drillTools: [{ names: ['cairn-no-such-drill-tool'], package: 'cairn-test-drill-tools' }],
    drill: () => {
      drilled++;
      return Promise.resolve([]);
    },
  });
  const engines = createEngineRegistry([...[...engineRegistry.engines.values()].filter((e) => e.name !== 'pgdump'), missingTools]);

  before(async () => {
    work = await tempDir('agent-drill');
    // The drill's private server runs as cairn-drill under root: it must pass through the test's directory.
    await chmod(work.path, 0o711);
    scratch = join(work.path, 'scratch');
    await mkdir(scratch);
    const repoDir = join(work.path, 'repo');
    await initSmallRepo(fileRepo(repoDir));
    live = await startMariadb();
    ssm = await startSsmStandin();
    Object.assign(process.env, {
      AWS_ENDPOINT_URL_SSM: ssm.endpoint,
      AWS_REGION: 'eu-central-1',
      AWS_ACCESS_KEY_ID: 'test',
      AWS_SECRET_ACCESS_KEY: 'test',
    });
    ssm.parameters.set(PASSPHRASE_PARAMETER, PASSPHRASE);
    ssm.parameters.set(DB_PASSWORD_PARAMETER, live.password);
    ssm.parameters.set(
      `${PREFIX}shop`,
      plan('shop', 'mysqldump', {
        connection: { host: '127.0.0.1', port: live.port, user: live.user },
        passwordParameter: DB_PASSWORD_PARAMETER,
        databases: ['shop'],
      }),
    );
    ssm.parameters.set(`${PREFIX}pg`, plan('pg', 'pgdump', { connection: { host: 'db.internal', port: 5432, user: 'backup' } }));
    options = {
      who: { host: 'test-host', user: 'tester' },
      progress: silentProgress,
      concurrency: 2,
      signal: new AbortController().signal,
      env: { CAIRN_PLAN_PARAMETER_PREFIX: PREFIX, CAIRN_DRILL_DIR: scratch, PATH: process.env.PATH ?? '' },
      openStorage: () => Promise.resolve(fileRepo(repoDir)),
      cairnProgram: [process.execPath, 'cairn'],
      onArchived: () => assert.fail('no binlog is archived here'),
      onPushed: () => assert.fail('no binlog is pushed here'),
      engines,
    };
  });
  after(async () => {
    await ssm?.close();
    await live?.stop();
    await work?.remove();
  });

  it('a mysqldump plan is drilled on a private server: the live server named by the plan keeps its data and sees no connection', async () => {
    live.sql('CREATE DATABASE shop');
    live.sql(
      'CREATE TABLE items (id INT PRIMARY KEY, name VARCHAR(32)) ENGINE=InnoDB; INSERT INTO items SELECT seq, CONCAT("i", seq) FROM seq_1_to_700',
      'shop',
    );
    const backup = await runAgentOperation({ operation: 'backup', planId: 'shop', runId: 'run-1', heartbeatSeconds: 60 }, options);
    assert.ok(backup.snapshotId);
    live.sql('DELETE FROM items WHERE id > 100', 'shop');
    const liveBefore = live.sql('CHECKSUM TABLE shop.items EXTENDED');

    const connections = (): number => Number(live.sql("SHOW GLOBAL STATUS LIKE 'Connections'").split('\t')[1]);
    const before = connections();
    const summary = (await runAgentOperation({ operation: 'drill', planId: 'shop', heartbeatSeconds: 60 }, options)) as Awaited<
      ReturnType<typeof runAgentOperation>
    > & { drill?: { ok: boolean; checks: Array<{ name: string; ran: boolean; ok: boolean; found: string }> } };
    assert.equal(connections(), before + 1, 'only the counting query itself reached the live server');
    assert.equal(live.sql('CHECKSUM TABLE shop.items EXTENDED'), liveBefore, 'the live data is unchanged');

    assert.equal(summary.operation, 'drill');
    assert.equal(summary.snapshotId, backup.snapshotId);
    assert.equal(summary.drill?.ok, true);
    assert.deepEqual(
      summary.drill?.checks.map((c) => [c.name, c.ran, c.ok]),
      [
        ['private mariadbd', true, true],
        ['load dump', true, true],
        ['mariadb-check', true, true],
        ['row counts', true, true],
      ],
    );
    assert.match(summary.drill?.checks[3]?.found ?? '', /shop\.items 700/, 'the snapshot’s 700 rows, not the live 100');
    assert.deepEqual(await readdir(scratch), []);
  });

  it('an engine whose drill tools are missing is refused before anything is restored, naming the package', async () => {
    await runAgentOperation({ operation: 'backup', planId: 'pg', runId: 'run-2', heartbeatSeconds: 60 }, options);
    let refused: unknown;
    try {
      await runAgentOperation({ operation: 'drill', planId: 'pg', heartbeatSeconds: 60 }, options);
    } catch (error) {
      refused = error;
    }
    assert.ok(refused instanceof CairnError, String(refused));
    assert.equal(refused.code, 'Cairn.Usage');
    assert.match(refused.message, /needs cairn-no-such-drill-tool, not installed on this host; nothing was restored/);
    assert.match(refused.hint ?? '', /apt-get install cairn-test-drill-tools/);
    assert.equal(drilled, 0, 'the drill never started');
    assert.deepEqual(await readdir(scratch), []);
  });
});
