import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { ArchivedLog, LogFileRecord } from '../../../agent/core/log-archive.ts';
import { analyzeChain, parseWalName, planReplay, walName, type BaseSnapshot, type ChainReport } from '../../../agent/core/log-chain.ts';
import { releasableLogs } from '../../../agent/core/log-retention.ts';
import { CairnError } from '../../../agent/core/errors.ts';
import { Random } from '../../helpers/tree.ts';

const SEG = 16 * 1024 * 1024;
const T0 = Date.UTC(2026, 10, 23, 10, 0, 0);
const at = (minutes: number): string => new Date(T0 + minutes * 60_000).toISOString();

/** WAL segment n of timeline 1 holding commits from minute n to minute n + 0.9. */
function wal(n: number, timeline = 1): LogFileRecord {
  const name = walName(timeline, n);
  return {
    name,
    key: name,
    kind: 'wal',
    size: SEG,
    hash: '0'.repeat(64),
    archivedAt: at(n + 1),
    host: 'db1',
    firstEventTime: at(n),
    lastEventTime: at(n + 0.9),
    wal: { timeline, segment: n, segmentSize: SEG },
  };
}

function pgBase(id: string, segment: number, minute: number): BaseSnapshot {
  const lsn = segment * SEG + 40;
  return {
    id: id.padEnd(64, '0'),
    time: at(minute),
    endTime: at(minute + 0.1),
    host: 'db1',
    engine: 'postgres',
    totalBytes: 1000,
    engineMetadata: {
      startLsn: `${Math.floor(lsn / 2 ** 32)
        .toString(16)
        .toUpperCase()}/${(lsn % 2 ** 32).toString(16).toUpperCase()}`,
      timeline: 1,
      stopLsn: '0/0',
    },
  };
}

function archive(records: LogFileRecord[], missing: LogFileRecord[] = []): ArchivedLog {
  return { records, missing, undescribed: [], batches: [] };
}

describe('WAL chain', () => {
  it('names and parses segments both ways', () => {
    assert.equal(walName(1, 0x1ff), '0000000100000001000000FF');
    assert.deepEqual(parseWalName('0000000100000001000000FF'), { timeline: 1, segment: 0x1ff });
    assert.equal(parseWalName('00000002.history'), undefined);
  });

  it('gives a base a window to the last archived event, and plans the files up to the target', () => {
    const report = analyzeChain('pg-1', archive([wal(3), wal(4), wal(5), wal(6)]), [pgBase('aa', 4, 4.2)]);
    assert.equal(report.gaps.length, 0);
    assert.equal(report.windows.length, 1);
    assert.equal(report.windows[0]?.from, at(4.3));
    assert.equal(report.windows[0]?.to, at(6.9));
    const plan = planReplay(report, { time: at(5.5) });
    assert.deepEqual(
      plan.files.map((f) => f.wal?.segment),
      [4, 5],
    );
    assert.equal(plan.bytes, 2 * SEG);
  });

  it('ends a window at a gap, names it, and refuses a target past it with the nearest recoverable times', () => {
    const lost = wal(6);
    const report = analyzeChain('pg-1', archive([wal(4), wal(5), wal(7), wal(8)], [lost]), [pgBase('aa', 4, 4.2)]);
    assert.equal(report.gaps.length, 1);
    assert.match(report.gaps[0]?.missing ?? '', /000000010000000000000006/);
    assert.match(report.gaps[0]?.cause ?? '', /no longer in the repository/);
    assert.equal(report.windows[0]?.to, at(5.9));
    assert.ok(planReplay(report, { time: at(5.5) }));
    assert.throws(
      () => planReplay(report, { time: at(7.5) }),
      (error: unknown) => {
        assert.ok(error instanceof CairnError);
        assert.equal(error.code, 'Cairn.NotFound');
        assert.match(error.message, /gap.*000000010000000000000006/);
        assert.match(error.hint ?? '', new RegExp(at(5.9).replace(/[.]/g, '\\.')));
        return true;
      },
    );
  });

  it('says why a snapshot has no window', () => {
    const report = analyzeChain('pg-1', archive([wal(5), wal(6)]), [pgBase('aa', 4, 4.2)]);
    assert.equal(report.windows.length, 0);
    assert.match(report.withoutWindow[0]?.reason ?? '', /000000010000000000000004 is not archived/);
    assert.throws(() => planReplay(report, { time: at(5.5) }), /no base snapshot has a recoverable window/);
  });
});

