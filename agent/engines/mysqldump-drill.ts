import { CairnError, errorMessage } from '../core/errors.ts';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { timedCheck, skippedCheck, requireTool } from './drill-tools.ts';
import type { DrillCheck, DrillContext, DrillTool, SnapshotSource } from './engine.ts';
import {
  MARIADB_CHECK,
  MARIADB_CLIENT,
  MARIADB_INSTALL_DB,
  MARIADBD,
  startPrivateMariadb,
  type PrivateMariadb,
} from './private-mariadb.ts';

/**
 * The mysqldump engine's drill: a private mariadbd on an empty data directory
 * (private-mariadb.ts: no networking, no binary log, no replication, no event
 * scheduler, a socket in the scratch directory), the snapshot's dumps loaded
 * into it, `mariadb-check` over every table (`--extended` under --thorough),
 * and the row count of every table of the dumped databases. The drill never
 * reads the plan's connection: it has none. A dump is whatever its maker
 * wrote, file name included: names reach the client programs as values
 * (`--database=`, after `--`), never as options, and a dump without
 * mariadb-dump's closing `-- Dump completed` line (cut short, empty) fails.
 */
export const MYSQLDUMP_DRILL_TOOLS: readonly DrillTool[] = [MARIADBD, MARIADB_INSTALL_DB, MARIADB_CLIENT, MARIADB_CHECK];

const SYSTEM_DATABASES = new Set(['mysql', 'information_schema', 'performance_schema', 'sys']);

/** `mariadb-check` output: `db.table  OK`, or the table's name then `note|warning|error : …` lines. */
export function parseMariadbCheck(output: string): { tables: number; failed: Array<{ table: string; problem: string }> } {
  let tables = 0;
  let current = '';
  const failed = new Map<string, string>();
  for (const raw of output.split('\n')) {
    const line = raw.trimEnd();
    if (!line) continue;
    const message = /^(note|warning|error|status)\s*:\s*(.*)$/i.exec(line);
    if (message) {
      const level = (message[1] ?? '').toLowerCase();
      const text = message[2] ?? '';
      if (level === 'error' || (level === 'status' && !/^OK$/i.test(text)))
        failed.set(current, [failed.get(current), text].filter(Boolean).join('; '));
      continue;
    }
    const table = /^(\S+)\s*(.*)$/.exec(line);
    if (!table) continue;
    current = table[1] ?? '';
    tables++;
    const status = (table[2] ?? '').trim();
    if (status && !/^OK$/i.test(status)) failed.set(current, status);
  }
  return { tables, failed: [...failed].map(([table, problem]) => ({ table, problem })) };
}

function quoteName(name: string): string {
  return `\`${name.replace(/`/g, '``')}\``;
}

async function loadDumps(
  server: PrivateMariadb,
  source: SnapshotSource,
  ctx: DrillContext,
): Promise<{ databases: string[]; all: boolean; bytes: number }> {
  const client = await requireTool(MARIADB_CLIENT, ctx.env);
  // --sandbox: a dump line such as `\! command` runs nothing on this host; --local-infile=0: no LOAD DATA LOCAL reads a host file.
  const help = await server.client(client, ['--help'], { doing: 'reading the client options' }).catch(() => ({ stdout: '' }));
  // Without --sandbox a `\! command` line of the dump would run on this host: refuse rather than load.
  if (!/--sandbox/.test(help.stdout))
    throw new CairnError(
      'Cairn.Usage',
      `${client} has no --sandbox option: a dump's shell-escape lines could run on this host; the drill loads nothing`,
      {
        hint: 'install a MariaDB client with --sandbox (mariadb-client 10.5.25/10.6.18/10.11.8 or newer)',
      },
    );
  const sandbox = ['--sandbox', '--local-infile=0'];
  const dumps = (await source.list()).filter((f) => f.path.endsWith('.sql'));
  if (dumps.length === 0) throw new CairnError('Cairn.Damaged', 'the snapshot holds no dump (no .sql file): there is nothing to load');
  const databases: string[] = [];
  let all = false;
  let bytes = 0;
  for (const file of dumps) {
    const db = file.path === 'all-databases.sql' ? undefined : file.path.replace(/\.sql$/, '');
    if (db) {
      await server.sql(`CREATE DATABASE IF NOT EXISTS ${quoteName(db)}`);
      databases.push(db);
    } else all = true;
    const tail = { text: '' };
    // --database=: a dump's file name (`--skip-sandbox.sql`) is never read as an option of the client.
    await server.client(client, [...sandbox, ...(db ? [`--database=${db}`] : [])], {
      stdin: Readable.from(watchTail(source.open(file.path), tail)),
      doing: `loading ${file.path}`,
    });
    // A dump cut short at a statement's end loads without an error: only mariadb-dump's last line says it is whole.
    if (!DUMP_COMPLETED.test(tail.text))
      throw new CairnError(
        'Cairn.Damaged',
        `${file.path} ends without mariadb-dump's closing "-- Dump completed" line: the dump is cut short (or empty), so what loaded is not the whole database`,
      );
    bytes += file.size;
    ctx.progress.warn(`drill: loaded ${file.path} into the private server`);
  }
  return { databases, all, bytes };
}

/** The last line mariadb-dump and mysqldump write (the engine never turns their comments off). */
const DUMP_COMPLETED = /^-- Dump completed\b/m;

/** Passes a dump through, keeping its last bytes in `tail.text`. */
async function* watchTail(input: Readable, tail: { text: string }): AsyncGenerator<Buffer> {
  for await (const chunk of input as AsyncIterable<Buffer>) {
    tail.text = (tail.text + chunk.toString('latin1')).slice(-512);
    yield chunk;
  }
}

