import { CairnError } from '../core/errors.ts';
import { run } from './run.ts';

/** The first of these programs that is on PATH (e.g. mariadb-dump, else mysqldump). */
export async function findBinary(names: readonly string[]): Promise<string> {
  for (const name of names) {
    try {
      await run(['sh', '-c', `command -v ${name}`]);
      return name;
    } catch {
      // try the next name
    }
  }
  throw new CairnError('Cairn.Usage', `none of ${names.join(', ')} is installed`, {
    hint: 'install the database client tools (Debian: apt-get install mariadb-client / postgresql-client)',
  });
}
