import { chmod, mkdir } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { Writable } from 'node:stream';
import { errorMessage } from '../core/errors.ts';
import { ProcessError, run } from '../process/run.ts';
import { drillEnvironment, skippedCheck, timedCheck } from './drill-tools.ts';
import type { DrillCheck, DrillContext, DrillTool, SnapshotSource } from './engine.ts';
import { confineDataDirLinks } from './drill-datadir-links.ts';
import { asUser } from './drill-server-user.ts';
import { clusterDatabases, POSTGRES, POSTGRES_DIRS, PSQL, startPrivatePostgres, type PrivatePostgres } from './private-postgres.ts';

/**
 * The physical PostgreSQL drill: the snapshot restored into the drill's scratch
 * directory and started as a private cluster (private-postgres.ts: no TCP,
 * archive_mode=off, no restore_command or primary_conninfo, standby.signal
 * removed, so it neither archives WAL nor follows anyone). The snapshot may be
 * crafted, so the restored data directory is refused when a symbolic link in
 * it leads outside the scratch directory (drill-datadir-links.ts), its
 * configuration files are not read, the server runs as the unprivileged
 * cairn-drill user, and the catalogs' event triggers are disabled before the
 * first DDL (pg_amcheck's CREATE EXTENSION); pg_controldata and pg_checksums
 * read the files as that user too. Then:
 *
 * - consistent: crash recovery from the backup's own WAL ended (the server
 *   accepts connections and is not in recovery), its system identifier is the
 *   snapshot's and its WAL position is at or past the backup's stop point;
 * - pg_amcheck on every database that accepts connections (the amcheck
 *   extension installed in the scratch copy as needed): heap pages and B-tree
 *   indexes, with --heapallindexed under --thorough;
 * - after a clean stop, pg_checksums --check over every relation file when
 *   the cluster has data checksums (pg_amcheck reads neither the free space
 *   and visibility maps nor the pages of other access methods; this does).
 */
export const postgresDrillTools: readonly DrillTool[] = [
  POSTGRES,
  PSQL,
  { names: ['pg_amcheck'], dirs: POSTGRES_DIRS, package: 'postgresql-client' },
  { names: ['pg_checksums'], dirs: POSTGRES_DIRS, package: 'postgresql' },
  { names: ['pg_controldata'], dirs: POSTGRES_DIRS, package: 'postgresql' },
];

export async function drillPostgres(source: SnapshotSource, ctx: DrillContext): Promise<DrillCheck[]> {
  const metadata = source.metadata;
  const env = drillEnvironment(ctx.env);
  const dataDir = join(ctx.tempDir, 'data');
  const checks: DrillCheck[] = [];
  const restore = await timedCheck('restore', 'restore', ctx.signal, async () => {
    // PostgreSQL refuses a data directory that others can read.
    await mkdir(dataDir, { mode: 0o700 });
    await source.restoreTo(dataDir);
    await chmod(dataDir, 0o700);
    // A link out of scratch (pg_wal, pg_tblspc/<oid>) would have the private server write into production's files.
    const links = await confineDataDirLinks(dataDir, ctx.tempDir);
    return {
      ok: true,
      found: `the snapshot's files were written into a scratch data directory${links.length ? ` (${links.length} symbolic link(s), all inside it)` : ''}`,
    };
  });
  checks.push(restore);
  const later = ['start', 'consistent', 'pg_amcheck', 'pg_checksums'];
  if (!restore.ok)
    return [
      ...checks,
      ...later.map((name) => skippedCheck(name, 'check', 'the snapshot could not be restored, or its data directory was refused')),
    ];

  let server: PrivatePostgres | undefined;
  const start = await timedCheck('start', 'check', ctx.signal, async () => {
    server = await startPrivatePostgres({
      dataDir,
      initialize: false,
      runDir: join(ctx.tempDir, 'run'),
      scratchDir: ctx.tempDir,
      env,
      signal: ctx.signal,
    });
    return {
      ok: true,
      found: `the restored cluster started privately (socket only${server.isolated ? ', no network' : ''}, archive_mode=off, its own configuration not read${server.osUser ? `, as ${server.osUser}` : ''}, no restored role a superuser${server.keptSuperusers.length ? ` but ${server.keptSuperusers.join(', ')}` : ''}) and recovered from its own WAL`,
    };
  });
  checks.push(start);
  if (!server) return [...checks, ...later.slice(1).map((name) => skippedCheck(name, 'check', 'the restored cluster did not start'))];
  const running: PrivatePostgres = server;
  let stopped = false;
  try {
    checks.push(await timedCheck('consistent', 'check', ctx.signal, () => consistent(running, metadata)));
    checks.push(
      await timedCheck('pg_amcheck', 'check', ctx.signal, async () => {
        await disableEventTriggers(running);
        return amcheck(running, ctx.thorough, ctx.signal);
      }),
    );
    await running.stop();
    stopped = true;
    checks.push(await checksums(running, dataDir, env, ctx.signal));
  } finally {
    if (!stopped) await running.stop();
  }
  return checks;
}

