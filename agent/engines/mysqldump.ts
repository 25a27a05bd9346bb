import type { z } from 'zod';
import { mysqldumpSpec } from '../core/engine-options/mysqldump.ts';
import { CairnError } from '../core/errors.ts';
import { explainMysqlError, mysqlOptionFile, type MysqlConnection } from '../process/mysql-option-file.ts';
import { findBinary } from '../process/find-binary.ts';
import { ProcessError, run, stream } from '../process/run.ts';
import { parseEngineOptions } from './engine-helpers.ts';
import type { Engine, EngineContext, EngineMetadata, SnapshotSink } from './engine.ts';
import { drillMysqldump, MYSQLDUMP_DRILL_TOOLS } from './mysqldump-drill.ts';

export { mysqldumpSpec };
type Options = z.infer<typeof mysqldumpSpec.schema>;

/**
 * Finds the dump's recorded consistency point while the dump streams past: the
 * binlog file and position are in its first lines; MariaDB prints the matching
 * GTID position at the very end ("deferred"), so the tail is watched too.
 */
function watchCoordinates(metadata: EngineMetadata): (chunk: Buffer) => void {
  let head = '';
  let tail = '';
  return (chunk) => {
    const text = chunk.toString('latin1');
    if (head.length < 256 * 1024) {
      head += text;
      const file = /CHANGE MASTER TO MASTER_LOG_FILE='([^']+)', MASTER_LOG_POS=(\d+)/.exec(head);
      if (file) {
        metadata.binlogFile = file[1];
        metadata.binlogPosition = Number(file[2]);
      }
    }
    tail = (tail + text).slice(-8192);
    const gtid = /SET GLOBAL gtid_slave_pos='([^']*)'/.exec(tail);
    if (gtid) metadata.gtid = gtid[1];
  };
}

/**
 * Logical backups with mariadb-dump (or mysqldump): a consistent snapshot of
 * InnoDB tables with --single-transaction, routines, triggers and events, and
 * the binlog coordinates and GTID of that point (when binary logging is on).
 */
export const mysqldumpEngine: Engine<Options> = {
  name: mysqldumpSpec.name,
  description: mysqldumpSpec.description,
  spec: mysqldumpSpec,
  requires: [
    'mariadb-dump or mysqldump',
    'mariadb or mysql client',
    'SELECT, SHOW VIEW, TRIGGER, EVENT, LOCK TABLES, RELOAD, REPLICATION CLIENT (BINLOG MONITOR on MariaDB)',
  ],

  parseOptions(raw) {
    return parseEngineOptions('mysqldump', mysqldumpSpec.schema, raw);
  },

  async check(options, ctx) {
    await client(options, ctx, 'SELECT 1');
  },

  async backup(options, sink, ctx) {
    const dump = await findBinary(['mariadb-dump', 'mysqldump']);
    const logBin = (await client(options, ctx, 'SELECT @@log_bin')).trim() === '1';
    const version = (await client(options, ctx, 'SELECT VERSION()')).trim();
    const metadata: EngineMetadata = { serverVersion: version, binlog: logBin, databases: options.databases };
    const base = [
      '--single-transaction',
      '--routines',
      '--triggers',
      '--events',
      '--hex-blob',
      ...(logBin ? ['--master-data=2', '--gtid'] : []),
    ];
    if (options.databases.length === 0) {
      await dumpTo(sink, 'all-databases.sql', dump, options, ctx, [...base, '--all-databases'], metadata);
    } else {
      for (const db of options.databases) await dumpTo(sink, `${db}.sql`, dump, options, ctx, [...base, db], metadata);
    }
    return metadata;
  },

  async restore(options, source, ctx) {
    const files = await source.list();
    const target = ctx.target.database;
    const dumps = files.filter((f) => f.path.endsWith('.sql'));
    if (target && (dumps.length !== 1 || dumps[0]?.path === 'all-databases.sql')) {
      throw new CairnError('Cairn.Usage', 'restoring under another database name needs a snapshot of exactly one database', {
        hint: 'back up with --db-name NAME to rename on restore',
      });
    }
    const opt = await mysqlOptionFile(options, ctx.env, ctx.tempDir);
    const client = await findBinary(['mariadb', 'mysql']);
    const sandbox = await sandboxArgs(client, ctx);
    try {
      for (const file of dumps) {
        const db = file.path === 'all-databases.sql' ? undefined : (target ?? file.path.replace(/\.sql$/, ''));
        if (db)
          await run([client, ...opt.args, '-e', `CREATE DATABASE IF NOT EXISTS \`${db.replace(/`/g, '``')}\``], {
            env: ctx.env,
            hint: 'check the connection options',
          });
        // --database=: a dump's file name (`--skip-sandbox.sql`) is never read as an option of the client.
        await run([client, ...opt.args, ...sandbox, ...(db ? [`--database=${db}`] : [])], {
          stdin: source.open(file.path),
          env: ctx.env,
          signal: ctx.signal,
        }).catch((error: unknown) => rethrow(error, `restoring ${file.path}`));
        ctx.progress.warn(`restored ${file.path}${db ? ` into database ${db}` : ''}`);
      }
    } finally {
      await opt.dispose();
    }
  },

  // A private mariadbd on an empty data directory; never the plan's server (mysqldump-drill.ts).
  drill: drillMysqldump,
  drillTools: MYSQLDUMP_DRILL_TOOLS,
};

