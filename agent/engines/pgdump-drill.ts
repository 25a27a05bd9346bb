import { join } from 'node:path';
import { text } from 'node:stream/consumers';
import { ProcessError } from '../process/run.ts';
import { skippedCheck, timedCheck } from './drill-tools.ts';
import type { DrillCheck, DrillContext, DrillTool, SnapshotSource } from './engine.ts';
import { dbnameConninfo, INITDB, PG_RESTORE, POSTGRES, PSQL, startPrivatePostgres, type PrivatePostgres } from './private-postgres.ts';

/**
 * The pgdump engine's drill: a private cluster from `initdb` (private-postgres.ts:
 * no TCP, no archiving, no replication, a socket in the scratch directory, in a
 * network namespace where the host allows it), every database dump of the
 * snapshot restored into a database of its name with pg_restore, then the
 * row count of every table. globals.sql is read back but not run: it may create
 * tablespaces at paths of this host. pg_restore runs with --no-owner,
 * --no-privileges, --no-tablespaces and --no-subscriptions, so the restore
 * needs no production role and writes nothing outside the scratch directory.
 *
 * A dump is whatever SQL its maker put in it, so it is loaded, and its tables
 * counted, as RESTORE_ROLE: a role of the private cluster that is no superuser
 * and owns the target database (it can create what an ordinary dump holds,
 * trusted extensions included). `COPY … TO PROGRAM`, `lo_export`, a function in
 * an untrusted language (C, plpythonu), `ALTER SYSTEM`, `ALTER ROLE … SET` of a
 * superuser setting are refused; a dump that needs them fails the drill, its
 * check naming the statement. The superuser only creates the role and the
 * databases, before any dump is loaded. (The server itself runs as an
 * unprivileged OS user of its own: private-postgres.ts.)
 */
export const PGDUMP_DRILL_TOOLS: readonly DrillTool[] = [INITDB, POSTGRES, PG_RESTORE, PSQL];

/** The private cluster's role that loads every dump: no superuser, no role or database creation. */
export const RESTORE_ROLE = 'cairn_drill_restore';

/**
 * What pg_restore (without --exit-on-error: it goes on and counts) said went wrong: each of the first
 * three errors with the statement it ran (`Command was:`), and how many there were.
 */
export function restoreErrors(stderr: string): string {
  const lines = stderr.split('\n');
  const errors: string[] = [];
  lines.forEach((line, at) => {
    if (!/\bERROR:/.test(line) || errors.length >= 3) return;
    const next = lines.slice(at + 1).findIndex((l) => /\bERROR:/.test(l));
    const command = lines
      .slice(at + 1, next < 0 ? undefined : at + 1 + next)
      .find((l) => l.startsWith('Command was:'))
      ?.replace(/^Command was:\s*/, '')
      .slice(0, 200);
    errors.push(`${line.replace(/^.*?\bERROR:\s*/, '')}${command ? ` (in: ${command})` : ''}`);
  });
  const count = /errors ignored on restore: (\d+)/.exec(stderr)?.[1];
  if (errors.length === 0) return lines.filter(Boolean).slice(-3).join(' | ').slice(-600);
  return `${errors.join('; ')}${count ? ` (${count} error(s) in all)` : ''}`;
}

function quoteIdent(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}

function quoteLiteral(value: string): string {
  return `'${value.replace(/'/g, "''")}'`;
}

/** The row count of every ordinary table (partitions included, partitioned parents and foreign tables not) of one database. */
async function countRows(server: PrivatePostgres, db: string): Promise<Record<string, number>> {
  // Foreign tables are never read: their rows live on another server.
  const tables = (
    await server.sql(
      "SELECT n.nspname || E'\\t' || c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%' ORDER BY 1",
      db,
      RESTORE_ROLE,
    )
  )
    .split('\n')
    .filter(Boolean)
    .map((line) => line.split('\t') as [string, string]);
  const rows: Record<string, number> = {};
  for (let at = 0; at < tables.length; at += 50) {
    const sql = tables
      .slice(at, at + 50)
      .map(
        ([schema, table]) => `SELECT ${quoteLiteral(`${db}.${schema}.${table}`)}, count(*) FROM ${quoteIdent(schema)}.${quoteIdent(table)}`,
      )
      .join(' UNION ALL ');
    for (const line of (await server.sql(`${sql};`, db, RESTORE_ROLE)).split('\n').filter(Boolean)) {
      const cut = line.lastIndexOf('|');
      rows[line.slice(0, cut)] = Number(line.slice(cut + 1));
    }
  }
  return rows;
}

