import { CairnError } from '../core/errors.ts';
import { LogArchive } from '../core/log-archive.ts';
import { analyzeChain, baseEngines, engineOfStream, planReplay, type BaseSnapshot, type ChainReport, type RecoveryTarget, type ReplayPlan } from '../core/log-chain.ts';
import type { Repository } from '../core/repository.ts';
import type { Snapshot } from '../core/snapshot.ts';

/**
 * Reading the log archive against the snapshots: what `pitr status`, `restore
 * --to-time` (and its --dry-run) and the control plane's restore planner share,
 * so the console and the CLI give the same answer.
 */

export function baseOf(s: Snapshot): BaseSnapshot {
  return { id: s.id, time: s.time, endTime: s.endTime, host: s.host, engine: s.engine, engineMetadata: s.engineMetadata, totalBytes: s.summary.totalBytes };
}

/** Every stream's chain report (or the one named). */
export async function readChains(repo: Repository, options: { stream?: string | undefined; snapshots?: readonly Snapshot[] | undefined } = {}): Promise<ChainReport[]> {
  const streams = options.stream ? [options.stream] : await LogArchive.streams(repo);
  const snapshots = options.snapshots ?? (await repo.listSnapshots()).snapshots;
  const reports: ChainReport[] = [];
  for (const stream of streams) {
    const archive = await new LogArchive(repo, stream).read();
    reports.push(analyzeChain(stream, archive, snapshots.filter((s) => !s.tags.includes('damaged')).map(baseOf)));
  }
  return reports;
}

/**
 * The stream to replay for a restore: the one named, else the only stream of
 * the snapshots' engine. Several (two PostgreSQL clusters in one repository)
 * need --archive-stream.
 */
export async function chooseStream(repo: Repository, engine: string | undefined, named: string | undefined): Promise<string> {
  if (named) return named;
  const streams = (await LogArchive.streams(repo)).filter((s) => engine === undefined || baseEngines(engineOfStream(s)).includes(engine));
  if (streams.length === 1) return streams[0] as string;
  if (streams.length === 0) {
    throw new CairnError('Cairn.NotFound', `the repository at ${repo.storage.location} has no log archive${engine ? ` for ${engine}` : ''}: point-in-time recovery needs one`, {
      hint: 'archive the log first (wal-push as archive_command, or binlog-push), see docs/pitr.md; without it, restore a snapshot',
    });
  }
  throw new CairnError('Cairn.Usage', `the repository holds several log archives (${streams.join(', ')})`, { hint: 'name one with --archive-stream' });
}

export interface PointInTimeOptions {
  target: RecoveryTarget;
  stream?: string | undefined;
  engine?: string | undefined;
  /** Only snapshots of this plan (the control plane). */
  plan?: string | undefined;
}

/** The replay plan for a target: base snapshot, files, bytes. Refuses (naming the gap) when no window reaches the target. */
export async function planPointInTime(repo: Repository, options: PointInTimeOptions): Promise<{ plan: ReplayPlan; report: ChainReport; snapshot: Snapshot }> {
  const stream = await chooseStream(repo, options.engine, options.stream);
  const { snapshots } = await repo.listSnapshots();
  const mine = snapshots.filter((s) => options.plan === undefined || s.plan === undefined || s.plan === options.plan);
  const [report] = await readChains(repo, { stream, snapshots: mine });
  const plan = planReplay(report as ChainReport, options.target);
  const snapshot = mine.find((s) => s.id === plan.window.snapshot.id) as Snapshot;
  return { plan, report: report as ChainReport, snapshot };
}
