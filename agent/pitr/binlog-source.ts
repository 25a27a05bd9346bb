import { join } from 'node:path';
import { diesWithThisProcess } from '../process/death-signal.ts';
import { CairnError } from '../core/errors.ts';
import { explainMysqlError, mysqlOptionFile, type MysqlConnection, type OptionFile } from '../process/mysql-option-file.ts';
import { ProcessError, run } from '../process/run.ts';

/** A MariaDB server's binlogs as binlog-push reads them: over the replication protocol, never from its datadir. */

export interface BinlogSourceOptions {
  connection: MysqlConnection;
  env: NodeJS.ProcessEnv;
  signal?: AbortSignal | undefined;
}

export interface ServerFile {
  name: string;
  size: number;
}

export const PRIVILEGES =
  'GRANT REPLICATION SLAVE, BINLOG MONITOR ON *.* TO the user (REPLICATION SLAVE reads the binlogs, BINLOG MONITOR lists them)';

/** The server side: SQL through the `mariadb` client and binlogs through `mariadb-binlog`, with a private option file for the password. */
export class BinlogSource {
  private readonly options: BinlogSourceOptions;
  private readonly optionFile: OptionFile;

  private constructor(options: BinlogSourceOptions, optionFile: OptionFile) {
    this.options = options;
    this.optionFile = optionFile;
  }

  static async open(options: BinlogSourceOptions, dir: string): Promise<BinlogSource> {
    return new BinlogSource(options, await mysqlOptionFile(options.connection, options.env, dir));
  }

  dispose(): Promise<void> {
    return this.optionFile.dispose();
  }

  async sql(statement: string): Promise<string[][]> {
    const out = await run(['mariadb', ...this.optionFile.args, '-N', '-B', '-e', statement], {
      env: this.options.env,
      signal: this.options.signal,
    }).catch((error: unknown) => {
      throw explainBinlogError(error, `the query ${statement.split(' ').slice(0, 3).join(' ')} failed`);
    });
    return out.stdout
      .split('\n')
      .filter((line) => line.length > 0)
      .map((line) => line.split('\t'));
  }

  async list(): Promise<ServerFile[]> {
    const rows = await this.sql('SHOW BINARY LOGS');
    if (rows.length === 0)
      throw new CairnError('Cairn.Failure', 'the server lists no binary logs', {
        hint: 'turn binary logging on (log_bin) and restart the server',
      });
    return rows.map(([name, size]) => ({ name: name as string, size: Number(size) }));
  }

  async maxBinlogSize(): Promise<number> {
    return Number((await this.sql('SELECT @@max_binlog_size'))[0]?.[0] ?? 1 << 30);
  }

  /**
   * Creation time and server id of a file, from its first event: what tells an
   * archived file from a new one of the same name without fetching it.
   * mariadb-binlog prints event times in the local time zone, hence TZ=UTC.
   */
  async header(name: string): Promise<{ createdAt: string; serverId: number }> {
    const out = await run(['mariadb-binlog', ...this.optionFile.args, '--read-from-remote-server', '--stop-position=5', name], {
      env: { ...this.options.env, TZ: 'UTC' },
      signal: this.options.signal,
    }).catch((error: unknown) => {
      throw explainBinlogError(error, `reading the header of ${name} from the server failed`);
    });
    const m = /^#(\d{2})(\d{2})(\d{2}) +(\d{1,2}):(\d{2}):(\d{2}) server id (\d+) /m.exec(out.stdout);
    if (!m)
      throw new CairnError('Cairn.Failure', `mariadb-binlog printed no event header for ${name}`, {
        hint: 'check that mariadb-binlog matches the server version',
      });
    const [, yy, mo, dd, hh, mi, ss, server] = m as unknown as [string, string, string, string, string, string, string, string];
    return { createdAt: `20${yy}-${mo}-${dd}T${hh.padStart(2, '0')}:${mi}:${ss}Z`, serverId: Number(server) };
  }

  /** Fetches one whole file as the server has it (--raw writes it under its own name in dir). */
  async fetch(name: string, dir: string): Promise<string> {
    await run(['mariadb-binlog', ...this.optionFile.args, '--read-from-remote-server', '--raw', `--result-file=${dir}/`, name], {
      env: this.options.env,
      signal: this.options.signal,
    }).catch((error: unknown) => {
      throw explainBinlogError(error, `fetching ${name} from the server failed`);
    });
    return join(dir, name);
  }

  /**
   * Streams from `first` on, file after file, until the connection ends or the signal stops it. The
   * client dies with this process, however it ends (`setpriv --pdeathsig KILL`, where the host's
   * setpriv has it): after a SIGKILL of cairn, `--stop-never` kept it streaming, holding a
   * replication connection and writing into a spool no one reads, until someone found it.
   */
  async stream(first: string, dir: string, signal: AbortSignal): Promise<unknown> {
    const argv = await diesWithThisProcess(
      ['mariadb-binlog', ...this.optionFile.args, '--read-from-remote-server', '--raw', '--stop-never', `--result-file=${dir}/`, first],
      this.options.env,
    );
    return run(argv, { env: this.options.env, signal });
  }
}

/** A failed mariadb or mariadb-binlog run as an error that names the fix. */
export function explainBinlogError(error: unknown, what: string): unknown {
  if (!(error instanceof ProcessError)) return error;
  const text = error.stderr;
  let hint = explainMysqlError(text);
  if (/BINLOG MONITOR|REPLICATION SLAVE|REPLICA|privilege/i.test(text)) hint = `the user lacks a privilege: ${PRIVILEGES}`;
  else if (/not using binary logging|binary logging is not enabled/i.test(text))
    hint = 'turn binary logging on (log_bin) and restart the server';
  else if (/Could not find first log file/i.test(text))
    hint = 'the server purged the file meanwhile; run binlog-push again (pitr status shows the gap if it was never archived)';
  return new CairnError('Cairn.Failure', `${what}: ${error.message}`, {
    hint: hint ?? `check the connection options; the user needs ${PRIVILEGES}`,
    cause: error,
  });
}