/**
 * Disables every event trigger of the restored catalogs: pg_amcheck's `CREATE EXTENSION amcheck` is DDL,
 * and a ddl_command_start trigger (stored by whoever made the snapshot) would run its function as the
 * superuser. `ALTER EVENT TRIGGER` itself fires none. (PostgreSQL 17's event_triggers=off, which the
 * clients also send, makes this redundant there.)
 */
async function disableEventTriggers(server: PrivatePostgres): Promise<void> {
  for (const db of await clusterDatabases(server)) {
    const names = (await server.sql("SELECT evtname FROM pg_catalog.pg_event_trigger WHERE evtenabled <> 'D'", db))
      .split('\n')
      .filter(Boolean);
    for (const name of names) await server.sql(`ALTER EVENT TRIGGER "${name.replaceAll('"', '""')}" DISABLE`, db);
  }
}

async function consistent(server: PrivatePostgres, metadata: Record<string, unknown>): Promise<{ ok: boolean; found: string }> {
  const [inRecovery, systemId, lsn, reached] = (
    await server.sql(
      `SELECT pg_is_in_recovery(), (SELECT system_identifier FROM pg_control_system()), pg_current_wal_lsn(), ${
        typeof metadata.stopLsn === 'string' && /^[0-9A-F]+\/[0-9A-F]+$/i.test(metadata.stopLsn)
          ? `pg_current_wal_lsn() >= '${metadata.stopLsn}'::pg_lsn`
          : 'NULL'
      }`,
    )
  )
    .trim()
    .split('|');
  const problems: string[] = [];
  if (inRecovery !== 'f') problems.push('the server is still in recovery');
  if (typeof metadata.systemIdentifier === 'string' && systemId !== metadata.systemIdentifier)
    problems.push(`its system identifier is ${systemId}; the snapshot recorded ${metadata.systemIdentifier}`);
  if (reached === 'f') problems.push(`its WAL ends at ${lsn}, before the backup's stop point ${String(metadata.stopLsn)}`);
  return problems.length === 0
    ? {
        ok: true,
        found: `consistent at ${lsn} (the backup ended at ${typeof metadata.stopLsn === 'string' ? metadata.stopLsn : 'an unrecorded point'}), system ${systemId}`,
      }
    : { ok: false, found: problems.join('; ') };
}

/** A Writable that keeps what a program writes (pg_amcheck reports corruption on stdout and exits 2). */
class Collected extends Writable {
  text = '';
  override _write(chunk: Buffer | string, _encoding: BufferEncoding, done: () => void): void {
    if (this.text.length < 1 << 20) this.text += chunk.toString();
    done();
  }
}

