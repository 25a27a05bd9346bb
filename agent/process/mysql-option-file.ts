import { randomBytes } from 'node:crypto';
import { rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { MysqlConnection } from '../core/engine-options/connection.ts';
import { CairnError } from '../core/errors.ts';
import { databasePassword } from './db-password.ts';

/**
 * How the MariaDB/MySQL clients (mariadb, mariadb-dump, mariabackup,
 * mariadb-binlog) reach a server, shared by the engines and the binlog push.
 * The password never goes on a command line: it is written to a private
 * option file passed with --defaults-extra-file (mode 0600, removed afterwards).
 */
export type { MysqlConnection };

export interface OptionFile {
  args: string[];
  dispose(): Promise<void>;
}

export async function mysqlOptionFile(connection: MysqlConnection, env: NodeJS.ProcessEnv, tempDir: string): Promise<OptionFile> {
  if (connection.defaultsFile) return { args: [`--defaults-extra-file=${connection.defaultsFile}`], dispose: async () => undefined };
  const password = await databasePassword(connection.passwordFile, env, 'MYSQL_PWD');
  const lines = ['[client]'];
  if (connection.user) lines.push(`user=${quote(connection.user, 'the database user')}`);
  if (password !== undefined) lines.push(`password=${quote(password, 'the database password')}`);
  if (connection.host) lines.push(`host=${quote(connection.host, '--db-host')}`);
  if (connection.port) lines.push(`port=${connection.port}`);
  if (connection.socket) lines.push(`socket=${quote(connection.socket, '--db-socket')}`);
  if (connection.host && !connection.socket) lines.push('protocol=TCP');
  const path = join(tempDir, `client-${randomBytes(6).toString('hex')}.cnf`);
  await writeFile(path, `${lines.join('\n')}\n`, { mode: 0o600 });
  return { args: [`--defaults-extra-file=${path}`], dispose: () => rm(path, { force: true }) };
}

/**
 * A value as the clients read it back from an option file: quoted, with the escapes they undo
 * (`\\`, `\"`, `\n`, `\r`, `\t`). A line break left raw would end the value there and make the rest
 * a line of its own: an option of the client's (`--…`), and in its error message part of the
 * password. NUL has no escape: refused, without repeating the value.
 */
function quote(value: string, what: string): string {
  if (value.includes('\0'))
    throw new CairnError('Cairn.Usage', `${what} contains a NUL character, which no MariaDB/MySQL option file can hold`, {
      hint: 'check the value (a password file read whole, binary data?)',
    });
  const escapes: Record<string, string> = { '\\': '\\\\', '"': '\\"', '\n': '\\n', '\r': '\\r', '\t': '\\t' };
  return `"${value.replace(/[\\"\n\r\t]/g, (c) => escapes[c] ?? c)}"`;
}

/** Turns the client's own error text into a message that names the fix. */
export function explainMysqlError(stderr: string): string | undefined {
  if (/Access denied/i.test(stderr)) return 'the server refused the login: check the user and CAIRN_DB_PASSWORD / --db-password-file';
  if (/Can't connect|Connection refused|No such file or directory.*socket/i.test(stderr))
    return 'the server is not reachable: check it runs and --db-host/--db-port/--db-socket';
  if (/Unknown database/i.test(stderr)) return 'that database does not exist on the server';
  return undefined;
}
