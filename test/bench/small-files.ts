/**
 * Dataset C of PERFORMANCE.md (issue 21): 50,000 small files, 535 MB, half compressible text, half
 * random. Cairn and restic each take a first backup, an unchanged re-backup and a restore (compared
 * byte for byte). Beside them, the floor of any unchanged re-backup written in Node: a Node process
 * that only lists and lstat()s every file, and does nothing else (no repository, no key).
 * Sizes from CAIRN_BENCH_C_FILES and CAIRN_BENCH_C_MB.
 */
import { mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { generateSmallFilesDataset } from './dataset.ts';
import { compareTrees, runTimed, settle } from './measure.ts';
import { Cairn, Restic, type Logs, type RepoTool } from './tools.ts';

const MB = 1e6;

export interface SmallFilesMeasurement {
  tool: string;
  scenario: 'first backup' | 'unchanged re-backup' | 'restore';
  seconds: number;
  peakRssMiB: number | undefined;
}

export interface SmallFilesResult {
  files: number;
  bytes: number;
  measurements: SmallFilesMeasurement[];
  /** `node` listing and lstat()ing every file, nothing else: seconds, and bare `node -e 0`. */
  walkFloorSeconds: number;
  bareNodeSeconds: number;
}

/** The walk that bounds an unchanged re-backup from below (what any re-backup must at least do). */
const WALK_ONLY = `
const { readdirSync, lstatSync } = require('node:fs');
const { join } = require('node:path');
let n = 0;
const walk = (d) => { for (const e of readdirSync(d)) { const p = join(d, e); if (lstatSync(p).isDirectory()) walk(p); else n++; } };
walk(process.argv[1]);
console.log(n);
`;

export async function smallFilesBench(options: {
  work: string;
  logs: Logs;
  restic: boolean;
  failures: string[];
}): Promise<SmallFilesResult> {
  const files = Number(process.env.CAIRN_BENCH_C_FILES ?? 50_000);
  const bytes = Number(process.env.CAIRN_BENCH_C_MB ?? 535) * MB;
  const { work, logs } = options;
  rmSync(work, { recursive: true, force: true });
  mkdirSync(logs.dir, { recursive: true });
  try {
    const data = join(work, 'data');
    const started = performance.now();
    const layout = generateSmallFilesDataset(data, files, bytes);
    console.log(
      `\nDataset C: ${files} small files, ${(layout.bytes / MB).toFixed(0)} MB in ${layout.dirs} directories, generated in ${((performance.now() - started) / 1000).toFixed(0)} s:`,
    );
    const tools: RepoTool[] = [new Cairn(join(work, 'cairn-repo'), logs)];
    if (options.restic) tools.push(new Restic(join(work, 'restic-repo'), join(work, 'restic-cache'), logs));
    const measurements: SmallFilesMeasurement[] = [];
    const record = (
      tool: string,
      scenario: SmallFilesMeasurement['scenario'],
      t: { seconds: number; peakRssMiB: number | undefined },
    ): void => {
      measurements.push({ tool, scenario, seconds: t.seconds, peakRssMiB: t.peakRssMiB });
      console.log(
        `  ${scenario.padEnd(20)} ${tool.padEnd(7)} ${t.seconds.toFixed(2).padStart(7)} s  peak ${t.peakRssMiB?.toFixed(0) ?? '?'} MiB`,
      );
    };
    for (const scenario of ['first backup', 'unchanged re-backup'] as const)
      for (const tool of tools) {
        if (scenario === 'first backup') await tool.init();
        settle(data);
        record(tool.name, scenario, await tool.backup(data));
      }
    for (const tool of tools) {
      const target = join(work, `restore-${tool.name}`);
      settle();
      record(tool.name, 'restore', await tool.restore(target));
      const differences = compareTrees(data, tool.restoredRoot(target, data));
      if (differences)
        options.failures.push(`${tool.name} restore of dataset C differs:\n${differences.split('\n').slice(0, 20).join('\n')}`);
      rmSync(target, { recursive: true, force: true });
    }
    // The floor, median of five each, with the inodes cached as for the re-backups.
    const median = async (label: string, args: string[]): Promise<number> => {
      const seconds: number[] = [];
      for (let i = 0; i < 5; i++)
        seconds.push((await runTimed(process.execPath, args, { logPrefix: join(logs.dir, `${label}-${i}`) })).seconds);
      return seconds.sort((a, b) => a - b)[2] as number;
    };
    settle(data);
    const walkFloorSeconds = await median('walk-only', ['-e', WALK_ONLY, data]);
    const bareNodeSeconds = await median('bare-node', ['-e', '0']);
    return { files, bytes: layout.bytes, measurements, walkFloorSeconds, bareNodeSeconds };
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

/** The aims of PERFORMANCE.md for dataset C, and the walk's floor beside the 5% aim. */
export function formatSmallFiles(result: SmallFilesResult): string {
  const find = (tool: string, scenario: SmallFilesMeasurement['scenario']): number | undefined =>
    result.measurements.find((m) => m.tool === tool && m.scenario === scenario)?.seconds;
  const lines = [`  dataset C (${result.files} files, ${(result.bytes / MB).toFixed(0)} MB):`];
  const first = find('cairn', 'first backup');
  const unchanged = find('cairn', 'unchanged re-backup');
  const versus = (scenario: SmallFilesMeasurement['scenario'], aim: string): void => {
    const cairn = find('cairn', scenario);
    const restic = find('restic', scenario);
    if (cairn && restic) lines.push(`    ${scenario}: cairn ${(restic / cairn).toFixed(2)}× restic's throughput (aim ${aim})`);
  };
  versus('first backup', '≥ 1.5×');
  versus('restore', '≥ 1.5×');
  const resticUnchanged = find('restic', 'unchanged re-backup');
  if (unchanged && resticUnchanged)
    lines.push(`    unchanged re-backup: cairn ${(unchanged / resticUnchanged).toFixed(2)}× restic's time (aim ≤ 0.5×)`);
  if (first && unchanged)
    lines.push(
      `    unchanged re-backup: ${((unchanged / first) * 100).toFixed(1)}% of cairn's first backup (aim ≤ 5%); ` +
        `the floor, node listing and lstat()ing the files and nothing else: ${result.walkFloorSeconds.toFixed(2)} s = ` +
        `${((result.walkFloorSeconds / first) * 100).toFixed(1)}% (bare node ${result.bareNodeSeconds.toFixed(2)} s)`,
    );
  return lines.join('\n');
}
