import { readFile } from 'node:fs/promises';
import { CairnError, errorMessage } from '../core/errors.ts';

/** The database password: from --db-password-file, else CAIRN_DB_PASSWORD, else the client's own variable. */
export async function databasePassword(
  passwordFile: string | undefined,
  env: NodeJS.ProcessEnv,
  clientVariable: string,
): Promise<string | undefined> {
  if (!passwordFile) return env.CAIRN_DB_PASSWORD ?? env[clientVariable];
  try {
    return (await readFile(passwordFile, 'utf8')).replace(/\r?\n$/, '');
  } catch (error) {
    throw new CairnError('Cairn.Usage', `cannot read the database password file ${passwordFile}: ${errorMessage(error)}`, { cause: error });
  }
}
