import { z } from 'zod';

/**
 * Option fields the database engines share. Ports are coerced: CLI flags and
 * environment variables arrive as text, plans as numbers.
 */
export const serverConnectionShape = {
  host: z.string().optional(),
  port: z.coerce.number().int().min(1).max(65535).optional(),
  socket: z.string().optional(),
  user: z.string().optional(),
  /** A file holding the password (else CAIRN_DB_PASSWORD, else the client's own variable). */
  passwordFile: z.string().optional(),
};

/** MariaDB/MySQL clients also take an option file of their own. */
export const mysqlConnectionShape = {
  ...serverConnectionShape,
  /** An existing option file with [client] settings (user, password, host...). */
  defaultsFile: z.string().optional(),
};

export const pgConnectionSchema = z.object(serverConnectionShape);
export type PgConnection = z.infer<typeof pgConnectionSchema>;
export const mysqlConnectionSchema = z.object(mysqlConnectionShape);
export type MysqlConnection = z.infer<typeof mysqlConnectionSchema>;

/** Databases to back up; empty = every database. */
export const databasesField = z.array(z.string().min(1)).default([]);

/** Physical restores: the user the server runs as, who must own the restored data directory. */
export const ownerField = z.string().optional();

/** etcd's client URLs (comma-separated or a list) and TLS files, as etcdctl's --endpoints/--cacert/--cert/--key take them. */
export const etcdConnectionShape = {
  host: z.string().default('127.0.0.1'),
  port: z.coerce.number().int().min(1).max(65535).default(2379),
  /** Client URLs, tried in order when one is unreachable. Default: http://host:port (https when TLS files are given). */
  endpoints: z.union([z.string(), z.array(z.string())]).optional(),
  cacert: z.string().optional(),
  cert: z.string().optional(),
  key: z.string().optional(),
};