/** Whether the mariadb client's error says the server refused a statement of the dump (`ERROR 1064 (42000) at line 12: …`), not that it ran out of room. */
export function dumpRefused(message: string): boolean {
  return (
    /ERROR \d+ \([0-9A-Z]+\) at line \d+/.test(message) &&
    !/errno:? ?28|error 28|is full|no space|out of memory|ERROR (1041|1037|2013|2006)/i.test(message)
  );
}

export async function drillMysqldump(source: SnapshotSource, ctx: DrillContext): Promise<DrillCheck[]> {
  const checks: DrillCheck[] = [];
  // Set inside the first check; stopped in `finally` whatever happened after.
  const box: { server?: PrivateMariadb } = {};
  try {
    const start = await timedCheck('private mariadbd', 'restore', ctx.signal, async () => {
      const server = await startPrivateMariadb({
        datadir: join(ctx.tempDir, 'mariadb', 'data'),
        runDir: join(ctx.tempDir, 'mariadb', 'run'),
        initialize: true,
        env: ctx.env,
        signal: ctx.signal,
      });
      box.server = server;
      const version = (await server.sql('SELECT VERSION()')).trim();
      return {
        ok: true,
        found: `MariaDB ${version} on an empty data directory, socket only${server.isolated ? ', in a network namespace of its own' : ''}`,
        details: { version, isolated: server.isolated },
      };
    });
    checks.push(start);
    const running = box.server;
    if (!start.ok || !running) return [...checks, skippedCheck('load dump', 'restore', 'the private server did not start')];
    let loaded: { databases: string[]; all: boolean; bytes: number } | undefined;
    const load = await timedCheck('load dump', 'restore', ctx.signal, async () => {
      try {
        loaded = await loadDumps(running, source, ctx);
      } catch (error) {
        // A statement of the dump the server refused is the dump's fault; anything else (a full disk, a client that died) the host's.
        if (!dumpRefused(errorMessage(error))) throw error;
        return { ok: false, found: errorMessage(error), failure: 'data' };
      }
      return {
        ok: true,
        found: `${loaded.bytes} bytes of dump loaded (${loaded.all ? 'all databases' : loaded.databases.join(', ')})`,
        details: { bytes: loaded.bytes, databases: loaded.all ? 'all' : loaded.databases },
      };
    });
    checks.push(load);
    if (!load.ok || !loaded) {
      checks.push(
        skippedCheck('mariadb-check', 'check', 'the dump did not load'),
        skippedCheck('row counts', 'check', 'the dump did not load'),
      );
      return checks;
    }
    const what = loaded;
    const databases = what.all
      ? (await running.sql('SHOW DATABASES')).split('\n').filter((db) => db && !SYSTEM_DATABASES.has(db))
      : what.databases;
    checks.push(
      await timedCheck('mariadb-check', 'check', ctx.signal, async () => {
        const check = await requireTool(MARIADB_CHECK, ctx.env);
        // `--`: a database the dump made (`--plugin-dir=…`, `--default-auth=…`) is a name, never an option.
        const result = await running.client(
          check,
          ['--check', ...(ctx.thorough ? ['--extended'] : []), '--databases', '--', ...databases],
          {
            doing: 'mariadb-check',
          },
        );
        const parsed = parseMariadbCheck(result.stdout);
        return {
          ok: parsed.failed.length === 0,
          found:
            parsed.failed.length === 0
              ? `${parsed.tables} tables OK${ctx.thorough ? ' (extended)' : ''}`
              : `${parsed.failed.length} of ${parsed.tables} tables failed: ${parsed.failed
                  .slice(0, 5)
                  .map((f) => `${f.table}: ${f.problem}`)
                  .join('; ')}`,
          details: { tables: parsed.tables, failed: parsed.failed, extended: ctx.thorough },
        };
      }),
    );
    checks.push(
      await timedCheck('row counts', 'check', ctx.signal, async () => {
        const list = databases.map((db) => `'${db.replace(/\\/g, '\\\\').replace(/'/g, "\\'")}'`).join(',');
        const tables = (
          await running.sql(
            `SELECT TABLE_SCHEMA, TABLE_NAME FROM information_schema.TABLES WHERE TABLE_TYPE = 'BASE TABLE' AND TABLE_SCHEMA IN (${list || "''"}) ORDER BY 1, 2`,
          )
        )
          .split('\n')
          .filter(Boolean)
          .map((line) => line.split('\t') as [string, string]);
        const rows: Record<string, number> = {};
        // Exact counts, a few tables per query.
        for (let at = 0; at < tables.length; at += 50) {
          const batch = tables.slice(at, at + 50);
          const sql = batch
            .map(
              ([db, table]) =>
                `SELECT '${`${db}.${table}`.replace(/\\/g, '\\\\').replace(/'/g, "\\'")}', COUNT(*) FROM ${quoteName(db)}.${quoteName(table)}`,
            )
            .join(' UNION ALL ');
          for (const line of (await running.sql(sql)).split('\n').filter(Boolean)) {
            const [name, count] = line.split('\t');
            rows[name ?? ''] = Number(count);
          }
        }
        const total = Object.values(rows).reduce((a, b) => a + b, 0);
        const shown = Object.entries(rows)
          .slice(0, 10)
          .map(([name, count]) => `${name} ${count}`)
          .join(', ');
        return {
          ok: true,
          found: `${tables.length} tables, ${total} rows${shown ? `: ${shown}${tables.length > 10 ? ', …' : ''}` : ''}`,
          details: { tables: tables.length, rows },
        };
      }),
    );
    return checks;
  } finally {
    await box.server?.stop();
  }
}
