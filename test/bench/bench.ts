/**
 * `npm run bench -- [--size MiB] [--dir DIR] [--keep] [--json FILE] [--only cairn] [--runs N]
 *                   [--pitr-seconds N (0: skip)] [--pitr-scale S] [--only-pitr] [--skip-pages] [--only-pages]
 *                   [--skip-s3] [--skip-c] [--scale N (0: skip)]`
 *
 * Cairn beside its peers (`tar | zstd -T2 -3`, restic) on the same generated data, in
 * the same run, on the same machine: absolute figures drift between machines, so the
 * ratios are what PERFORMANCE.md's targets speak of. Phases, each tool in turn, so all
 * tools see identical data at every phase:
 *   1. first backup (repositories initialised untimed before)   2. unchanged re-backup
 *   3. ~5% of the bytes changed in place, then re-backup         4. restore latest (checked
 *   byte for byte against the data)                              5. verify / check --read-data
 * Then the S3 section (s3.ts): the same data backed up and restored through s3rver, beside
 * restic. Then dataset C of PERFORMANCE.md (small-files.ts: 50,000 small files) beside restic.
 * Then memory at N times the data (scale.ts, default 10×; Cairn alone). Then the PITR section (pitr.ts): WAL archiving under pgbench load, cairn wal-push beside
 * pgBackRest archive-push, and a replay restore. Then the page-incrementals section
 * (page-incrementals.ts): what the second backup of a real PostgreSQL (and MariaDB) data
 * directory adds after a bounded load of writes, beside the pages that changed, for Cairn
 * (files backup and engine), restic and pgBackRest; sizes from CAIRN_BENCH_PG_SCALE etc.
 * Timing never fails the run: the exit code is 1 only when a command fails or a restore
 * differs from the data.
 */
import { mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir, totalmem } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { generateDataset, mutateDataset, type Layout } from './dataset.ts';
import { CommandFailed, compareTrees, ensureCommand, firstLine, settle, treeBytes, type Timed } from './measure.ts';
import { formatResults, ratios, summarize, type Measurement, type Scenario } from './report.ts';
import { buildCairn, Cairn, CAIRN_BIN, cliKind, Restic, tarZstd, type Logs, type RepoTool } from './tools.ts';
import { pitrBench, pitrPrerequisites, type PitrMeasurement } from './pitr.ts';
import { formatStartup, startupBench, type StartupResult } from './startup.ts';
import { formatPageIncrementals, pageIncrementalsBench, type PageIncrementalResult } from './page-incrementals.ts';
import { formatS3, s3Bench, type S3Result } from './s3.ts';
import { formatScale, scaleBench, type ScaleResult } from './scale.ts';
import { formatSmallFiles, smallFilesBench, type SmallFilesResult } from './small-files.ts';

const MB = 1e6;
const CHANGE_FRACTION = 0.05;
// A step is flagged noisy when the rest of the machine used more than this share of one
// core meanwhile (2 cores: the peers' figures assume the tool has both to itself).
const NOISE = 0.15;
const MARKER = '.cairn-bench'; // marks a work dir as ours, so we never clear someone else's directory

interface Options {
  sizeMiB: number;
  dir: string | undefined;
  keep: boolean;
  json: string;
  onlyCairn: boolean;
  runs: number;
  pitrSeconds: number;
  pitrScale: number;
  onlyPitr: boolean;
  skipPages: boolean;
  onlyPages: boolean;
  skipS3: boolean;
  skipC: boolean;
  scale: number;
}

