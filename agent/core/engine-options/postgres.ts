import { z } from 'zod';
import { connectionFlags, ownerFlag } from './flags.ts';
import { ownerField, serverConnectionShape } from './connection.ts';
import { defineEngineSpec } from './spec.ts';

/** Physical PostgreSQL backups with pg_basebackup; their WAL is the PITR log (archive_command → `cairn wal-push`). */
export const postgresSpec = defineEngineSpec({
  name: 'postgres',
  description:
    'PostgreSQL physical backup (pg_basebackup -Ft -X fetch, streamed and split into files), start/stop LSN, timeline and system identifier recorded',
  schema: z.object({ ...serverConnectionShape, owner: ownerField }),
  flags: [...Object.values(connectionFlags), ownerFlag],
  capabilities: { kind: 'physical', pitr: { log: 'wal', streamPrefix: 'pg-' }, drill: true },
});
