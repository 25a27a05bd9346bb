import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { CairnError, DamagedError } from '../../../agent/core/errors.ts';
import { run } from '../../../agent/process/run.ts';
import { drillEnvironment, failureOf, timedCheck } from '../../../agent/engines/drill-tools.ts';
import { dbnameConninfo } from '../../../agent/engines/private-postgres.ts';

/**
 * What keeps a drill's database clients off the production server (issue 18; found by an attack
 * review): no client variable, no libpq password or service file, and database names that can never
 * be read as a connection string.
 */
describe('drill clients cannot be pointed at production', () => {
  it('the environment drops PG*/MYSQL_*/ETCD* and points libpq files at nothing', () => {
    const env = drillEnvironment({
      PATH: '/usr/bin',
      PGHOST: 'prod',
      PGSERVICE: 'prod',
      MYSQL_HOST: 'prod',
      ETCDCTL_ENDPOINTS: 'x',
      HOME: '/root',
    });
    assert.equal(env.PGHOST, undefined);
    assert.equal(env.PGSERVICE, undefined);
    assert.equal(env.MYSQL_HOST, undefined);
    assert.equal(env.ETCDCTL_ENDPOINTS, undefined);
    assert.equal(env.PGPASSFILE, '/dev/null');
    assert.equal(env.PGSERVICEFILE, '/dev/null');
    assert.equal(env.PATH, '/usr/bin');
  });

  it('a database name holding host= and port= is passed as dbname only', () => {
    const crafted = "host=localhost port=5432 dbname=prod user=postgres o'k\\";
    const conninfo = dbnameConninfo(crafted);
    assert.equal(conninfo, "dbname='host=localhost port=5432 dbname=prod user=postgres o\\'k\\\\'");
    // libpq's own parser agrees where psql is installed: the whole name is the database, no host or port.
    const psql = spawnSync('psql', ['-X', '-h', '/nonexistent-socket-dir', '-p', '7777', '-d', conninfo, '-c', 'SELECT 1'], {
      encoding: 'utf8',
      env: drillEnvironment({ PATH: process.env.PATH ?? '' }),
    });
    if (psql.error) return; // no psql here: the string check above stands alone
    assert.match(psql.stderr, /nonexistent-socket-dir\/\.s\.PGSQL\.7777/, 'it tried the socket and port it was given');
    assert.doesNotMatch(psql.stderr, /localhost/, 'not the crafted host');
  });
});

describe('why a drill check failed: only proof against the data counts as damage', () => {
  it('a finding or a Cairn.Damaged read is the data; a missing or failing tool, a refusal, is the host', async () => {
    const check = (body: () => Promise<{ ok: boolean; found: string; failure?: 'data' | 'host' }>) =>
      timedCheck('c', 'check', undefined, body);
    assert.equal(failureOf(await check(async () => ({ ok: true, found: 'fine' }))), undefined);
    assert.equal(failureOf(await check(async () => ({ ok: false, found: 'table t: Corrupt' }))), 'data');
    assert.equal(failureOf(await check(async () => ({ ok: false, found: 'nothing checked', failure: 'host' }))), 'host');
    assert.equal(failureOf(await check(() => Promise.reject(new DamagedError('piece read back with another keyed id')))), 'data');
    assert.equal(failureOf(await check(() => Promise.reject(new CairnError('Cairn.Usage', 'needs a tool')))), 'host');
    // A real program that fails (not found here): what a tool the host lacks or that crashes looks like.
    const failed = await check(async () => {
      await run(['/nonexistent/mariabackup', '--prepare']);
      return { ok: true, found: 'unreachable' };
    });
    assert.equal(failed.ok, false);
    assert.equal(failureOf(failed), 'host', failed.found);
    const exited = await check(async () => {
      await run(['false']);
      return { ok: true, found: 'unreachable' };
    });
    assert.equal(failureOf(exited), 'host', exited.found);
  });
});
