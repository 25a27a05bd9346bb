// A process that starts one of the drills' private servers under `dir`, says `ready`, and waits to be
// killed (private-server-lifetime.test.ts kills it with SIGKILL and watches the server).
import { join } from 'node:path';
import { startPrivateMariadb } from '../../../agent/engines/private-mariadb.ts';
import { startPrivatePostgres } from '../../../agent/engines/private-postgres.ts';

const [kind, dir] = process.argv.slice(2) as [string, string];
if (kind === 'mariadb') {
  await startPrivateMariadb({ datadir: join(dir, 'data'), initialize: true, runDir: join(dir, 'run'), env: process.env });
} else if (kind === 'postgres') {
  await startPrivatePostgres({
    dataDir: join(dir, 'data'),
    initialize: true,
    runDir: join(dir, 'run'),
    fast: true,
    scratchDir: dir,
    env: process.env,
  });
} else {
  throw new Error(`no private server ${kind}`);
}
process.stdout.write('ready\n');
setInterval(() => undefined, 1 << 30);
