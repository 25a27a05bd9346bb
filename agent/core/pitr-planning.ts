import { engineCatalog } from './engine-options/catalog.ts';
import { CairnError } from './errors.ts';
import { LogArchive, fileObjectKey } from './log-archive.ts';
import { releasableLogs } from './log-retention.ts';
import type { DeletableStorage } from './storage.ts';
import {
  analyzeChain,
  baseEngines,
  engineOfStream,
  planReplay,
  type BaseSnapshot,
  type ChainReport,
  type RecoveryTarget,
  type ReplayPlan,
} from './log-chain.ts';
import type { Repository } from './repository.ts';
import { readDamage, type KnownDamage } from './damage.ts';
import { shortId, type Snapshot } from './snapshot.ts';
import { readHistory } from './history.ts';
import { estimateThroughput, type LogRange, type Throughput } from './restore-planning.ts';

/**
 * Reading the log archive against the snapshots: what `pitr status`, `restore
 * --to-time` (and its --dry-run) and the control plane's restore planner share,
 * so the console and the CLI give the same answer.
 */

export function baseOf(s: Snapshot): BaseSnapshot {
  return {
    id: s.id,
    time: s.time,
    endTime: s.endTime,
    host: s.host,
    engine: s.engine,
    engineMetadata: s.engineMetadata,
    totalBytes: s.summary.totalBytes,
  };
}

/**
 * Every stream's chain report (or the one named). Only good snapshots are bases: one a damage
 * marker names, tagged `damaged` or partial never is (core/damage.ts, `KnownDamage.notGood`).
 */
export async function readChains(
  repo: Repository,
  options: {
    stream?: string | undefined;
    snapshots?: readonly Snapshot[] | undefined;
    /** The damage markers, when the caller read them already. */
    damage?: KnownDamage | undefined;
    /** Told about damage markers that cannot be read (default: ignored; the markers that read still count). */
    warn?: ((message: string) => void) | undefined;
  } = {},
): Promise<ChainReport[]> {
  const streams = options.stream ? [options.stream] : await LogArchive.streams(repo);
  const snapshots = options.snapshots ?? (await repo.listSnapshots()).snapshots;
  const damage = options.damage ?? (await readDamage(repo, options.warn ?? (() => undefined)));
  const bases = snapshots.filter((s) => damage.notGood(s) === undefined).map(baseOf);
  const reports: ChainReport[] = [];
  for (const stream of streams) {
    const archive = await new LogArchive(repo, stream).read();
    reports.push(analyzeChain(stream, archive, bases));
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
    throw new CairnError(
      'Cairn.NotFound',
      `the repository at ${repo.storage.location} has no log archive${engine ? ` for ${engine}` : ''}: point-in-time recovery needs one`,
      {
        hint: 'archive the log first (wal-push as archive_command, or binlog-push), see docs/pitr.md; without it, restore a snapshot',
      },
    );
  }
  throw new CairnError('Cairn.Usage', `the repository holds several log archives (${streams.join(', ')})`, {
    hint: 'name one with --archive-stream',
  });
}

export interface PointInTimeOptions {
  target: RecoveryTarget;
  stream?: string | undefined;
  engine?: string | undefined;
  /** Only snapshots of this plan (the control plane). */
  plan?: string | undefined;
  /** Only this base snapshot (an id or a unique prefix). */
  base?: string | undefined;
  /** Told about damage markers that cannot be read. */
  warn?: ((message: string) => void) | undefined;
}

/** The replay plan for a target: base snapshot, files, bytes. Refuses (naming the gap) when no window reaches the target. */
export async function planPointInTime(
  repo: Repository,
  options: PointInTimeOptions,
): Promise<{ plan: ReplayPlan; report: ChainReport; snapshot: Snapshot }> {
  const stream = await chooseStream(repo, options.engine, options.stream);
  const { snapshots } = await repo.listSnapshots();
  const mine = snapshots.filter(
    (s) =>
      (options.plan === undefined || s.plan === undefined || s.plan === options.plan) &&
      (options.base === undefined || s.id.startsWith(options.base)),
  );
  if (options.base !== undefined && mine.length === 0)
    throw new CairnError('Cairn.NotFound', `no snapshot ${options.base} in ${repo.storage.location}`, {
      hint: 'list them with `cairn snapshots`, or leave the snapshot out and let the target choose',
    });
  const [report] = await readChains(repo, { stream, snapshots: mine, warn: options.warn });
  const plan = planReplay(report as ChainReport, options.target);
  const snapshot = mine.find((s) => s.id === plan.window.snapshot.id) as Snapshot;
  return { plan, report: report as ChainReport, snapshot };
}

/** Every manifest, or a refusal: a manifest that cannot be read may be a base whose log is still needed. */
async function everySnapshot(repo: Repository): Promise<Snapshot[]> {
  const { snapshots, unreadable } = await repo.listSnapshots();
  if (unreadable.length > 0) {
    throw new CairnError(
      'Cairn.Damaged',
      `${unreadable.length} snapshot manifest(s) cannot be read (${unreadable.map((u) => u.id.slice(0, 8)).join(', ')}); no archived log is removed while a base it may need cannot be seen`,
      {
        hint: 'run `cairn verify`; forget the damaged snapshots explicitly if they are beyond repair',
      },
    );
  }
  return snapshots;
}

