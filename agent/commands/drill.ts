import { mkdir, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { writeDamageMarkers } from '../core/damage.ts';
import { CairnError, errorMessage } from '../core/errors.ts';
import { TOOL } from '../core/version.ts';
import { PieceReader } from '../core/piece-reader.ts';
import type { Repository } from '../core/repository.ts';
import { shortId, type Snapshot } from '../core/snapshot.ts';
import { failureOf, missingDrillTools } from '../engines/drill-tools.ts';
import type { DrillCheck, DrillContext, Engine } from '../engines/engine.ts';
import { engineRegistry, type EngineRegistry } from '../engines/registry.ts';
import { RepositorySource } from '../engines/source.ts';
import { Restorer, fetchAheadFor, prepareTarget, readAheadFor } from '../files/restorer.ts';
import { drillFiles, hostErrors, stripSpecialBits } from './files-drill.ts';
import { checkFreeSpace, minFreeSpace, watchFreeSpace } from './drill-space.ts';
import { makeScratch, removeKilledScratch, removeScratch } from './drill-scratch.ts';
import { failureDetails, operationContext, record, underLock, type OperationOptions } from './operation.ts';
import { latestAmong, selectSnapshot, type SnapshotFilter } from './snapshot-selector.ts';

/**
 * `cairn drill [snapshot]` and the orchestrated `agent drill`: a restore drill
 * that proves a snapshot restorable without touching anything it did not
 * create. The snapshot is brought back inside a scratch directory of its own
 * (after checking the file system has room: a drill may run on a production
 * host), the engine's drill (Engine.drill) proves it with the engine's tools
 * on private servers it starts and stops itself, and the scratch directory is
 * removed at the end, also on failure and on cancel. The drill is given no
 * engine options: it has no way to name, let alone reach, a production server.
 * One `drill` history event records the outcome.
 *
 * A failed drill marks the snapshot damaged only when a check proved its data
 * bad (drill-tools.ts, DrillFailure): a check that this host kept from running
 * (a tool missing, a server that would not start, a full disk) fails the drill
 * as the host's failure (Cairn.Failure) and marks nothing, since retention and
 * `latest` would otherwise pass over a good snapshot.
 */
export interface DrillOptions extends OperationOptions {
  /** A snapshot id (prefix) or `latest` (the newest undamaged one). */
  snapshot: string;
  /** What `latest` is narrowed to (--host, --path, --tag); an id is taken as it is. */
  latestFilter?: SnapshotFilter | undefined;
  /** The slower, deeper variant of each check. */
  thorough: boolean;
  concurrency: number;
  signal?: AbortSignal | undefined;
  env?: NodeJS.ProcessEnv | undefined;
  /** Where the scratch directory is made (default: CAIRN_DRILL_DIR, else the system temp dir). */
  scratchDir?: string | undefined;
  engines?: EngineRegistry | undefined;
  /** Called with the scratch directory once every check has run, before it is removed (tests inspect what the drill restored). */
  beforeCleanup?: ((scratch: string) => Promise<void>) | undefined;
}

export interface DrillReport {
  snapshotId: string;
  snapshotTime: string;
  engine: string;
  /** Every check ran and passed. */
  ok: boolean;
  /** For a failed drill: whether a check proved the snapshot's data bad (`data`, marked damaged) or the host kept the drill from proving it (`host`). */
  failure?: 'data' | 'host' | undefined;
  checks: DrillCheck[];
  /** Time spent bringing the data back (checks of phase `restore`), and proving it (phase `check`). */
  restoreMs: number;
  checkMs: number;
  durationMs: number;
  /** The scratch directory used (removed when the drill returns). */
  scratch: string;
  /** Bytes the drill required free before it started. */
  spaceNeeded: number;
  /** Damage markers written because the drill failed (core/damage.ts): the snapshot is no longer good. */
  markers: string[];
}

/** How much room a drill asks for, from the snapshot's size: a logical dump loads into tables and indexes bigger than it. */
export function drillSpaceNeeded(snapshot: Pick<Snapshot, 'summary'>, kind: 'files' | 'physical' | 'logical'): number {
  const bytes = snapshot.summary.totalBytes;
  return kind === 'logical' ? Math.ceil(bytes * 3) + (512 << 20) : Math.ceil(bytes * 1.1) + (256 << 20);
}

/**
 * Under root, a drill's private server runs as its own user (mysql, postgres), which must pass
 * through every directory above the scratch directory: said before anything is restored.
 */
async function checkReachable(directory: string, engine: Engine<unknown> | undefined): Promise<void> {
  if (!engine || process.getuid?.() !== 0) return;
  for (let dir = directory; ; dir = dirname(dir)) {
    if (((await stat(dir)).mode & 0o001) === 0)
      throw new CairnError(
        'Cairn.Usage',
        `the drill's private server could not reach its scratch directory under ${directory}: ${dir} is closed to other users`,
        {
          hint: `let other users pass through it (chmod o+x ${dir}), or point CAIRN_DRILL_DIR (--scratch-dir) at a directory they can reach, such as /var/tmp`,
        },
      );
    if (dirname(dir) === dir) return;
  }
}

/** The engine of a snapshot, refused when it has no drill or its programs are missing on this host. */
export async function drillEngine(engines: EngineRegistry, name: string, env: NodeJS.ProcessEnv): Promise<Engine<unknown> | undefined> {
  if (name === 'files') return undefined;
  const engine = engines.byName(name);
  // The engine's drill member is what makes it drillable (a spec's capabilities.drill may lag behind it).
  if (!engine.drill)
    throw new CairnError('Cairn.Usage', `snapshots of the ${name} engine cannot be drilled yet`, {
      hint: 'verify it instead (cairn verify --read-data), or restore it by hand into a scratch server',
    });
  await missingDrillTools(name, engine.drillTools ?? [], env);
  return engine;
}

export async function drill(repo: Repository, options: DrillOptions): Promise<DrillReport> {
  const ctx = operationContext(repo, options);
  return underLock(ctx, 'drill', false, async () => {
    const started = Date.now();
    let snapshot: Snapshot | undefined;
    try {
      snapshot = await selectSnapshot(repo, options.snapshot, latestAmong(options.latestFilter), { warn: (m) => options.progress.warn(m) });
      const report = await drillLocked(repo, snapshot, options, started);
      // A snapshot that does not restore into a working copy is not good: retention, `latest` and
      // the console's planner pass over it from now on (an operator clears a false marker).
      if (report.failure === 'data') report.markers = await markSnapshot(repo, snapshot, options);
      await record(ctx, 'drill', {
        ...(report.markers.length > 0 ? { markers: report.markers } : {}),
        outcome: report.ok ? 'passed' : 'failed',
        ...(report.failure ? { failure: report.failure } : {}),
        snapshotId: report.snapshotId,
        engine: report.engine,
        thorough: options.thorough,
        checks: report.checks.map((c) => ({
          name: c.name,
          phase: c.phase,
          ran: c.ran,
          ok: c.ok,
          found: c.found,
          durationMs: c.durationMs,
        })),
        restoreMs: report.restoreMs,
        // The restore planner's estimates learn from drills as from restores (measuredThroughputs).
        bytes: snapshot.summary.totalBytes,
        checkMs: report.checkMs,
        durationMs: report.durationMs,
      });
      return report;
    } catch (error) {
      const markers =
        snapshot && error instanceof CairnError && error.code === 'Cairn.Damaged'
          ? await markSnapshot(repo, snapshot, options).catch(() => [])
          : [];
      await record(ctx, 'drill', {
        outcome: 'error',
        ...(markers.length > 0 ? { markers } : {}),
        snapshot: snapshot?.id ?? options.snapshot,
        ...(snapshot ? { engine: snapshot.engine } : {}),
        thorough: options.thorough,
        durationMs: Date.now() - started,
        ...failureDetails(error),
      });
      throw error;
    }
  });
}

async function markSnapshot(repo: Repository, snapshot: Snapshot, options: DrillOptions): Promise<string[]> {
  const markers = await writeDamageMarkers(
    repo,
    { packs: [], snapshots: [snapshot.id] },
    { who: options.who, tool: TOOL, source: 'drill' },
  );
  for (const m of markers)
    options.progress.warn(`the drill recorded the damage in ${m}: snapshot ${shortId(snapshot.id)} is no longer counted as good`);
  return markers;
}

async function drillLocked(repo: Repository, snapshot: Snapshot, options: DrillOptions, started: number): Promise<DrillReport> {
  const env = options.env ?? process.env;
  const engines = options.engines ?? engineRegistry;
  const engine = await drillEngine(engines, snapshot.engine, env);
  const kind = engine ? engine.spec.capabilities.kind : 'files';
  const parent = resolve(options.scratchDir ?? env.CAIRN_DRILL_DIR ?? tmpdir());
  await mkdir(parent, { recursive: true });
  // Before the room is measured: a killed drill's restored copy would count against this one.
  for (const left of await removeKilledScratch(parent, (message) => options.progress.warn(message)))
    options.progress.warn(`removed ${left}, the scratch directory of a drill that was killed before it could clean up`);
  const spaceNeeded = drillSpaceNeeded(snapshot, kind);
  await checkFreeSpace(parent, spaceNeeded);
  const floor = await minFreeSpace(parent, env);
  await checkReachable(parent, engine);
  // A files drill's restored tree is the drill's alone (0700: as root it recreates the snapshot's
  // owners, and no other user may run or read what it holds). An engine's is traversable, not
  // listable: its private server, running as its own user, reaches the 0700 subdirectory it is given.
  const scratch = await makeScratch(parent, engine ? 0o711 : 0o700);
  const cancelled = (): void => {
    if (options.signal?.aborted) throw new CairnError('Cairn.Cancelled', 'the drill was cancelled; its scratch directory was removed');
  };
  // Everything the drill runs stops when the operator cancels or the file system nears full (drill-space.ts).
  const guard = watchFreeSpace(parent, floor, options.signal);
  try {
    const drillCtx: DrillContext = {
      progress: options.progress,
      signal: guard.signal,
      env,
      tempDir: scratch,
      thorough: options.thorough,
    };
    let checks: DrillCheck[];
    if (!engine) {
      checks = await drillFiles(repo, snapshot, { ...drillCtx, concurrency: options.concurrency }, join(scratch, 'files'));
    } else {
      const index = await repo.loadIndex(options.concurrency * 2);
      const reader = new PieceReader(repo, index, { cacheFrames: 8, fetchBytes: fetchAheadFor(options.concurrency) });
      // A physical engine's drill restores the files into a directory of its scratch space (Restorer, as `cairn restore` does).
      const source = new RepositorySource(snapshot, reader, async (directory) => {
        const target = resolve(directory);
        if (!target.startsWith(`${scratch}/`))
          throw new CairnError('Cairn.Usage', `a drill restores under its scratch directory ${scratch}, not into ${target}`);
        await prepareTarget(target, false);
        const result = await new Restorer(reader, {
          target,
          // The directory keeps the mode its engine made it with (0700): the snapshot's own root mode could open it to other users.
          applyRoot: false,
          includes: [],
          force: false,
          ignoreErrors: false,
          readAheadBytes: readAheadFor(options.concurrency),
          progress: options.progress,
          signal: guard.signal,
        }).run(snapshot);
        if (result.errors.length > 0)
          throw new CairnError(
            hostErrors(result.errors) ? 'Cairn.Failure' : 'Cairn.Damaged',
            `${result.errors.length} file(s) could not be restored, e.g. ${result.errors[0]?.path}: ${result.errors[0]?.error}`,
          );
        // Nothing restored runs with the snapshot's setuid/setgid bits (as root, its owners are recreated too).
        await stripSpecialBits(target);
      });
      checks = await (engine.drill as NonNullable<Engine<unknown>['drill']>)(source, drillCtx);
    }
    // Checks cut short by a full disk prove nothing against the data: the host's failure, no marker.
    guard.check();
    cancelled();
    await options.beforeCleanup?.(scratch);
    const sum = (phase: DrillCheck['phase']): number =>
      checks.filter((c) => c.phase === phase).reduce((total, c) => total + c.durationMs, 0);
    const ok = checks.length > 0 && checks.every((c) => c.ok);
    return {
      snapshotId: snapshot.id,
      snapshotTime: snapshot.time,
      engine: snapshot.engine,
      ok,
      // A check that did not run, or failed because of this host, proves nothing against the data.
      ...(ok ? {} : { failure: checks.some((c) => failureOf(c) === 'data') ? 'data' : 'host' }),
      checks,
      restoreMs: sum('restore'),
      checkMs: sum('check'),
      durationMs: Date.now() - started,
      scratch,
      spaceNeeded,
      markers: [],
    };
  } catch (error) {
    guard.check();
    throw error;
  } finally {
    guard.stop();
    await removeScratch(scratch).catch((error: unknown) =>
      options.progress.warn(`could not remove the drill's scratch directory ${scratch}: ${errorMessage(error)}`),
    );
  }
}

/** The failed checks of a report, as one sentence (the orchestrated drill's error, the CLI's last line). */
export function drillFailure(report: DrillReport): CairnError {
  const failed = report.checks.filter((c) => !c.ok);
  if (report.failure === 'host')
    return new CairnError(
      'Cairn.Failure',
      `the drill of snapshot ${shortId(report.snapshotId)} (${report.engine}) could not finish on this host: ${failed.map((c) => `${c.name}: ${c.found}`).join('; ') || 'no check ran'}; nothing it found shows the snapshot's data is bad, so it was not marked damaged`,
      { hint: 'fix what the failed check names on this host (a missing tool, free space, a server that would not start) and drill again' },
    );
  return new CairnError(
    'Cairn.Damaged',
    `the drill of snapshot ${shortId(report.snapshotId)} (${report.engine}) failed: ${failed.map((c) => `${c.name}: ${c.found}`).join('; ') || 'no check ran'}`,
    {
      hint: 'the snapshot did not restore into a working copy; see each check above, run `cairn verify --read-data`, and take a new backup',
    },
  );
}

/** What an orchestrated drill reports in its run summary (RunSummary.drill): every check without its details, and the durations. */
export interface DrillRunSummary {
  ok: boolean;
  thorough: boolean;
  restoreMs: number;
  checkMs: number;
  checks: Array<Pick<DrillCheck, 'name' | 'phase' | 'ran' | 'ok' | 'found' | 'durationMs'>>;
}

export function drillRunSummary(report: DrillReport, thorough: boolean): DrillRunSummary {
  return {
    ok: report.ok,
    thorough,
    restoreMs: report.restoreMs,
    checkMs: report.checkMs,
    // `found` is one line, but a check may quote a tool's output: bounded, so the summary stays far below the task token's 256 KiB.
    checks: report.checks.map((c) => ({
      name: c.name,
      phase: c.phase,
      ran: c.ran,
      ok: c.ok,
      found: c.found.slice(0, 2000),
      durationMs: c.durationMs,
    })),
  };
}