/** A binlog file: GTIDs domain 0, server 1, seq start+1..end. */
function binlog(name: string, minute: number, start: number, end: number, next?: string, serverId = 1): LogFileRecord {
  return {
    name,
    key: `${minute}-${name}`.replace(/[^A-Za-z0-9_.+-]/g, '_'),
    kind: 'binlog',
    size: 1000,
    hash: '0'.repeat(64),
    archivedAt: at(minute + 1),
    host: 'db1',
    firstEventTime: at(minute),
    lastEventTime: at(minute + 0.9),
    binlog: {
      serverId,
      startGtid: start ? `0-${serverId}-${start}` : '',
      endGtid: `0-${serverId}-${end}`,
      startPosition: 256,
      endPosition: 1000,
      closed: next !== undefined,
      transactions: end - start,
      ...(next ? { nextFile: next, closedAt: at(minute + 1) } : {}),
    },
  };
}

function myBase(id: string, file: string, minute: number, gtid: string): BaseSnapshot {
  return {
    id: id.padEnd(64, '0'),
    time: at(minute),
    endTime: at(minute + 0.1),
    host: 'db1',
    engine: 'mariadb',
    totalBytes: 1000,
    engineMetadata: { binlogFile: file, binlogPosition: 500, gtid },
  };
}

