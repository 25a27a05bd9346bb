import type { z } from 'zod';
import { mariadbSpec } from '../core/engine-options/mariadb.ts';
import { CairnError } from '../core/errors.ts';
import { explainMysqlError, mysqlOptionFile } from '../process/mysql-option-file.ts';
import { findBinary } from '../process/find-binary.ts';
import { ProcessError, run, stream } from '../process/run.ts';
import { giveTo, parseEngineOptions, requireEmptyTarget, requireOwner } from './engine-helpers.ts';
import type { Engine, EngineMetadata, SnapshotSource } from './engine.ts';
import { drillMariadb, mariadbDrillTools } from './mariabackup-drill.ts';
import { splitXbstream } from './xbstream.ts';

export { mariadbSpec };
type Options = z.infer<typeof mariadbSpec.schema>;

/**
 * MariaDB physical, online: `mariabackup --backup --stream=xbstream` (or
 * Percona `xtrabackup` for MySQL, the same stream), split into the datadir's
 * files as it arrives: no full-size copy on local disk, and unchanged files are
 * not stored again. Binlog file, position and GTID come from the tool's report.
 * Restore: the files into an empty datadir, `--prepare`, ownership, ready to start; the grant
 * table's definition is placed last (heldBack).
 */
export const mariabackupEngine: Engine<Options> = {
  name: mariadbSpec.name,
  description: mariadbSpec.description,
  spec: mariadbSpec,
  requires: [
    'mariabackup (or xtrabackup for MySQL)',
    'RELOAD, PROCESS, LOCK TABLES, BINLOG MONITOR (REPLICATION CLIENT on MySQL)',
    'read access to the datadir (run on the database host)',
  ],

  parseOptions(raw) {
    return parseEngineOptions('mariadb', mariadbSpec.schema, raw);
  },

  async check() {
    await findBinary(['mariabackup', 'xtrabackup']);
  },

  async backup(options, sink, ctx) {
    const tool = await findBinary(['mariabackup', 'xtrabackup']);
    const opt = await mysqlOptionFile(options, ctx.env, ctx.tempDir);
    const metadata: EngineMetadata = { tool };
    try {
      // --target-dir only names where the tool would write; with --stream it writes nothing there.
      const child = stream(
        [tool, ...opt.args, '--backup', '--stream=xbstream', `--parallel=${options.parallel}`, `--target-dir=${ctx.tempDir}`],
        {
          env: ctx.env,
          signal: ctx.signal,
          onStderr: (line) => {
            const pos = /binlog position: filename '([^']+)', position '(\d+)'(?:, GTID of the last change '([^']*)')?/.exec(line);
            if (pos) {
              metadata.binlogFile = pos[1];
              metadata.binlogPosition = Number(pos[2]);
              if (pos[3] !== undefined) metadata.gtid = pos[3];
            }
            const lsn = /Redo log \(from LSN (\d+) to (\d+)\) was copied/.exec(line);
            if (lsn) {
              metadata.fromLsn = Number(lsn[1]);
              metadata.toLsn = Number(lsn[2]);
            }
          },
        },
      );
      const [files] = await Promise.all([
        splitXbstream(child.stdout, sink),
        child.done.catch((error: unknown) => {
          if (error instanceof ProcessError)
            throw new CairnError('Cairn.Failure', `${tool} failed: ${error.message}`, {
              hint: explainMysqlError(error.stderr) ?? 'see its output above',
              cause: error,
            });
          throw error;
        }),
      ]);
      metadata.files = files;
    } finally {
      await opt.dispose();
    }
    if (metadata.toLsn === undefined)
      throw new CairnError('Cairn.Failure', `${tool} did not report the copied redo log range; the backup cannot be trusted`);
    return metadata;
  },

  async restore(options, source, ctx) {
    await requireOwner(options.owner, ctx.env);
    const last = await heldBack(source);
    const target = await requireEmptyTarget(ctx.target.directory, 'the MariaDB datadir');
    await source.restoreTo(target, { partial: last });
    const tool = await findBinary(['mariabackup', 'xtrabackup']);
    await run([tool, '--prepare', `--target-dir=${target}`], { env: ctx.env, signal: ctx.signal }).catch((error: unknown) => {
      throw new CairnError('Cairn.Failure', `${tool} --prepare failed: ${error instanceof Error ? error.message : String(error)}`, {
        cause: error,
      });
    });
    await giveTo(target, options.owner, ctx.env);
    await ctx.placeLast(target, last);
  },

  drillTools: mariadbDrillTools,

  /** Prepared and started privately (socket only, no binlog, no replication); mariadb-check of every table, the binlog position read back. */
  async drill(source, ctx) {
    return drillMariadb(source, ctx);
  },
};

/**
 * The file a restore places last. A datadir restored in part, or not yet prepared, starts: InnoDB
 * recovers from the copied redo log and serves what is there, and a table the log does not name is
 * simply missing. Without its grant table's definition the server aborts at start ("Can't open and
 * lock privilege tables"), and `--prepare` does not read it: MariaDB 10.4+ keeps grants in
 * mysql.global_priv, MySQL 5.7 and older MariaDB in mysql.user. MySQL 8 keeps both in mysql.ibd,
 * which `--prepare` needs: nothing is held back there.
 */
async function heldBack(source: SnapshotSource): Promise<string[]> {
  const files = new Set((await source.list()).map((file) => file.path));
  const grants = ['mysql/global_priv.frm', 'mysql/user.frm'].find((path) => files.has(path));
  return grants ? [grants] : [];
}