function parseOptions(): Options {
  const { values } = parseArgs({
    options: {
      size: { type: 'string', default: '1024' },
      dir: { type: 'string' },
      keep: { type: 'boolean', default: false },
      json: { type: 'string', default: '/tmp/cairn-bench-results.json' },
      only: { type: 'string' },
      runs: { type: 'string', default: '1' },
      'pitr-seconds': { type: 'string', default: '60' },
      'pitr-scale': { type: 'string', default: '20' },
      'only-pitr': { type: 'boolean', default: false },
      'skip-pages': { type: 'boolean', default: false },
      'only-pages': { type: 'boolean', default: false },
      'skip-s3': { type: 'boolean', default: false },
      'skip-c': { type: 'boolean', default: false },
      scale: { type: 'string', default: '10' },
    },
  });
  const pitrSeconds = Number(values['pitr-seconds']);
  const pitrScale = Number(values['pitr-scale']);
  if (!Number.isInteger(pitrSeconds) || pitrSeconds < 0)
    throw new UsageError(`--pitr-seconds must be a whole number ≥ 0, not ${values['pitr-seconds']}`);
  if (!Number.isInteger(pitrScale) || pitrScale < 1)
    throw new UsageError(`--pitr-scale must be a whole number ≥ 1, not ${values['pitr-scale']}`);
  const scale = Number(values.scale);
  if (!Number.isInteger(scale) || scale < 0) throw new UsageError(`--scale must be a whole number ≥ 0, not ${values.scale}`);
  const sizeMiB = Number(values.size);
  const runs = Number(values.runs);
  if (!(sizeMiB >= 1)) throw new UsageError(`--size must be a number of MiB ≥ 1, not ${values.size}`);
  if (!Number.isInteger(runs) || runs < 1) throw new UsageError(`--runs must be a whole number ≥ 1, not ${values.runs}`);
  if (values.only !== undefined && values.only !== 'cairn')
    throw new UsageError(`--only accepts "cairn" (skip the peers), not ${values.only}`);
  return {
    sizeMiB,
    dir: values.dir && resolve(values.dir),
    keep: values.keep,
    json: resolve(values.json),
    onlyCairn: values.only === 'cairn',
    runs,
    pitrSeconds,
    pitrScale,
    onlyPitr: values['only-pitr'],
    skipPages: values['skip-pages'],
    onlyPages: values['only-pages'],
    skipS3: values['skip-s3'],
    skipC: values['skip-c'],
    scale,
  };
}

class UsageError extends Error {
  override name = 'UsageError';
}

/** Everything one run writes, under the work dir. */
interface Paths {
  data: string;
  cairnRepo: string;
  resticRepo: string;
  resticCache: string;
  tarFile: string;
  restores: string;
  logs: string;
}

function pathsIn(work: string): Paths {
  return {
    data: join(work, 'data'),
    cairnRepo: join(work, 'cairn-repo'),
    resticRepo: join(work, 'restic-repo'),
    resticCache: join(work, 'restic-cache'),
    tarFile: join(work, 'data.tar.zst'),
    restores: join(work, 'restores'),
    logs: join(work, 'logs'),
  };
}

/** The work dir: a fresh temp dir, or the given one if it is empty or was ours before. */
function prepareWorkDir(dir: string | undefined): string {
  if (!dir) return mkdtempSync(join(tmpdir(), 'cairn-bench-'));
  mkdirSync(dir, { recursive: true });
  const entries = readdirSync(dir);
  if (entries.length > 0 && !entries.includes(MARKER)) {
    throw new UsageError(`${dir} is not empty and not a previous bench work dir (no ${MARKER}): choose another --dir`);
  }
  writeFileSync(join(dir, MARKER), 'work dir of test/bench/bench.ts; its contents are replaced on every run\n');
  return dir;
}

/** Removes what a run leaves behind; the logs of earlier runs stay unless `logs` is set. */
function clearRun(paths: Paths, logs: boolean): void {
  for (const [name, path] of Object.entries(paths) as Array<[keyof Paths, string]>) {
    if (name !== 'logs' || logs) rmSync(path, { recursive: true, force: true });
  }
}

interface Peers {
  tar: boolean;
  restic: boolean;
}

/** What every run shares: where it works, what it runs, where results and failures go. */
interface Context {
  paths: Paths;
  sizeMiB: number;
  peers: Peers;
  measurements: Measurement[];
  failures: string[];
}

