import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { CairnError } from '../core/errors.ts';

/**
 * A cluster's identity, from global/pg_control: the WAL archive's stream is
 * `pg-<system identifier>`, and the postgres engine records it with each base
 * backup. Kept apart from pitr/wal-metadata.ts so the thin WAL clients (run
 * once per segment) load nothing heavy.
 */

/** The first 8 bytes of pg_control (uint64, little-endian on every platform PostgreSQL writes it on here). */
export function systemIdentifier(pgControl: Buffer): string {
  if (pgControl.length < 8)
    throw new CairnError('Cairn.InvalidInput', 'global/pg_control is shorter than 8 bytes', {
      hint: 'is this a PostgreSQL data directory?',
    });
  return pgControl.readBigUInt64LE(0).toString();
}

export async function streamOfDataDirectory(dataDir: string): Promise<string> {
  let control: Buffer;
  try {
    control = await readFile(join(dataDir, 'global', 'pg_control'));
  } catch (cause) {
    throw new CairnError('Cairn.Usage', `cannot read ${join(dataDir, 'global', 'pg_control')}: not a PostgreSQL data directory`, {
      hint: 'wal-push runs as archive_command, where the working directory is the data directory; elsewhere give --stream pg-<system identifier>',
      cause,
    });
  }
  return `pg-${systemIdentifier(control)}`;
}