describe('binlog chain', () => {
  it('follows files by GTID state, so a renumbered server starts a new line instead of continuing an old one', () => {
    const old = [
      binlog('bin.000001', 0, 0, 10, 'bin.000002'),
      binlog('bin.000002', 1, 10, 20, 'bin.000003'),
      binlog('bin.000003', 2, 20, 30, 'bin.000004'),
    ];
    // Restored from the base at minute 0.5: numbering restarts, GTIDs replayed then continue.
    const renumbered = [binlog('bin.000001', 10, 0, 35, 'bin.000002'), binlog('bin.000002', 11, 35, 40, 'bin.000003')];
    const report = analyzeChain('mariadb-default', archive([...old, ...renumbered]), [
      myBase('aa', 'bin.000001', 0.5, '0-1-5'),
      myBase('bb', 'bin.000001', 10.5, '0-1-33'),
    ]);
    assert.equal(report.lines.length, 2);
    assert.equal(report.gaps.length, 0);
    const [first, second] = report.windows;
    assert.equal(first?.files.length, 3);
    assert.equal(second?.files.length, 2);
    assert.equal(second?.files[0]?.firstEventTime, at(10));
    assert.equal(planReplay(report, { time: at(11.5) }).window.snapshot.id, myBase('bb', '', 0, '').id);
    assert.equal(planReplay(report, { time: at(1.5) }).window.snapshot.id, myBase('aa', '', 0, '').id);
    assert.equal(planReplay(report, { gtid: '0-1-25' }).window.snapshot.id, myBase('aa', '', 0, '').id);
  });

  it('keeps a plainly restored server that repeats the old GTIDs apart from the old line (rotation time ties a file to its successor)', () => {
    const old = [binlog('bin.000001', 0, 0, 5, 'bin.000002'), binlog('bin.000002', 1, 5, 9, 'bin.000003'), binlog('bin.000003', 2, 9, 12)];
    const again = [
      binlog('bin.000001', 20, 0, 5, 'bin.000002'),
      binlog('bin.000002', 21, 5, 9, 'bin.000003'),
      binlog('bin.000003', 22, 9, 14),
    ];
    const report = analyzeChain('mariadb-default', archive([...old, ...again]), [
      myBase('aa', 'bin.000001', 0.5, '0-1-2'),
      myBase('bb', 'bin.000001', 20.5, '0-1-2'),
    ]);
    assert.deepEqual(
      report.lines.map((l) => l.files.map((f) => f.key)),
      [old.map((f) => f.key), again.map((f) => f.key)],
    );
    assert.deepEqual(
      report.windows.map((w) => w.files.length),
      [3, 3],
    );
    assert.equal(planReplay(report, { time: at(21.5) }).window.snapshot.id, myBase('bb', '', 0, '').id);
  });

  it('continues a line across a clean restart: a file closed by STOP, then the next number from the same state, however much later', () => {
    // bin.000002 ends with STOP (a shutdown: closed, no ROTATE naming a next file); the server starts 28 minutes later.
    const stopped: LogFileRecord = {
      ...binlog('bin.000002', 1, 10, 20),
      binlog: { ...(binlog('bin.000002', 1, 10, 20).binlog as NonNullable<LogFileRecord['binlog']>), closed: true, closedAt: at(1.95) },
    };
    const files = [binlog('bin.000001', 0, 0, 10, 'bin.000002'), stopped, binlog('bin.000003', 30, 20, 30, 'bin.000004')];
    const report = analyzeChain('mariadb-default', archive(files), [myBase('aa', 'bin.000001', 0.5, '0-1-5')]);
    assert.equal(report.lines.length, 1, report.lines.map((l) => l.id).join(' | '));
    assert.equal(report.windows[0]?.files.length, 3);
    assert.equal(planReplay(report, { time: at(30.5) }).window.snapshot.id, myBase('aa', '', 0, '').id);

    // After a restart from another state (a restore), the next number starts a line of its own, and a time on
    // it is said to be after the window, not before the oldest one.
    const restored = [binlog('bin.000001', 0, 0, 10, 'bin.000002'), stopped, binlog('bin.000003', 30, 15, 30, 'bin.000004')];
    const apart = analyzeChain('mariadb-default', archive(restored), [myBase('aa', 'bin.000001', 0.5, '0-1-5')]);
    assert.equal(apart.lines.length, 2);
    assert.throws(
      () => planReplay(apart, { time: at(30.5) }),
      (error: Error) => /is after the window that ends at .*no base snapshot's window covers the log after that/.test(error.message),
    );
  });

  it('joins across a STOP only when nothing else can be the continuation: a copy started from the stopped data, another incarnation between', () => {
    const stopped: LogFileRecord = {
      ...binlog('bin.000002', 1, 10, 20),
      binlog: { ...(binlog('bin.000002', 1, 10, 20).binlog as NonNullable<LogFileRecord['binlog']>), closed: true, closedAt: at(1.95) },
    };
    const first = binlog('bin.000001', 0, 0, 10, 'bin.000002');
    const base = myBase('aa', 'bin.000001', 0.5, '0-1-5');
    const keyed = (record: LogFileRecord, tag: string): LogFileRecord => ({ ...record, key: `${tag}-${record.key}` });
    // A copy of the stopped data directory starts first (minute 25) and writes its own 21..26; production restarts at 30.
    const copy = keyed(binlog('bin.000003', 25, 20, 26, 'bin.000004'), 'copy');
    const production = keyed(binlog('bin.000003', 30, 20, 30, 'bin.000004'), 'prod');
    const twins = analyzeChain('mariadb-default', archive([first, stopped, copy, production]), [base]);
    assert.equal(twins.lines.length, 3, 'neither continues the stopped line: which one does cannot be told');
    assert.throws(() => planReplay(twins, { time: at(25.5) }));
    assert.throws(() => planReplay(twins, { gtid: '0-1-23' }));
    // The old server never comes back; a server restored from the base writes its own 16..20 (that file lost), then 21..
    const restoredFirst = keyed(binlog('bin.000001', 40, 5, 15, 'bin.000002'), 'r');
    const restoredThird = keyed(binlog('bin.000003', 50, 20, 30, 'bin.000004'), 'r');
    const other = analyzeChain('mariadb-default', archive([first, stopped, restoredFirst, restoredThird]), [base]);
    assert.ok(!other.lines.some((l) => l.files.includes(stopped) && l.files.includes(restoredThird)), 'another history between them');
    assert.throws(() => planReplay(other, { time: at(50.5) }));
    // Another server id is never the restart.
    const foreign = analyzeChain('mariadb-default', archive([first, stopped, binlog('bin.000003', 30, 20, 30, 'bin.000004', 2)]), [base]);
    assert.equal(foreign.lines.length, 2);
  });

  it('reports a missing file as a gap and ends the window there', () => {
    const files = [binlog('bin.000001', 0, 0, 10, 'bin.000002'), binlog('bin.000003', 2, 20, 30, 'bin.000004')];
    const report = analyzeChain('mariadb-default', archive(files, [binlog('bin.000002', 1, 10, 20, 'bin.000003')]), [
      myBase('aa', 'bin.000001', 0.5, '0-1-5'),
    ]);
    assert.equal(report.gaps.length, 1);
    assert.match(report.gaps[0]?.missing ?? '', /bin\.000002/);
    assert.equal(report.windows[0]?.to, at(0.9));
    assert.throws(() => planReplay(report, { time: at(2.5) }), /gap.*bin\.000002/);
  });
});