async function amcheck(
  server: PrivatePostgres,
  thorough: boolean,
  signal: AbortSignal | undefined,
): Promise<{ ok: boolean; found: string; details?: Record<string, unknown> }> {
  const out = new Collected();
  const args = ['--all', '--install-missing', ...(thorough ? ['--heapallindexed'] : [])];
  try {
    await run([join(server.binDir, 'pg_amcheck'), ...server.clientArgs, ...args], {
      env: server.env,
      signal,
      cwd: server.socketDir,
      stdout: out,
    });
  } catch (error) {
    if (!(error instanceof ProcessError) || error.kind !== 'exit') throw error;
    const report = `${out.text}\n${error.stderr}`.trim();
    // Each finding starts with the relation: `heap table "db.schema.table", block 0, offset 1:` or `btree index "db.schema.index":`.
    const relations = [...new Set([...report.matchAll(/^(?:heap table|btree index|table|index) "([^"]+)"/gm)].map((m) => m[1] as string))];
    const first = report
      .split('\n')
      .map((l) => l.trim())
      .find((l) => l && !/^(heap table|btree index)/.test(l));
    return {
      ok: false,
      found: relations.length
        ? `corruption in ${relations.join(', ')}${first ? `: ${first}` : ''}`
        : `pg_amcheck exited with code ${error.processExitCode}: ${report.split('\n').slice(0, 5).join(' | ')}`,
      details: { relations, report: report.slice(0, 8000) },
    };
  }
  return {
    ok: true,
    found: `no corruption found in the heap tables and B-tree indexes of every database${thorough ? ' (with --heapallindexed)' : ''}`,
  };
}

async function checksums(
  server: PrivatePostgres,
  dataDir: string,
  env: NodeJS.ProcessEnv,
  signal: AbortSignal | undefined,
): Promise<DrillCheck> {
  // As the server's user: the files are the snapshot's, and root need not read them.
  const as = asUser(server.osUser);
  const control = await run([...as, join(server.binDir, 'pg_controldata'), dataDir], { env, signal, cwd: server.socketDir }).catch(
    (error: unknown) => ({ stdout: '', error }),
  );
  if ('error' in control)
    return skippedCheck('pg_checksums', 'check', `pg_controldata could not read the cluster: ${errorMessage(control.error)}`);
  const state = /Database cluster state:\s*(.+)/.exec(control.stdout)?.[1]?.trim();
  const version = /Data page checksum version:\s*(\d+)/.exec(control.stdout)?.[1];
  if (version === '0' || version === undefined) {
    const stop = state === 'shut down' ? '' : ` (the cluster stopped as "${state ?? 'unknown'}")`;
    return { ...skippedCheck('pg_checksums', 'check', `the cluster has no data checksums (initdb --data-checksums)${stop}`), ok: true };
  }
  return timedCheck('pg_checksums', 'check', signal, async () => {
    if (state !== 'shut down')
      return { ok: false, found: `the private cluster did not stop cleanly (state "${state ?? 'unknown'}"): checksums cannot be checked` };
    try {
      const { stdout } = await run([...as, join(server.binDir, 'pg_checksums'), '--check', '-D', dataDir], {
        env,
        signal,
        cwd: server.socketDir,
      });
      const blocks = /Blocks scanned:\s*(\d+)/.exec(stdout)?.[1];
      return { ok: true, found: `every page checksum matches${blocks ? ` (${blocks} blocks)` : ''}` };
    } catch (error) {
      if (!(error instanceof ProcessError) || error.kind !== 'exit') throw error;
      // `checksum verification failed in file "<data dir>/base/16384/16385", block 0: …`
      const files = [...new Set([...error.stderr.matchAll(/in file "([^"]+)"/g)].map((m) => relative(dataDir, m[1] as string)))];
      return {
        ok: false,
        found: files.length ? `bad page checksums in ${files.join(', ')}` : `pg_checksums failed: ${error.message}`,
        details: { files },
      };
    }
  });
}