interface RunOutcome {
  layout: Layout;
  generationSeconds: number;
  changedBytes: number;
}

/** One complete pass over all phases, on freshly generated data and fresh repositories. */
async function runOnce(run: number, ctx: Context): Promise<RunOutcome> {
  const { paths } = ctx;
  clearRun(paths, false);
  const logs: Logs = { dir: join(paths.logs, `run${run}`), seq: 0 };
  mkdirSync(logs.dir, { recursive: true });
  const cairn = new Cairn(paths.cairnRepo, logs);
  const repoTools: RepoTool[] = ctx.peers.restic ? [cairn, new Restic(paths.resticRepo, paths.resticCache, logs)] : [cairn];

  const started = performance.now();
  const layout = generateDataset(paths.data, ctx.sizeMiB * 1024 * 1024);
  const generationSeconds = (performance.now() - started) / 1000;
  console.log(
    `run ${run}: dataset ${(layout.bytes / MB).toFixed(0)} MB generated in ${generationSeconds.toFixed(1)} s: ` +
      `${layout.dbFiles.length} page files, ${layout.randomFiles.length} random files, ${layout.smallFiles} small files in ${layout.dirs} directories`,
  );

  for (const tool of repoTools) await tool.init(); // not timed
  const record = (m: Omit<Measurement, 'run'>): void => {
    ctx.measurements.push({ run, ...m });
    const bytes =
      m.addedBytes !== undefined
        ? `+${(m.addedBytes / MB).toFixed(1)} MB`
        : m.storedBytes !== undefined
          ? `${(m.storedBytes / MB).toFixed(1)} MB stored`
          : '';
    const noisy =
      m.otherCpuSeconds !== undefined && m.otherCpuSeconds > NOISE * m.seconds
        ? `  (noisy: other processes used ${m.otherCpuSeconds.toFixed(1)} CPU-s meanwhile)`
        : '';
    console.log(`  ${m.scenario.padEnd(24)} ${m.tool.padEnd(9)} ${m.seconds.toFixed(2).padStart(7)} s  ${bytes}${noisy}`);
  };
  const backupAll = async (scenario: Scenario): Promise<void> => {
    for (const tool of repoTools) record(await timedBackup(tool, scenario, paths.data));
  };

  // 1. first backups, tar|zstd as the throughput limit beside them
  await backupAll('first backup');
  if (ctx.peers.tar) {
    settle(paths.data);
    const t = await tarZstd(paths.data, paths.tarFile, logs);
    record({
      scenario: 'first backup',
      tool: 'tar|zstd',
      ...figures(t),
      storedBytes: treeBytes(paths.tarFile),
      addedBytes: undefined,
      reportedAddedBytes: undefined,
    });
  }
  // 2. nothing changed
  await backupAll('unchanged re-backup');
  // 3. the same changes for every tool: applied once, then each tool's re-backup
  const changedBytes = mutateDataset(paths.data, layout, CHANGE_FRACTION);
  console.log(
    `  changed ${(changedBytes / MB).toFixed(1)} MB in place (${((changedBytes / layout.bytes) * 100).toFixed(1)}% of the bytes: scattered 16 KiB pages and ranges of the random files)`,
  );
  await backupAll('re-backup after changes');
  // 4. restores, each compared byte for byte with the data
  for (const tool of repoTools) {
    const target = join(paths.restores, tool.name);
    mkdirSync(paths.restores, { recursive: true });
    settle();
    const t = await tool.restore(target);
    record({
      scenario: 'restore',
      tool: tool.name,
      ...figures(t),
      storedBytes: treeBytes(tool.repo),
      addedBytes: undefined,
      reportedAddedBytes: undefined,
    });
    checkRestore(tool.name, paths.data, tool.restoredRoot(target, paths.data), ctx.failures);
  }
  // 5. reading everything back
  for (const tool of repoTools) {
    settle();
    const t = await tool.verify();
    record({
      scenario: 'verify --read-data',
      tool: tool.name,
      ...figures(t),
      storedBytes: treeBytes(tool.repo),
      addedBytes: undefined,
      reportedAddedBytes: undefined,
    });
  }
  // Large deletions wait until nothing is timed: on this disk (ext4 with `discard`) deleting a
  // GiB right before a command made the command up to ~2× slower.
  rmSync(paths.tarFile, { force: true });
  rmSync(paths.restores, { recursive: true, force: true });
  return { layout, generationSeconds, changedBytes };
}