export interface LogCollection {
  stream: string;
  filesRemoved: number;
  bytesRemoved: number;
  /** The oldest files removed and why (for --dry-run and the history record). */
  reasons: string[];
}

/**
 * Garbage collection of the log archive (prune, and the control plane's GC):
 * removes what releasableLogs lets go. Order, so a crash at any point leaves
 * an archive that reads correctly and a rerun that finishes: a consolidated
 * batch of the records that stay is written first, then the released files
 * are deleted oldest first (a crash leaves a shorter prefix, never a hole),
 * then the old batches. Caller holds the exclusive lock; hosts keep pushing
 * meanwhile, which is safe: their new files sit after every cutoff and their
 * new batches are not among the ones deleted.
 */
export async function collectLogs(
  repo: Repository,
  storage: DeletableStorage,
  options: { dryRun: boolean; assertHeld?: () => void; snapshots?: readonly Snapshot[] },
): Promise<LogCollection[]> {
  const snapshots = options.snapshots ?? (await everySnapshot(repo));
  const out: LogCollection[] = [];
  for (const stream of await LogArchive.streams(repo)) {
    const log = new LogArchive(repo, stream);
    const archive = await log.read();
    const release = releasableLogs(analyzeChain(stream, archive, snapshots.map(baseOf)));
    const collection: LogCollection = {
      stream,
      filesRemoved: release.remove.length,
      bytesRemoved: release.remove.reduce((n, r) => n + r.record.size, 0),
      reasons: release.remove.slice(0, 3).map((r) => `${r.record.name}: ${r.reason}`),
    };
    out.push(collection);
    if (options.dryRun || release.remove.length === 0) continue;
    const gone = new Set(release.remove.map((r) => r.record.key));
    const stays = [...archive.records, ...archive.missing].filter((r) => !gone.has(r.key));
    options.assertHeld?.();
    const written = await log.writeRecords(stays);
    for (const { record } of release.remove) {
      options.assertHeld?.();
      await storage.delete(fileObjectKey(stream, record.key));
    }
    for (const batch of archive.batches) if (batch.key !== written) await storage.delete(batch.key);
  }
  return out;
}

export type { LogRange };

/** What a dry run prints and the console's planner returns for a replay: the base, the log range, bytes and the estimated time. */
export interface PointInTimePlan {
  snapshot: { id: string; time: string; endTime: string; host: string; engine: string; totalBytes: number };
  logRange: LogRange;
  bytes: number;
  estimatedSeconds: number;
  throughput: { bytesPerSecond: number; basis: string };
  steps: string[];
}

export function describeReplay(plan: ReplayPlan, snapshot: Snapshot, throughputs: readonly Throughput[]): PointInTimePlan {
  const first = plan.files[0];
  const last = plan.files.at(-1);
  const throughput = estimateThroughput(throughputs);
  const bytes = snapshot.summary.totalBytes + plan.bytes;
  const replayStep =
    engineCatalog.get(snapshot.engine)?.capabilities.pitr?.log === 'wal'
      ? `write recovery.signal and the recovery target (${plan.describe}); when started, PostgreSQL fetches ${plan.files.length} archived WAL file(s) through wal-fetch and stops there`
      : `start a private server on the restored datadir, replay ${plan.files.length} archived binlog file(s) up to ${plan.describe}, shut it down`;
  return {
    snapshot: {
      id: snapshot.id,
      time: snapshot.time,
      endTime: snapshot.endTime,
      host: snapshot.host,
      engine: snapshot.engine,
      totalBytes: snapshot.summary.totalBytes,
    },
    logRange: {
      stream: plan.stream,
      target: plan.describe,
      firstFile: first?.name ?? '',
      lastFile: last?.name ?? '',
      files: plan.files.length,
      bytes: plan.bytes,
      window: { from: plan.window.from, to: plan.window.to },
    },
    bytes,
    estimatedSeconds: Math.max(1, Math.ceil(bytes / throughput.bytesPerSecond)),
    throughput,
    steps: [
      `restore base snapshot ${shortId(snapshot.id)} (${snapshot.engine}, ${snapshot.time} on ${snapshot.host}, ${snapshot.summary.totalBytes} bytes)`,
      replayStep,
    ],
  };
}

/** Past restores (and passed drills) and backups of the repository (its history), for estimates. */
export async function measuredThroughputs(repo: Repository): Promise<Throughput[]> {
  const throughputs: Throughput[] = [];
  for (const e of await readHistory(repo)) {
    const r = e as Record<string, unknown>;
    if (e.event === 'restore.finished' && typeof r.bytes === 'number' && typeof r.durationMs === 'number')
      throughputs.push({ kind: 'restore', bytes: r.bytes, durationMs: r.durationMs });
    // A passed drill restored the snapshot's bytes in restoreMs: a restore sample like any other.
    if (e.event === 'drill' && r.outcome === 'passed' && typeof r.bytes === 'number' && typeof r.restoreMs === 'number')
      throughputs.push({ kind: 'restore', bytes: r.bytes, durationMs: r.restoreMs });
    if (e.event === 'backup.committed' && typeof r.bytesRead === 'number' && typeof r.durationMs === 'number')
      throughputs.push({ kind: 'backup', bytes: r.bytesRead, durationMs: r.durationMs });
  }
  return throughputs;
}
