import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { chmod, mkdir, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { drill } from '../../../agent/commands/drill.ts';
import { CairnError } from '../../../agent/core/errors.ts';
import { Repository } from '../../../agent/core/repository.ts';
import { parseMariadbCheck } from '../../../agent/engines/mysqldump-drill.ts';
import { FileStorage } from '../../../agent/storage/file.ts';
import { runCli, lastOfType } from '../../helpers/cli.ts';
import { missingMariadb, startMariadb, type MariadbServer } from '../../helpers/mariadb.ts';
import { processesMentioning } from '../../helpers/processes.ts';
import { PASSPHRASE, tempDir } from '../../helpers/repo.ts';

describe('parseMariadbCheck', () => {
  it('counts tables and names the ones with an error or a status other than OK', () => {
    const parsed = parseMariadbCheck(
      [
        'shop.customers                                     OK',
        'shop.orders',
        'Warning  : InnoDB: Index id is marked as corrupted',
        'error    : Corrupt',
        'shop.items',
        "note     : The storage engine for the table doesn't support check",
        'status   : OK',
      ].join('\n'),
    );
    assert.equal(parsed.tables, 3);
    assert.deepEqual(parsed.failed, [{ table: 'shop.orders', problem: 'Corrupt' }]);
  });
});

/** The command lines of the processes that mention `path` (a private server left behind would). */
function processesUsing(path: string): string[] {
  return processesMentioning(path).map((found) => found.cmdline);
}

describe('a cancelled mysqldump drill', { skip: missingMariadb() }, () => {
  let live: MariadbServer;
  let work: Awaited<ReturnType<typeof tempDir>>;
  before(async () => {
    live = await startMariadb();
    work = await tempDir('drill-cancel');
    await chmod(work.path, 0o711);
  });
  after(async () => {
    await live?.stop();
    await work?.remove();
  });

  it('stops its private server and removes its scratch directory', async () => {
    const env = { CAIRN_REPOSITORY: `${work.path}/repo`, CAIRN_PASSWORD: PASSPHRASE, CAIRN_DB_PASSWORD: live.password };
    assert.equal((await runCli(['init'], env)).code, 0);
    live.sql('CREATE DATABASE shop');
    live.sql('CREATE TABLE t (id INT PRIMARY KEY) ENGINE=InnoDB; INSERT INTO t SELECT seq FROM seq_1_to_100', 'shop');
    const backup = await runCli(
      [
        'backup',
        '--engine',
        'mysqldump',
        '--db-host',
        '127.0.0.1',
        '--db-port',
        String(live.port),
        '--db-user',
        live.user,
        '--db-name',
        'shop',
      ],
      env,
    );
    assert.equal(backup.code, 0, backup.stderr);
    const snapshotId = (lastOfType(backup, 'summary') as { snapshotId: string }).snapshotId;

    const scratch = join(work.path, 'scratch');
    await mkdir(scratch);
    const repo = await Repository.open(new FileStorage(`${work.path}/repo`), PASSPHRASE);
    const controller = new AbortController();
    let serverSeen: string[] = [];
    let failure: unknown;
    try {
      await drill(repo, {
        snapshot: snapshotId,
        thorough: false,
        concurrency: 2,
        who: { host: 'test-host', user: 'tester' },
        scratchDir: scratch,
        signal: controller.signal,
        env: process.env,
        progress: {
          progress: () => undefined,
          // The dump is in: the private server is up. Look at it, then cancel.
          warn: (message) => {
            if (!message.startsWith('drill: loaded')) return;
            serverSeen = processesUsing(scratch);
            controller.abort();
          },
        },
      });
    } catch (error) {
      failure = error;
    }
    assert.ok(failure instanceof CairnError, String(failure));
    assert.equal(failure.code, 'Cairn.Cancelled');
    assert.ok(
      serverSeen.some((cmd) => cmd.includes('mariadbd') && cmd.includes('--skip-networking')),
      `the private server ran: ${serverSeen.join('; ')}`,
    );
    assert.deepEqual(processesUsing(scratch), [], 'no process of the drill is left');
    assert.deepEqual(await readdir(scratch), [], 'the scratch directory is gone');
  });
});
