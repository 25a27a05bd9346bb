import { randomBytes } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { LogArchive, type LogFileRecord } from '../../agent/core/log-archive.ts';
import { walName } from '../../agent/core/log-chain.ts';
import type { Repository } from '../../agent/core/repository.ts';
import type { Snapshot } from '../../agent/core/snapshot.ts';
import { backupDir, tempDir } from './repo.ts';

/**
 * A PostgreSQL plan's repository with a log archive, written through the real
 * objects (LogArchive.putFile and writeRecords, sealed snapshot manifests):
 * WAL segment n of timeline 1 holds commits from minute n to n + 0.9 after
 * T0, and each base snapshot starts in the segment given. The bases share the
 * tree of a real (small) files backup: restore planning reads manifests only.
 */
export const SYSTEM_ID = '7000000000000000042';
export const STREAM = `pg-${SYSTEM_ID}`;
const T0 = Date.UTC(2026, 10, 23, 10, 0, 0);
export const at = (minutes: number): string => new Date(T0 + minutes * 60_000).toISOString();
/** Archived segments are this small here (the planner adds their sizes). */
export const SEGMENT_BYTES = 4096;

export interface PgArchiveFixture {
  bases: Snapshot[];
  records: LogFileRecord[];
}

export async function seedPostgresArchive(
  repo: Repository,
  options: { planId: string; segments: number[]; bases: Array<{ segment: number; minute: number }> },
): Promise<PgArchiveFixture> {
  const log = new LogArchive(repo, STREAM);
  const records: LogFileRecord[] = [];
  for (const n of options.segments) {
    const name = walName(1, n);
    const data = randomBytes(SEGMENT_BYTES);
    await log.putFile(name, data);
    records.push({
      name,
      key: name,
      kind: 'wal',
      size: data.length,
      hash: log.hash(data),
      archivedAt: at(n + 1),
      host: 'db1',
      firstEventTime: at(n),
      lastEventTime: at(n + 0.9),
      wal: { timeline: 1, segment: n, segmentSize: 16 * 1024 * 1024 },
    });
  }
  await log.writeRecords(records);

  const dir = await tempDir('pitr-tree');
  let tree: Snapshot;
  try {
    await mkdir(join(dir.path, 'base'), { recursive: true });
    await writeFile(join(dir.path, 'base', 'PG_VERSION'), '16\n');
    // Under a plan of its own, so that neither planning nor retention of the tested plan counts it.
    tree = await backupDir(repo, dir.path, { plan: 'pitr-fixture-tree' });
  } finally {
    await dir.remove();
  }
  const bases: Snapshot[] = [];
  for (const b of options.bases) {
    const lsn = b.segment * 16 * 1024 * 1024 + 40;
    const snapshot: Snapshot = {
      ...tree,
      id: randomBytes(32).toString('hex'),
      time: at(b.minute),
      endTime: at(b.minute + 0.1),
      host: 'db1',
      engine: 'postgres',
      plan: options.planId,
      engineMetadata: {
        systemIdentifier: SYSTEM_ID,
        timeline: 1,
        startLsn: `0/${lsn.toString(16).toUpperCase()}`,
        stopLsn: `0/${(lsn + 100).toString(16).toUpperCase()}`,
      },
      summary: { ...tree.summary, totalBytes: 1_000_000 },
    };
    await repo.saveSnapshot(snapshot);
    bases.push(snapshot);
  }
  return { bases, records };
}
