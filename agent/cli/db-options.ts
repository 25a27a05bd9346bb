import { Option } from 'commander';
import { collect } from './context.ts';

/** Database connection flags; each also reads an environment variable. The password only from a file or CAIRN_DB_PASSWORD. */
export const dbOptions = {
  host: () => new Option('--db-host <host>', 'database server host').env('CAIRN_DB_HOST'),
  port: () => new Option('--db-port <port>', 'database server port').env('CAIRN_DB_PORT'),
  socket: () => new Option('--db-socket <path>', 'database server Unix socket').env('CAIRN_DB_SOCKET'),
  user: () => new Option('--db-user <user>', 'database user').env('CAIRN_DB_USER'),
  passwordFile: () => new Option('--db-password-file <file>', 'read the database password from this file (or set CAIRN_DB_PASSWORD)'),
  defaultsFile: () => new Option('--db-defaults-file <file>', 'MariaDB/MySQL option file with the client settings'),
  name: () => new Option('--db-name <name>', 'database to back up (repeatable; default: all)').argParser(collect).default([]),
};
