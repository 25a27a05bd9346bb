// Run by drill-scratch.test.ts: swaps <dir>/d (a directory) and <dir>/l (a link to a victim
// directory) under the same names, as fast as it can, until <dir> is gone: what a private server's
// user could do to the data directories it owns while root removes a scratch directory.
import { renameSync } from 'node:fs';
import { join } from 'node:path';

const dir = process.argv[2];
let said = false;
for (;;) {
  try {
    renameSync(join(dir, 'd'), join(dir, 't'));
    renameSync(join(dir, 'l'), join(dir, 'd'));
    renameSync(join(dir, 't'), join(dir, 'l'));
    if (!said) {
      // Swapping now: the test starts removing.
      process.stdout.write('swapping\n');
      said = true;
    }
  } catch {
    try {
      renameSync(dir, dir);
    } catch {
      break;
    }
  }
}