/**
 * A dump is whatever its maker wrote, and the client obeys its own commands in it: `\! cmd` runs a
 * shell command as whoever restores. MariaDB's client refuses them under `--sandbox` (10.5.25 and
 * later); an older client or MySQL's has no such switch, so the restore goes on with a warning
 * naming the risk (the dump is the repository's, but a host with create rights could have written it).
 */
async function sandboxArgs(client: string, ctx: EngineContext): Promise<string[]> {
  const help = await run([client, '--no-defaults', '--help'], { env: ctx.env }).then(
    (r) => r.stdout,
    () => '',
  );
  if (/^\s*--sandbox\b/m.test(help)) return ['--sandbox'];
  ctx.progress.warn(
    `${client} has no --sandbox: client commands in the dump (\\! runs a shell command) are not refused; restore only snapshots you trust, or use a MariaDB client 10.5.25 or later`,
  );
  return [];
}

async function dumpTo(
  sink: SnapshotSink,
  path: string,
  dump: string,
  options: MysqlConnection,
  ctx: EngineContext,
  args: string[],
  metadata: EngineMetadata,
): Promise<void> {
  const opt = await mysqlOptionFile(options, ctx.env, ctx.tempDir);
  try {
    const child = stream([dump, ...opt.args, ...args], {
      env: ctx.env,
      signal: ctx.signal,
      onStderr: (line) => ctx.progress.warn(`${dump}: ${line}`),
    });
    const stored = sink.addStream(path, observe(child.stdout, watchCoordinates(metadata)));
    // Whichever fails first: the dump (its stderr says why) or storing it.
    await Promise.all([stored, child.done.catch((error: unknown) => rethrow(error, `dumping ${path}`))]);
  } finally {
    await opt.dispose();
  }
}

async function* observe(source: AsyncIterable<Buffer>, see: (chunk: Buffer) => void): AsyncGenerator<Buffer> {
  for await (const chunk of source) {
    see(chunk);
    yield chunk;
  }
}

async function client(options: MysqlConnection, ctx: EngineContext, sql: string): Promise<string> {
  const opt = await mysqlOptionFile(options, ctx.env, ctx.tempDir);
  try {
    const binary = await findBinary(['mariadb', 'mysql']);
    return (
      await run([binary, ...opt.args, '-N', '-B', '-e', sql], { env: ctx.env }).catch((error: unknown) => rethrow(error, 'connecting'))
    ).stdout;
  } finally {
    await opt.dispose();
  }
}

function rethrow(error: unknown, doing: string): never {
  if (error instanceof ProcessError) {
    throw new CairnError('Cairn.Failure', `${doing} failed: ${error.message}`, {
      hint: explainMysqlError(error.stderr) ?? error.hint,
      cause: error,
    });
  }
  throw error;
}
