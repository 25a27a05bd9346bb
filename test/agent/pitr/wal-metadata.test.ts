import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { access } from 'node:fs/promises';
import { classifyWalFile, describeWalFile, findPgWaldump, parseWaldump } from '../../../agent/pitr/wal-metadata.ts';
import { systemIdentifier } from '../../../agent/process/pg-control.ts';
import { logFileRecordSchema } from '../../../agent/core/log-archive.ts';
import { CairnError } from '../../../agent/core/errors.ts';

// Lines as pg_waldump 15 prints them with TZ=UTC (-r Transaction).
const WALDUMP = `rmgr: Transaction len (rec/tot):     66/    66, tx:        720, lsn: 0/014F9EE0, prev 0/014F9E60, desc: COMMIT 2026-11-23 17:52:56.238207 UTC; inval msgs: catcache 21
rmgr: Transaction len (rec/tot):     34/    34, tx:        731, lsn: 0/015004B0, prev 0/01500438, desc: COMMIT 2026-11-23 17:52:57.001999 UTC
rmgr: Transaction len (rec/tot):    142/   142, tx:        724, lsn: 0/0151FF90, prev 0/0151FF50, desc: ABORT 2026-11-23 17:52:58.638628 UTC; rels: base/5/16390
rmgr: Transaction len (rec/tot):     50/    50, tx:          0, lsn: 0/0151FFA0, prev 0/0151FF90, desc: COMMIT_PREPARED 742: 2026-11-23 17:52:59.5 UTC
rmgr: Transaction len (rec/tot):     70/    70, tx:        745, lsn: 0/0151FFB0, prev 0/0151FFA0, desc: PREPARE gid abc: 2026-11-23 17:53:00.000000 UTC
pg_waldump: error: error in WAL record at 0/1FFFFD8: invalid record length at 0/2000000: wanted 24, got 0
`;

describe('WAL file metadata', () => {
  it('reads commit and abort times (milliseconds, UTC) and the transaction id range from pg_waldump', () => {
    assert.deepEqual(parseWaldump(WALDUMP), {
      firstEventTime: '2026-11-23T17:52:56.238Z',
      lastEventTime: '2026-11-23T17:52:59.500Z',
      xids: [720, 731],
    });
    assert.deepEqual(parseWaldump('pg_waldump: error: could not find a valid record after 0/3000000\n'), {
      firstEventTime: null,
      lastEventTime: null,
    });
  });

  it('classifies what PostgreSQL archives: segments as wal, history, backup and partial files as history', () => {
    assert.deepEqual(classifyWalFile('000000010000000A000000FF'), { kind: 'wal', timeline: 1 });
    assert.deepEqual(classifyWalFile('0000000A.history'), { kind: 'history', timeline: 10 });
    assert.deepEqual(classifyWalFile('000000010000000000000003.00000028.backup'), { kind: 'history', timeline: 1 });
    assert.deepEqual(classifyWalFile('000000020000000000000005.partial'), { kind: 'history', timeline: 2 });
    for (const bad of [
      'RECOVERYXLOG',
      '00000001000000000000000',
      '000000010000000000000003.tmp',
      '../000000010000000000000003',
      '000000010000000a000000ff',
    ]) {
      assert.equal(classifyWalFile(bad), undefined, bad);
    }
  });

  it('describes a segment by its name and size, and refuses a file whose size is not a segment size', () => {
    const base = {
      hash: 'a'.repeat(64),
      host: 'h',
      archivedAt: '2026-11-23T17:00:00.000Z',
      transactions: {
        firstEventTime: '2026-11-23T17:00:00.000Z',
        lastEventTime: '2026-11-23T17:00:01.000Z',
        xids: [5, 9] as [number, number],
      },
    };
    const record = describeWalFile({ ...base, name: '000000020000000100000003', size: 16 << 20 });
    assert.deepEqual(record.wal, { timeline: 2, segment: 256 + 3, segmentSize: 16 << 20, xids: [5, 9] });
    assert.equal(record.kind, 'wal');
    assert.ok(logFileRecordSchema.safeParse(record).success);
    const small = describeWalFile({ ...base, name: '000000010000000000000040', size: 1 << 20 });
    assert.equal(small.wal?.segment, 0x40, '1 MiB segments: 4096 per log id');
    const history = describeWalFile({ ...base, name: '00000003.history', size: 42, transactions: undefined });
    assert.deepEqual(
      { kind: history.kind, wal: history.wal, first: history.firstEventTime },
      { kind: 'history', wal: { timeline: 3 }, first: null },
    );
    assert.throws(
      () => describeWalFile({ ...base, name: '000000010000000000000003', size: 5000 }),
      (e: unknown) => e instanceof CairnError && /not a WAL segment/.test(e.message),
    );
    assert.throws(
      () => describeWalFile({ ...base, name: 'base.tar', size: 1 << 24 }),
      (e: unknown) => e instanceof CairnError && e.code === 'Cairn.Usage',
    );
  });

  it('reads the system identifier from the first 8 bytes of pg_control, little-endian', () => {
    const control = randomBytes(64);
    control.writeBigUInt64LE(7301234567890123456n, 0);
    assert.equal(systemIdentifier(control), '7301234567890123456');
    assert.throws(() => systemIdentifier(Buffer.alloc(4)), CairnError);
  });

  it("finds a pg_waldump of the server's own version", async (t) => {
    if (
      !(await access('/usr/lib/postgresql/15/bin/pg_waldump').then(
        () => true,
        () => false,
      ))
    )
      return t.skip('needs PostgreSQL 15: apt-get install postgresql');
    assert.equal(await findPgWaldump({ PATH: '/usr/bin:/bin' }, '15'), '/usr/lib/postgresql/15/bin/pg_waldump');
    assert.equal(
      await findPgWaldump({ PATH: '/nonexistent' }, '99'),
      '/usr/lib/postgresql/15/bin/pg_waldump',
      'another version beats none',
    );
  });
});
