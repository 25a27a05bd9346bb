import { randomBytes } from 'node:crypto';
import { rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { PgConnection } from '../core/engine-options/connection.ts';
import { databasePassword } from './db-password.ts';

/**
 * How the PostgreSQL clients (psql, pg_dump, pg_basebackup) reach a server:
 * libpq's environment. The password goes into a private PGPASSFILE (mode
 * 0600), never on a command line.
 */
export type { PgConnection };

export interface PgEnvironment {
  env: NodeJS.ProcessEnv;
  dispose(): Promise<void>;
}

export async function pgEnvironment(connection: PgConnection, base: NodeJS.ProcessEnv, tempDir: string): Promise<PgEnvironment> {
  const env: NodeJS.ProcessEnv = { ...base };
  delete env.PGPASSWORD;
  const host = connection.socket ?? connection.host;
  if (host) env.PGHOST = host;
  if (connection.port) env.PGPORT = String(connection.port);
  if (connection.user) env.PGUSER = connection.user;
  const password = await databasePassword(connection.passwordFile, base, 'PGPASSWORD');
  if (password === undefined) return { env, dispose: async () => undefined };
  const path = join(tempDir, `pgpass-${randomBytes(6).toString('hex')}`);
  const escape = (v: string): string => v.replace(/\\/g, '\\\\').replace(/:/g, '\\:');
  await writeFile(path, `*:*:*:*:${escape(password)}\n`, { mode: 0o600 });
  env.PGPASSFILE = path;
  return { env, dispose: () => rm(path, { force: true }) };
}

export function explainPgError(stderr: string): string | undefined {
  if (/password authentication failed|no password supplied/i.test(stderr))
    return 'the server refused the login: check the user and CAIRN_DB_PASSWORD / --db-password-file';
  if (/Connection refused|could not connect|No such file or directory/i.test(stderr))
    return 'the server is not reachable: check it runs and --db-host/--db-port/--db-socket';
  if (/does not exist/i.test(stderr)) return 'that database or role does not exist on the server';
  return undefined;
}
