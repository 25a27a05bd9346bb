import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, readFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { CairnError } from '../../../agent/core/errors.ts';
import { LogArchive, type LogFileRecord } from '../../../agent/core/log-archive.ts';
import type { ReplayPlan } from '../../../agent/core/log-chain.ts';
import { silentProgress } from '../../../agent/progress/progress.ts';
import { parseBinlog } from '../../../agent/pitr/binlog-parser.ts';
import { binlogRecord } from '../../../agent/pitr/binlog-push.ts';
import { replayMariadb } from '../../../agent/pitr/binlog-replay.ts';
import type { ReplayContext } from '../../../agent/pitr/replay.ts';
import { missingMariadb, startMariadb, type MariadbServer } from '../../helpers/mariadb.ts';
import { fileRepo, initSmallRepo, tempDir } from '../../helpers/repo.ts';

const skip = missingMariadb();

/**
 * What the replay refuses before it starts a server: archived bytes that are
 * not what was recorded, and a binlog cut inside a transaction (a crash). The
 * replays themselves run in mariadb-pitr.test.ts.
 */
describe('binlog replay refuses a damaged archive and a binlog cut inside a transaction', { skip }, () => {
  let server: MariadbServer;
  let work: Awaited<ReturnType<typeof tempDir>>;
  let repo: Awaited<ReturnType<typeof initSmallRepo>>;
  let closed: Buffer;
  let name: string;
  before(async () => {
    server = await startMariadb();
    server.sql(
      'CREATE DATABASE r; CREATE TABLE r.t (id INT PRIMARY KEY) ENGINE=InnoDB; INSERT INTO r.t VALUES (1); INSERT INTO r.t VALUES (2); FLUSH BINARY LOGS',
    );
    name = server.sql('SHOW BINARY LOGS').trim().split('\n').at(-2)?.split('\t')[0] as string;
    closed = await readFile(join(server.datadir, name));
    work = await tempDir('binlog-replay');
    repo = await initSmallRepo(fileRepo(join(work.path, 'repo')));
  });
  after(async () => {
    await server?.stop();
    await work?.remove();
  });

  /** Each case archives into its own stream: the cut file has the original's key. */
  async function archived(archive: LogArchive, data: Buffer): Promise<LogFileRecord> {
    const info = parseBinlog(data, name);
    const record = binlogRecord(name, data, info, { archive, host: 'test', closed: info.closed });
    await archive.putFile(record.key, data);
    return record;
  }

  function context(archive: LogArchive, files: LogFileRecord[], directory: string): ReplayContext {
    const plan: ReplayPlan = {
      stream: archive.stream,
      window: {
        snapshot: {
          id: 'f'.repeat(64),
          time: '2026-01-01T00:00:00.000Z',
          endTime: '2026-01-01T00:00:01.000Z',
          host: 'test',
          engine: 'mariadb',
          engineMetadata: { binlogFile: name, binlogPosition: 4 },
          totalBytes: 0,
        },
        line: 'test',
        from: '2026-01-01T00:00:01.000Z',
        to: '2099-01-01T00:00:00.000Z',
        files,
        endedBy: 'end',
        startPosition: 4,
      },
      target: { time: '2099-01-01T00:00:00.000Z' },
      files,
      bytes: files.reduce((n, f) => n + f.size, 0),
      describe: 'time 2099-01-01T00:00:00.000Z',
    };
    return { directory, plan, archive, cairnArgv: [], env: process.env, progress: silentProgress, tempDir: join(work.path, 'replay-temp') };
  }

  async function refusal(ctx: ReplayContext, code: string, pattern: RegExp): Promise<void> {
    await assert.rejects(replayMariadb(ctx), (error: unknown) => {
      assert.ok(error instanceof CairnError, String(error));
      assert.equal(error.code, code);
      assert.match(error.message, pattern);
      return true;
    });
    assert.deepEqual(await readdir(ctx.directory), [], 'nothing was written to the datadir: no server was started');
  }

  it('a file whose archived bytes do not match its record is damaged', async () => {
    const archive = new LogArchive(repo, 'mariadb-damaged');
    const record = await archived(archive, closed);
    const datadir = join(work.path, 'datadir-1');
    await mkdir(datadir);
    await refusal(context(archive, [{ ...record, hash: '0'.repeat(64) }], datadir), 'Cairn.Damaged', /does not match its record's hash/);
  });

  it('a binlog that ends inside a transaction (no ROTATE or STOP) is not replayed past that transaction', async () => {
    const info = parseBinlog(closed, name);
    const last = info.transactions.at(-1);
    assert.ok(last);
    // Cut just before the last transaction's XID event (19-byte header, 8-byte xid, 4-byte checksum): the crash case.
    const cut = closed.subarray(0, last.end - 31);
    const cutInfo = parseBinlog(cut, name);
    assert.deepEqual([cutInfo.closed, cutInfo.transactions.at(-1)?.complete], [false, false]);
    const archive = new LogArchive(repo, 'mariadb-cut');
    const record = await archived(archive, cut);
    const datadir = join(work.path, 'datadir-2');
    await mkdir(datadir);
    await refusal(context(archive, [record], datadir), 'Cairn.Failure', new RegExp(`ends inside transaction ${last.gtid}`));
  });
});
