import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { chmod, mkdir, mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { missingMariadb, startMariadb, type MariadbServer } from '../helpers/mariadb.ts';
import { makeRandomTree } from '../helpers/tree.ts';
import { INSTANCE, PASSPHRASE_PARAMETER, startSystem, type System } from './harness.ts';

/**
 * Restore drills end to end (issue 18's e2e acceptance): the synthesized Verify state machine
 * (PlanVerify → RunAgent → RecordResult) run by aws-local-stepfunctions, the real SSM document
 * script running the real bundled agent against s3rver, for a files plan and a mysqldump plan
 * whose `verification.drill` is on. The mysqldump plan names a real "live" MariaDB: the drill
 * must prove the snapshot on a private server of its own, so the live data that changed after
 * the backup is still the changed data afterwards, and the row counts reported are the snapshot's.
 */
const PASSPHRASE = 'e2e passphrase that is long enough';
const DB_PASSWORD_PARAMETER = '/cairn/e2e/shop-dump/db-password';
const plan = (id: string, engine: string, engineOptions: Record<string, unknown>): Record<string, unknown> => ({
  id,
  targets: { instanceIds: [INSTANCE] },
  engine,
  engineOptions,
  schedule: { expression: 'rate(1 day)' },
  retention: { keepLast: 2 },
  keySource: { passphraseParameter: PASSPHRASE_PARAMETER },
  rpo: '26h',
  timeouts: { heartbeatSeconds: 60, timeoutSeconds: 900 },
  verification: { drill: true, schedule: { expression: 'rate(7 days)' } },
});

interface DrillOutput {
  plan: { operation: string };
  agent: {
    operation: string;
    snapshotId: string;
    drill: { ok: boolean; checks: Array<{ name: string; ran: boolean; ok: boolean; found: string }> };
  };
  recorded: { outcome: string };
}

describe('restore drills through the Verify state machine', { timeout: 600_000, skip: missingMariadb() }, () => {
  let system: System;
  let work: string;
  let data: string;
  let live: MariadbServer;
  // Where the agent's drills make their scratch directories: under root the private mariadbd runs as
  // mysql, which must pass through it (the harness's own temp directory is closed to other users).
  let scratch: string;
  const hostEnv = (): Record<string, string> => ({
    CAIRN_DRILL_DIR: scratch,
    // The harness's TMPDIR is closed to other users: the drill's mariadb-install-db (as mysql) must not need it.
    // A root shell's PATH, as SSM's: mariadbd lives in /usr/sbin.
    PATH: `${join(process.execPath, '..')}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin`,
  });

  before(async () => {
    work = await mkdtemp(join(tmpdir(), 'cairn-e2e-drill-'));
    await chmod(work, 0o711);
    scratch = join(work, 'scratch');
    await mkdir(scratch, { mode: 0o711 });
    data = join(work, 'data');
    await makeRandomTree(data, 18, { files: 12, maxFileSize: 50_000 });
    live = await startMariadb();
    live.sql('CREATE DATABASE shop');
    live.sql(
      'CREATE TABLE items (id INT PRIMARY KEY, name VARCHAR(32)) ENGINE=InnoDB; INSERT INTO items SELECT seq, CONCAT("i", seq) FROM seq_1_to_300',
      'shop',
    );
    system = await startSystem([
      plan('files-drill', 'files', { paths: [data] }) as never,
      plan('shop-dump', 'mysqldump', {
        connection: { host: '127.0.0.1', port: live.port, user: live.user },
        passwordParameter: DB_PASSWORD_PARAMETER,
        databases: ['shop'],
      }) as never,
    ]);
    system.ssm.parameters.set(PASSPHRASE_PARAMETER, PASSPHRASE);
    system.ssm.parameters.set(DB_PASSWORD_PARAMETER, live.password);
  });
  after(async () => {
    await system?.stop();
    await live?.stop();
    await rm(work, { recursive: true, force: true });
  });

  const backup = async (planId: string): Promise<string> => {
    const out = (await system.run('Backup', { planId, scheduledTime: '2026-12-01T02:00:00Z' }, { hostEnv: hostEnv() })) as {
      finalized: { snapshotId: string };
    };
    assert.match(out.finalized.snapshotId, /^[0-9a-f]{64}$/, `${planId} backed up: ${JSON.stringify(out)}`);
    return out.finalized.snapshotId;
  };
  const drill = async (planId: string): Promise<DrillOutput> => {
    const out = (await system.run('Verify', { planId }, { hostEnv: hostEnv() })) as DrillOutput;
    assert.equal(out.plan.operation, 'drill', 'PlanVerify asked the agent for a drill, as the plan says');
    assert.equal(out.agent.operation, 'drill');
    assert.equal(out.recorded.outcome, 'success');
    assert.equal(out.agent.drill.ok, true, JSON.stringify(out.agent.drill));
    assert.ok(out.agent.drill.checks.length > 0, 'the drill reported its checks');
    for (const check of out.agent.drill.checks) assert.ok(check.ran && check.ok, `check ${check.name} ran and passed: ${check.found}`);
    assert.deepEqual(await readdir(scratch), [], 'the drill removed its scratch directory');
    return out;
  };

  it('a files plan: backed up by the Backup machine, then drilled by the Verify machine with every check run and passed', async () => {
    const snapshotId = await backup('files-drill');
    const out = await drill('files-drill');
    assert.equal(out.agent.snapshotId, snapshotId, 'the drill proved the latest snapshot');
    assert.deepEqual(
      out.agent.drill.checks.map((c) => c.name),
      ['restore', 'pieces', 'file sizes'],
    );
  });

  it("a mysqldump plan: the drill reports the snapshot's row counts and leaves the live server's changed data as it was", async () => {
    const snapshotId = await backup('shop-dump');
    // The live data moves on after the backup: a drill aimed at the live server would roll it back.
    live.sql('DELETE FROM items WHERE id > 40', 'shop');
    const liveBefore = live.sql('CHECKSUM TABLE shop.items EXTENDED');
    const connections = (): number => Number(live.sql("SHOW GLOBAL STATUS LIKE 'Connections'").split('\t')[1]);
    const connectionsBefore = connections();
    const out = await drill('shop-dump');
    assert.equal(connections(), connectionsBefore + 1, 'only the counting query itself reached the live server, no drill');
    assert.equal(out.agent.snapshotId, snapshotId);
    assert.equal(live.sql('CHECKSUM TABLE shop.items EXTENDED'), liveBefore, 'the live data is unchanged');
    assert.equal(live.sql('SELECT COUNT(*) FROM shop.items').trim(), '40');
    const counts = out.agent.drill.checks.find((c) => c.name === 'row counts');
    assert.ok(counts, `the drill counted rows: ${JSON.stringify(out.agent.drill.checks)}`);
    assert.match(counts.found, /shop\.items 300\b/, "the snapshot's 300 rows, not the live 40");
    assert.deepEqual(
      out.agent.drill.checks.map((c) => c.name),
      ['private mariadbd', 'load dump', 'mariadb-check', 'row counts'],
    );
  });
});