describe('log retention', () => {
  it("keeps every file of every kept base's window, over random histories (property)", () => {
    const rnd = new Random(99);
    for (let round = 0; round < 300; round++) {
      const count = 5 + rnd.int(40);
      const present = Array.from({ length: count }, (_, i) => i).filter(() => rnd.int(12) !== 0);
      const records = present.map((n) => wal(n));
      const snapshots = Array.from({ length: rnd.int(6) }, (_, i) => {
        const seg = rnd.int(count);
        return pgBase(`s${round}x${i}`, seg, seg + 0.2);
      });
      const before = analyzeChain('pg-1', archive(records), snapshots);
      const release = releasableLogs(before);
      assert.equal(release.keep.length + release.remove.length, records.length, 'every file decided once');
      const removed = new Set(release.remove.map((r) => r.record.key));
      const after = analyzeChain('pg-1', archive(records.filter((r) => !removed.has(r.key))), snapshots);
      for (const w of before.windows) {
        for (const f of w.files)
          assert.ok(!removed.has(f.key), `round ${round}: ${f.name} of ${w.snapshot.id.slice(0, 6)}'s window was removed`);
        const still = after.windows.find((x) => x.snapshot.id === w.snapshot.id);
        assert.deepEqual(
          still?.files.map((f) => f.key),
          w.files.map((f) => f.key),
          `round ${round}: window of ${w.snapshot.id.slice(0, 6)} changed`,
        );
      }
      // And something does go when it can: files before the oldest base's start.
      const starts = before.starts.map((s) => s.index);
      if (starts.length > 0)
        assert.equal(release.remove.length, Math.min(...starts), `round ${round}: the prefix before the oldest base goes`);
    }
  });

  it("keeps every file of every kept base's window in binlog archives with renumbered servers and gaps (property)", () => {
    const rnd = new Random(7);
    for (let round = 0; round < 300; round++) {
      const all: LogFileRecord[] = [];
      const snapshots: BaseSnapshot[] = [];
      let minute = 0;
      // Several incarnations of the server, each numbering from .000001 with its own GTID history.
      for (let life = 0; life < 1 + rnd.int(3); life++) {
        const files = 2 + rnd.int(10);
        let seq = 0;
        for (let i = 1; i <= files; i++) {
          const name = `bin.${String(i).padStart(6, '0')}`;
          const next = seq + 1 + rnd.int(5);
          const record = binlog(name, minute, seq, next, `bin.${String(i + 1).padStart(6, '0')}`);
          if (rnd.int(4) === 0) snapshots.push(myBase(`r${round}l${life}f${i}x`, name, minute + 0.2, `0-1-${seq + 1}`));
          if (rnd.int(10) !== 0) all.push(record);
          seq = next;
          minute += 1;
        }
        minute += 5;
      }
      const before = analyzeChain('mariadb-default', archive(all), snapshots);
      const removed = new Set(releasableLogs(before).remove.map((r) => r.record.key));
      const after = analyzeChain('mariadb-default', archive(all.filter((r) => !removed.has(r.key))), snapshots);
      for (const w of before.windows) {
        for (const f of w.files)
          assert.ok(!removed.has(f.key), `round ${round}: ${f.name} of ${w.snapshot.id.slice(0, 10)}'s window was removed`);
        const still = after.windows.find((x) => x.snapshot.id === w.snapshot.id);
        assert.deepEqual(
          still?.files.map((f) => f.key),
          w.files.map((f) => f.key),
          `round ${round}: window of ${w.snapshot.id.slice(0, 10)} changed`,
        );
      }
    }
  });

  it('keeps everything when there is no snapshot, and a line still being written', () => {
    const none: ChainReport = analyzeChain('pg-1', archive([wal(1), wal(2)]), []);
    assert.equal(releasableLogs(none).remove.length, 0);
  });
});