/** A restore that differs from the data is a real failure: said loudly, and the exit code will be 1. */
function checkRestore(tool: string, data: string, restored: string, failures: string[]): void {
  const differences = compareTrees(data, restored);
  if (!differences) {
    console.log(`  ${tool} restore is byte-identical to the data`);
    return;
  }
  const message = `${tool} restore differs from the data:\n${differences.split('\n').slice(0, 20).join('\n')}`;
  failures.push(message);
  console.error(`\n!!!!!!!! RESTORE MISMATCH !!!!!!!!\n${message}\n`);
}

/** The figures every step records from its command. */
function figures(t: Timed): Pick<Measurement, 'seconds' | 'peakRssMiB' | 'cpuSeconds' | 'otherCpuSeconds'> {
  return { seconds: t.seconds, peakRssMiB: t.peakRssMiB, cpuSeconds: t.cpuSeconds, otherCpuSeconds: t.otherCpuSeconds };
}

async function timedBackup(tool: RepoTool, scenario: Scenario, data: string): Promise<Omit<Measurement, 'run'>> {
  settle(data);
  const before = treeBytes(tool.repo);
  const result = await tool.backup(data);
  const after = treeBytes(tool.repo);
  return {
    scenario,
    tool: tool.name,
    ...figures(result),
    storedBytes: after,
    addedBytes: after - before,
    reportedAddedBytes: result.reportedAddedBytes,
  };
}

/** Installs what is missing where allowed; a peer that cannot be had is skipped with a message. */
function checkPrerequisites(onlyCairn: boolean): Peers {
  if (!ensureCommand('/usr/bin/time', 'time'))
    console.log('GNU time is missing and cannot be installed: peak RSS comes from polling /proc (VmHWM)');
  if (!ensureCommand('diff', 'diffutils')) throw new CommandFailed('diff is needed to check restores');
  if (onlyCairn) return { tar: false, restic: false };
  const tar = ensureCommand('tar', 'tar') && ensureCommand('zstd', 'zstd');
  if (!tar) console.log('tar or zstd is missing and cannot be installed: the tar|zstd peer is skipped');
  const restic = ensureCommand('restic', 'restic');
  if (!restic) console.log('restic is missing and cannot be installed (Debian package restic): the restic peer is skipped');
  return { tar, restic };
}

function machine(peers: Peers): Record<string, unknown> {
  return {
    cpus: cpus().length,
    cpuModel: cpus()[0]?.model,
    memoryBytes: totalmem(),
    node: process.version,
    cairn: firstLine(process.execPath, [CAIRN_BIN, '--version']),
    cairnCli: cliKind(),
    restic: peers.restic ? firstLine('restic', ['version']) : undefined,
    zstd: peers.tar ? firstLine('zstd', ['--version']) : undefined,
  };
}

