import { z } from 'zod';
import { connectionFlags, defaultsFileFlag, ownerFlag, parseJobs } from './flags.ts';
import { mysqlConnectionShape, ownerField } from './connection.ts';
import { defineEngineSpec, type EngineFlag } from './spec.ts';

const parallelFlag: EngineFlag = {
  flags: '--parallel <n>',
  description: 'mariadb engine: files copied at once by mariabackup',
  key: 'parallel',
  commands: ['backup'],
  parse: parseJobs,
};

/** Physical MariaDB backups with mariabackup; their binlogs are the PITR log (`cairn binlog-push`). */
export const mariadbSpec = defineEngineSpec({
  name: 'mariadb',
  description:
    'MariaDB/MySQL physical online backup (mariabackup/xtrabackup --stream=xbstream, split into files), binlog position and GTID recorded',
  schema: z.object({
    ...mysqlConnectionShape,
    /** mariabackup --parallel: files copied at once. */
    parallel: z.coerce.number().int().min(1).max(64).default(1),
    owner: ownerField,
  }),
  flags: [...Object.values(connectionFlags), defaultsFileFlag, parallelFlag, ownerFlag],
  capabilities: { kind: 'physical', pitr: { log: 'binlog', streamPrefix: 'mariadb-' }, drill: true },
});
