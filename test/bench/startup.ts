/**
 * Start-up time (issue 21; aim: at most 0.15 s over a bare `node -e 0`): `cairn --version` and
 * `cairn snapshots` on a local repository holding one snapshot, each run as a whole process,
 *   - from the sources (agent/cli/cairn.js: Node strips the types of every .ts file it loads),
 *   - through the package bin (agent/cli/bin.js) after `npm run build:cli`: the bundle, compile-cached,
 * beside bare node and beside the repository's key derivation alone (scrypt at the default
 * parameters: `snapshots` opens the repository, so that much of it is the passphrase's cost, not start-up).
 * Runs interleaved, so a load change hits every variant alike; medians reported, with the load average.
 * Never fails on timing: only a command that fails is a failure.
 *
 * In `npm run bench` (bench.ts), or alone: `node test/bench/startup.ts [--runs N]`.
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { DEFAULT_SCRYPT } from '../../agent/core/crypto.ts';
import { CommandFailed, runTimed } from './measure.ts';
import { buildCairn, CAIRN_BIN, CAIRN_CLI, cliKind } from './tools.ts';

const SOURCES = CAIRN_CLI;
const BIN = CAIRN_BIN;
const AIM_MS = 150;

export interface StartupFigure {
  label: string;
  /** Median wall time of the runs, ms, and over bare node's median. */
  medianMs: number;
  overNodeMs: number;
  /** Median CPU time (user + system) when GNU time measured it, ms. */
  cpuMedianMs: number | undefined;
  runs: number;
}

export interface StartupResult {
  figures: StartupFigure[];
  loadBefore: number[];
  loadAfter: number[];
  /** Whether the bin ran the build at the end (a source edited meanwhile makes it run the sources). */
  binRanBuild: boolean;
}

/** Builds the CLI (npm run build:cli: the bin's own build), makes a repository, measures; `work` is a scratch directory, removed after. */
export async function startupBench(options: { runs: number; work: string }): Promise<StartupResult> {
  try {
    return await measure(options);
  } finally {
    rmSync(options.work, { recursive: true, force: true });
  }
}

async function measure(options: { runs: number; work: string }): Promise<StartupResult> {
  const { work } = options;
  mkdirSync(join(work, 'logs'), { recursive: true });
  buildCairn();

  const env = { CAIRN_PASSWORD: 'start-up bench', CAIRN_REPOSITORY: join(work, 'repo') };
  mkdirSync(join(work, 'data'), { recursive: true });
  writeFileSync(join(work, 'data', 'hello.txt'), 'hello\n');
  for (const args of [['init'], ['backup', join(work, 'data')]]) {
    const r = spawnSync(process.execPath, [SOURCES, ...args], { env: { ...process.env, ...env }, encoding: 'utf8' });
    if (r.status !== 0) throw new CommandFailed(`cairn ${args[0]} for the start-up bench failed: ${r.stderr}`);
  }

  const { N, r, p } = DEFAULT_SCRYPT;
  const scrypt = `require('node:crypto').scryptSync('x', Buffer.alloc(16), 32, { N: ${N}, r: ${r}, p: ${p}, maxmem: ${256 * N * r + (1 << 20)} })`;
  const variants: [string, string[]][] = [
    ['node -e 0', ['-e', '0']],
    ['cairn --version (sources)', [SOURCES, '--version']],
    ['cairn --version (build)', [BIN, '--version']],
    ['cairn snapshots (sources)', [SOURCES, 'snapshots']],
    ['cairn snapshots (build)', [BIN, 'snapshots']],
    [`node + scrypt N=${N} r=${r}`, ['-e', scrypt]],
  ];
  const loadBefore = loadavg();
  const times = new Map(variants.map(([label]) => [label, { wall: [] as number[], cpu: [] as number[] }]));
  for (let run = 0; run < options.runs; run++) {
    for (const [label, args] of variants) {
      const t = await runTimed(process.execPath, args, { env, logPrefix: join(work, 'logs', 'startup') });
      times.get(label)!.wall.push(t.seconds * 1000);
      if (t.cpuSeconds !== undefined) times.get(label)!.cpu.push(t.cpuSeconds * 1000);
    }
  }
  const loadAfter = loadavg();
  const node = median(times.get('node -e 0')!.wall);
  const figures = variants.map(([label]) => {
    const { wall, cpu } = times.get(label)!;
    const medianMs = median(wall);
    return { label, medianMs, overNodeMs: medianMs - node, cpuMedianMs: cpu.length ? median(cpu) : undefined, runs: wall.length };
  });
  return { figures, loadBefore, loadAfter, binRanBuild: cliKind() === 'build' };
}

export function formatStartup(result: StartupResult): string {
  const load = (l: number[]): string => l.map((x) => x.toFixed(2)).join(' ');
  const lines = result.figures.map((f) => {
    const cpu = f.cpuMedianMs === undefined ? '' : `   cpu ${f.cpuMedianMs.toFixed(0).padStart(5)} ms`;
    const over = f.label === 'node -e 0' ? '' : `   ${f.overNodeMs >= 0 ? '+' : ''}${f.overNodeMs.toFixed(0)} ms over node`;
    return `  ${f.label.padEnd(28)} ${f.medianMs.toFixed(0).padStart(6)} ms${cpu}${over}`;
  });
  return [
    `start-up, medians of ${result.figures[0]?.runs ?? 0} interleaved runs (aim: ≤ ${AIM_MS} ms over node); load average ${load(result.loadBefore)} before, ${load(result.loadAfter)} after`,
    ...lines,
    result.binRanBuild
      ? '  (build) = agent/cli/bin.js running the bundle of npm run build:cli'
      : '  (build) ran the SOURCES: a file was edited after the build, so the bin fell back (figures for the build are not meaningful)',
  ].join('\n');
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)] ?? Number.NaN;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const { values } = parseArgs({ options: { runs: { type: 'string', default: '11' } } });
  const runs = Number(values.runs);
  if (!Number.isInteger(runs) || runs < 1) throw new Error(`--runs must be a whole number ≥ 1, not ${values.runs}`);
  const work = mkdtempSync(join(tmpdir(), 'cairn-startup-bench-'));
  try {
    console.log(formatStartup(await startupBench({ runs, work })));
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}