async function main(): Promise<number> {
  const options = parseOptions();
  const peers = checkPrerequisites(options.onlyCairn);
  const work = prepareWorkDir(options.dir);
  const paths = pathsIn(work);
  // Cairn runs as operators and hosts run it: the package bin on the bundle of npm run build:cli.
  buildCairn();
  // --only-pitr and --only-pages run their section alone.
  const fileRuns = !options.onlyPitr && !options.onlyPages;
  if (fileRuns)
    console.log(
      `work dir ${work}; ${options.sizeMiB} MiB of data, ${options.runs} run(s); page cache warmed (data read once) before every timed command; ` +
        `cairn runs through its bin (agent/cli/bin.js) on the ${cliKind() === 'build' ? 'bundle of npm run build:cli' : 'SOURCES (a file changed after the build)'}\n`,
    );

  const ctx: Context = { paths, sizeMiB: options.sizeMiB, peers, measurements: [], failures: [] };
  const { measurements, failures } = ctx;
  const outcomes: RunOutcome[] = [];
  clearRun(paths, true);
  try {
    for (let run = 1; run <= (fileRuns ? options.runs : 0); run++) outcomes.push(await runOnce(run, ctx));
  } catch (e) {
    // A failed command ends the runs; what was measured so far is still reported.
    failures.push(e instanceof Error ? e.message : String(e));
    console.error(`\nFAILED: ${e instanceof Error ? e.message : String(e)}\n`);
  }
  // Each section below runs whatever failed before it; its own failure is reported and ends only it.
  const section = async <T>(name: string, run: () => Promise<T>): Promise<T | undefined> => {
    try {
      return await run();
    } catch (e) {
      failures.push(e instanceof Error ? e.message : String(e));
      console.error(`\nFAILED (${name}): ${e instanceof Error ? e.message : String(e)}\n`);
      return undefined;
    }
  };
  const logsOf = (name: string): Logs => ({ dir: join(paths.logs, name), seq: 0 });
  // Start-up (startup.ts): cairn --version and snapshots beside bare node, from the sources and the build.
  const startup: StartupResult | undefined = fileRuns
    ? await section('start-up', async () => {
        const result = await startupBench({ runs: 11, work: join(work, 'startup') });
        console.log(`\n${formatStartup(result)}`);
        return result;
      })
    : undefined;
  // S3 (s3.ts): the last run's data (its phase-3 state) through s3rver, beside restic.
  const s3: S3Result | undefined =
    fileRuns && !options.skipS3 && outcomes.length > 0
      ? await section('S3', () =>
          s3Bench({
            data: paths.data,
            dataBytes: outcomes[0]?.layout.bytes ?? 0,
            work: join(work, 's3'),
            logs: logsOf('s3'),
            restic: peers.restic,
            failures,
          }),
        )
      : undefined;
  // Dataset C (small-files.ts), beside restic.
  const smallFiles: SmallFilesResult | undefined =
    fileRuns && !options.skipC
      ? await section('dataset C', () => smallFilesBench({ work: join(work, 'c'), logs: logsOf('c'), restic: peers.restic, failures }))
      : undefined;
  // Memory at N times the data (scale.ts); the runs' repositories and data make room for it, unless
  // they are to be kept (--keep, or a failure to inspect).
  let scaled: ScaleResult | undefined;
  if (fileRuns && options.scale > 1 && outcomes.length > 0) {
    if (!options.keep && failures.length === 0) clearRun(paths, false);
    scaled = await section(`${options.scale}×`, () =>
      scaleBench({ work: join(work, 'scale'), sizeMiB: options.sizeMiB, factor: options.scale, logs: logsOf('scale'), failures }),
    );
  }

  let pitr: PitrMeasurement[] | undefined;
  if (options.pitrSeconds > 0 && !options.onlyPages) {
    const missing = pitrPrerequisites();
    if (missing) console.log(`\nPITR section skipped: ${missing}`);
    else
      pitr = await section('PITR', () =>
        pitrBench({ seconds: options.pitrSeconds, scale: options.pitrScale, logDir: join(paths.logs, 'pitr') }),
      );
  }

  const pages: PageIncrementalResult[] | undefined =
    !options.skipPages && !options.onlyPitr
      ? await section('page incrementals', () => pageIncrementalsBench({ logDir: paths.logs, peers: !options.onlyCairn }))
      : undefined;

  const datasetBytes = outcomes[0]?.layout.bytes ?? options.sizeMiB * 1024 * 1024;
  const changedBytes = outcomes[0]?.changedBytes ?? 0;
  const rows = summarize(measurements, datasetBytes);
  const list = ratios(rows, changedBytes);
  if (measurements.length > 0) {
    console.log(
      `\n${(datasetBytes / MB).toFixed(0)} MB dataset, ${(changedBytes / MB).toFixed(1)} MB changed for phase 3; ${options.runs > 1 ? `medians of ${options.runs} runs (peak RSS: the largest)` : 'one run'}; MB/s = dataset bytes / seconds (MB = 10^6); peak RSS = the largest single process (of a pipeline too)\n`,
    );
    console.log(formatResults(rows, list));
    printReportedAdded(measurements);
    printNoise(measurements);
  }
  if (s3) console.log(`\n${formatS3(s3)}`);
  if (smallFiles) console.log(`\n${formatSmallFiles(smallFiles)}`);
  if (scaled) {
    const peakAtOne = (scenario: Scenario): number | undefined =>
      rows.find((r) => r.tool === 'cairn' && r.scenario === scenario)?.peakRssMiB;
    console.log(`\n${formatScale(scaled, { backup: peakAtOne('first backup'), restore: peakAtOne('restore') })}`);
  }
  if (pages && pages.length > 0) console.log(`\npage incrementals, all datasets:${formatPageIncrementals(pages)}`);

  writeFileSync(
    options.json,
    `${JSON.stringify({ date: new Date().toISOString(), machine: machine(peers), options, datasetBytes, changedBytes, runs: outcomes.map(describeRun), measurements, rows, ratios: list, s3, smallFiles, scaled, pitr, pages, startup, failures }, null, 2)}\n`,
  );
  console.log(`\nfigures written to ${options.json}`);

  if (failures.length > 0) {
    console.error(`\n${failures.length} failure(s); work dir kept for inspection: ${work} (command logs in ${paths.logs})`);
    return 1;
  }
  if (options.keep) console.log(`work dir kept: ${work}`);
  else if (options.dir) clearRun(paths, true);
  else rmSync(work, { recursive: true, force: true });
  return 0;
}

