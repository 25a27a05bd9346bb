import { z } from 'zod';
import { connectionFlags, databasesFlag, parseJobs } from './flags.ts';
import { databasesField, serverConnectionShape } from './connection.ts';
import { defineEngineSpec } from './spec.ts';

export const pgdumpSpec = defineEngineSpec({
  name: 'pgdump',
  description: 'PostgreSQL logical dump (pg_dump -Fc per database, plus pg_dumpall --globals-only)',
  schema: z.object({
    ...serverConnectionShape,
    /** Databases to dump (one custom-format file each); empty = every database that accepts connections. */
    databases: databasesField,
    /** pg_restore --jobs; above 1 the dump is first written to local temp space (pg_restore needs a file then). */
    jobs: z.coerce.number().int().min(1).max(64).default(1),
  }),
  flags: [
    ...Object.values(connectionFlags),
    databasesFlag,
    {
      flags: '--jobs <n>',
      description: 'pgdump: parallel pg_restore jobs (above 1 the dump is written to --temp-dir first)',
      key: 'jobs',
      commands: ['restore'],
      parse: parseJobs,
    },
  ],
  capabilities: { kind: 'logical', drill: true },
});
