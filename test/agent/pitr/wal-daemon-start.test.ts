import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readdir, readFile, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { acquireStartLock } from '../../../agent/pitr/wal-daemon-start.ts';
import type { SpoolPaths } from '../../../agent/pitr/wal-spool.ts';
import { deadPid, lockRecord, ownScope } from '../../helpers/lock-records.ts';
import { tempDir } from '../../helpers/repo.ts';

describe('the WAL daemon start lock', () => {
  let dir: { path: string; remove: () => Promise<void> };
  let spool: SpoolPaths;
  before(async () => {
    dir = await tempDir('wal-start');
    const base = `${dir.path}/wal-0123456789abcdef`;
    spool = {
      dir: dir.path,
      socket: `${base}.sock`,
      pid: `${base}.pid`,
      log: `${base}.log`,
      lock: `${base}.lock`,
      prefetch: `${base}.prefetch`,
    };
  });
  after(() => dir.remove());

  it("takes over at once the lock of a starter that died, an older cairn's pid-only lock included", async () => {
    for (const record of [String(await deadPid()), lockRecord(await deadPid(), await ownScope())]) {
      await writeFile(spool.lock, record);
      const held = await acquireStartLock(spool, AbortSignal.timeout(20_000));
      assert.notEqual(held, 'running');
      if (held === 'running') return;
      assert.match(await readFile(spool.lock, 'utf8'), new RegExp(`^${process.pid} `));
      await held.release();
      assert.deepEqual(await readdir(dir.path), []);
    }
  });

  it('lets one starter through at a time, and none once a daemon answers on the socket', async () => {
    const server = createServer();
    let inside = 0;
    try {
      const outcomes = await Promise.all(
        Array.from({ length: 3 }, async () => {
          const held = await acquireStartLock(spool, AbortSignal.timeout(20_000));
          if (held === 'running') return 'running';
          inside++;
          assert.equal(inside, 1, 'two starters went in at once');
          // The starter brings its daemon up before it lets go: the others must find it, not start their own
          // (also one that checked the socket just before, and takes the lock just after: acquireStartLock checks again).
          await new Promise<void>((resolve) => server.listen(spool.socket, resolve));
          inside--;
          await held.release();
          return 'started';
        }),
      );
      assert.deepEqual(outcomes.sort(), ['running', 'running', 'started']);
    } finally {
      // Also on a failure: a server left listening keeps the test process, and the whole run, from ending.
      server.close();
    }
  });
});