function describeRun(outcome: RunOutcome): Record<string, unknown> {
  const { layout } = outcome;
  return {
    generationSeconds: outcome.generationSeconds,
    changedBytes: outcome.changedBytes,
    bytes: layout.bytes,
    pageFiles: layout.dbFiles.length,
    randomFiles: layout.randomFiles.length,
    smallFiles: layout.smallFiles,
    smallBytes: layout.smallBytes,
    directories: layout.dirs,
  };
}

/** Says which figures other processes on the machine may have disturbed. */
function printNoise(measurements: Measurement[]): void {
  const noisy = measurements.filter((m) => m.otherCpuSeconds !== undefined && m.otherCpuSeconds > NOISE * m.seconds);
  if (noisy.length === 0) {
    console.log('no other process used noticeable CPU during the timed commands');
    return;
  }
  const list = noisy.map((m) => `${m.scenario}/${m.tool} (${m.otherCpuSeconds!.toFixed(1)} CPU-s in ${m.seconds.toFixed(1)} s)`);
  console.log(`noisy figures (other processes, or kernel writeback, used CPU meanwhile): ${list.join('; ')}`);
}

/** Cairn's own summary figure beside the repository growth the table shows (they should agree closely). */
function printReportedAdded(measurements: Measurement[]): void {
  const cairn = measurements.filter((m) => m.tool === 'cairn' && m.reportedAddedBytes !== undefined);
  if (cairn.length === 0) return;
  const parts = cairn.map((m) => `${m.scenario}${m.run > 1 ? ` (run ${m.run})` : ''}: ${(m.reportedAddedBytes! / MB).toFixed(1)} MB`);
  console.log(`\ncairn's summary bytesAdded: ${parts.join('; ')}`);
}

process.exitCode = await main().catch((e: unknown) => {
  console.error(e instanceof Error ? `${e.name}: ${e.message}` : e);
  return 1;
});
