import { readFile } from 'node:fs/promises';
import { CairnError, errorMessage } from '../core/errors.ts';
import { warnIfExposed } from '../core/secret-file.ts';

/** The database password: from --db-password-file, else CAIRN_DB_PASSWORD, else the client's own variable. */
export async function databasePassword(
  passwordFile: string | undefined,
  env: NodeJS.ProcessEnv,
  clientVariable: string,
): Promise<string | undefined> {
  if (!passwordFile) return env.CAIRN_DB_PASSWORD ?? env[clientVariable];
  try {
    const password = (await readFile(passwordFile, 'utf8')).replace(/\r?\n$/, '');
    await warnIfExposed(passwordFile, 'the database password file');
    return password;
  } catch (error) {
    throw new CairnError('Cairn.Usage', `cannot read the database password file ${passwordFile}: ${errorMessage(error)}`, { cause: error });
  }
}