export async function drillPgdump(source: SnapshotSource, ctx: DrillContext): Promise<DrillCheck[]> {
  const checks: DrillCheck[] = [];
  const box: { server?: PrivatePostgres } = {};
  try {
    const start = await timedCheck('private cluster', 'restore', ctx.signal, async () => {
      const server = await startPrivatePostgres({
        dataDir: join(ctx.tempDir, 'postgres', 'data'),
        runDir: join(ctx.tempDir, 'postgres', 'run'),
        scratchDir: ctx.tempDir,
        initialize: true,
        fast: true,
        env: ctx.env,
        signal: ctx.signal,
      });
      box.server = server;
      const version = (await server.sql('SHOW server_version')).trim();
      await server.sql(`CREATE ROLE ${RESTORE_ROLE} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS`);
      return {
        ok: true,
        found: `PostgreSQL ${version} from initdb, socket only${server.isolated ? ', in a network namespace of its own' : ''}${server.osUser ? `, as ${server.osUser}` : ''}; dumps are loaded as ${RESTORE_ROLE}, no superuser`,
        details: { version, isolated: server.isolated, osUser: server.osUser, restoreRole: RESTORE_ROLE },
      };
    });
    checks.push(start);
    const server = box.server;
    if (!start.ok || !server) return [...checks, skippedCheck('pg_restore', 'restore', 'the private cluster did not start')];
    const files = await source.list();
    const globals = files.find((f) => f.path === 'globals.sql');
    if (globals) {
      checks.push(
        await timedCheck('globals', 'restore', ctx.signal, async () => {
          const sql = await text(source.open(globals.path));
          const roles = (sql.match(/^CREATE ROLE /gm) ?? []).length;
          const tablespaces = (sql.match(/^CREATE TABLESPACE /gm) ?? []).length;
          return {
            ok: true,
            found: `globals.sql read back: ${roles} roles, ${tablespaces} tablespaces (not loaded: tablespaces name paths on this host)`,
            details: { roles, tablespaces, bytes: globals.size },
          };
        }),
      );
    }
    const dumps = files.filter((f) => f.path.endsWith('.dump'));
    const restored: string[] = [];
    const restore = await timedCheck('pg_restore', 'restore', ctx.signal, async () => {
      const failures: string[] = [];
      // Every database is made (by the superuser) before any dump is loaded: the superuser never
      // connects to a database a dump has been loaded into.
      const targets: string[] = [];
      for (const file of dumps) {
        const db = file.path.replace(/\.dump$/, '');
        try {
          // The cluster's own postgres database is there already (given to the role); every other one is created empty.
          await server.sql(
            db === 'postgres'
              ? `ALTER DATABASE postgres OWNER TO ${RESTORE_ROLE}`
              : `CREATE DATABASE ${quoteIdent(db)} OWNER ${RESTORE_ROLE} TEMPLATE template0`,
          );
          targets.push(file.path);
        } catch (error) {
          failures.push(`${file.path}: ${error instanceof Error ? error.message : String(error)}`);
        }
      }
      for (const path of targets) {
        const db = path.replace(/\.dump$/, '');
        try {
          await server.client(
            'pg_restore',
            ['--no-owner', '--no-privileges', '--no-tablespaces', '--no-subscriptions', '-d', dbnameConninfo(db)],
            { stdin: source.open(path), doing: `pg_restore of ${path}`, role: RESTORE_ROLE },
          );
          restored.push(db);
        } catch (error) {
          const stderr = error instanceof Error && error.cause instanceof ProcessError ? error.cause.stderr : undefined;
          failures.push(
            stderr
              ? `${path}: pg_restore, as the unprivileged ${RESTORE_ROLE}, failed: ${restoreErrors(stderr)}`
              : `${path}: ${error instanceof Error ? error.message : String(error)}`,
          );
        }
        ctx.progress.warn(`drill: restored ${path} into the private cluster`);
      }
      return {
        ok: failures.length === 0 && dumps.length > 0,
        found:
          failures.length === 0
            ? dumps.length > 0
              ? `${dumps.length} database dump(s) restored: ${restored.join(', ')}`
              : 'the snapshot holds no database dump'
            : `${failures.length} of ${dumps.length} dump(s) did not restore cleanly: ${failures.slice(0, 3).join('; ')}`,
        details: { databases: restored, failures },
      };
    });
    checks.push(restore);
    if (restored.length === 0) return [...checks, skippedCheck('table counts', 'check', 'no dump was restored')];
    checks.push(
      await timedCheck('table counts', 'check', ctx.signal, async () => {
        const rows: Record<string, number> = {};
        // As the restoring role: a superuser's query in a database the dump made could run the dump's functions.
        for (const db of restored) Object.assign(rows, await countRows(server, db));
        const entries = Object.entries(rows);
        const total = entries.reduce((a, [, n]) => a + n, 0);
        const shown = entries
          .slice(0, 10)
          .map(([name, count]) => `${name} ${count}`)
          .join(', ');
        return {
          ok: true,
          found: `${entries.length} tables, ${total} rows${shown ? `: ${shown}${entries.length > 10 ? ', …' : ''}` : ''}`,
          details: { tables: entries.length, rows },
        };
      }),
    );
    return checks;
  } finally {
    await box.server?.stop();
  }
}
