import { z } from 'zod';
import { connectionFlags, databasesFlag, defaultsFileFlag } from './flags.ts';
import { databasesField, mysqlConnectionShape } from './connection.ts';
import { defineEngineSpec } from './spec.ts';

export const mysqldumpSpec = defineEngineSpec({
  name: 'mysqldump',
  description: 'MariaDB/MySQL logical dump (mariadb-dump --single-transaction), one file per database, binlog coordinates recorded',
  schema: z.object({
    ...mysqlConnectionShape,
    /** Databases to dump, one file each; empty = every database (one file, with users and grants). */
    databases: databasesField,
  }),
  flags: [...Object.values(connectionFlags), defaultsFileFlag, databasesFlag],
  capabilities: { kind: 'logical', drill: true },
});
