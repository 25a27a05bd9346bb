import { constants, statSync, accessSync } from 'node:fs';
import { delimiter, join } from 'node:path';
import { CairnError } from '../core/errors.ts';

/**
 * The first of these programs that is on PATH (e.g. mariadb-dump, else mysqldump): an executable
 * regular file in one of PATH's directories, as the shell's `command -v` finds it, looked up here
 * instead of by starting a shell per name (an engine backup looked twice, ~20 ms each).
 */
export function findBinary(names: readonly string[], path = process.env.PATH ?? ''): Promise<string> {
  // Empty entries (the current directory, to a shell) are skipped: a backup runs no program from where it was started.
  const dirs = path.split(delimiter).filter((dir) => dir !== '');
  for (const name of names) if (dirs.some((dir) => isExecutableFile(join(dir, name)))) return Promise.resolve(name);
  return Promise.reject(
    new CairnError('Cairn.Usage', `none of ${names.join(', ')} is installed`, {
      hint: 'install the database client tools (Debian: apt-get install mariadb-client / postgresql-client)',
    }),
  );
}

function isExecutableFile(file: string): boolean {
  try {
    if (!statSync(file).isFile()) return false;
    accessSync(file, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}
