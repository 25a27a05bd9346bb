/**
 * Memory at ten times the data (issue 21: peak RSS at 10× no more than 1.2× of the figure at 1×).
 * The bench's dataset generated again at `factor` times its size (the same mix: page files, large
 * random files, and ten times as many small files), Cairn's first backup of it and its restore,
 * the restore compared byte for byte; their peak RSS is set beside the 1× run's in bench.ts.
 * Cairn alone: the aim compares Cairn with itself, and the disk has room for one repository of
 * this size, not for the peers' beside it.
 */
import { mkdirSync, rmSync, statfsSync } from 'node:fs';
import { join } from 'node:path';
import { generateDataset } from './dataset.ts';
import { compareTrees, settle } from './measure.ts';
import { Cairn, type Logs } from './tools.ts';

const MB = 1e6;

export interface ScaleResult {
  factor: number;
  dataBytes: number;
  smallFiles: number;
  backup: { seconds: number; peakRssMiB: number | undefined };
  restore: { seconds: number; peakRssMiB: number | undefined };
}

/** Runs in `work` (removed after). Undefined (said why) when the disk lacks room for the data, its repository and its restore. */
export async function scaleBench(options: {
  work: string;
  sizeMiB: number;
  factor: number;
  logs: Logs;
  failures: string[];
}): Promise<ScaleResult | undefined> {
  const { work, factor, logs } = options;
  const bytes = options.sizeMiB * factor * 1024 * 1024;
  rmSync(work, { recursive: true, force: true });
  mkdirSync(work, { recursive: true });
  const fs = statfsSync(work);
  // The data, a repository of at most its size, its restore, and a margin.
  const needed = 3.2 * bytes;
  if (fs.bavail * fs.bsize < needed) {
    console.log(
      `\n${factor}× section skipped: it needs ~${(needed / 1e9).toFixed(1)} GB free under ${work}, there are ${((fs.bavail * fs.bsize) / 1e9).toFixed(1)} GB`,
    );
    rmSync(work, { recursive: true, force: true });
    return undefined;
  }
  mkdirSync(logs.dir, { recursive: true });
  try {
    const data = join(work, 'data');
    const started = performance.now();
    const layout = generateDataset(data, bytes);
    console.log(
      `\n${factor}× the data: ${(layout.bytes / MB).toFixed(0)} MB generated in ${((performance.now() - started) / 1000).toFixed(0)} s ` +
        `(${layout.smallFiles} small files); cairn's first backup and restore of it:`,
    );
    const cairn = new Cairn(join(work, 'repo'), logs);
    await cairn.init();
    settle(data);
    const backup = await cairn.backup(data);
    console.log(`  first backup  ${backup.seconds.toFixed(1).padStart(6)} s  peak ${backup.peakRssMiB?.toFixed(0) ?? '?'} MiB`);
    const target = join(work, 'restore');
    settle();
    const restore = await cairn.restore(target);
    console.log(`  restore       ${restore.seconds.toFixed(1).padStart(6)} s  peak ${restore.peakRssMiB?.toFixed(0) ?? '?'} MiB`);
    const differences = compareTrees(data, target);
    if (differences)
      options.failures.push(`cairn restore at ${factor}× differs from the data:\n${differences.split('\n').slice(0, 20).join('\n')}`);
    else console.log(`  cairn restore at ${factor}× is byte-identical to the data`);
    return {
      factor,
      dataBytes: layout.bytes,
      smallFiles: layout.smallFiles,
      backup: { seconds: backup.seconds, peakRssMiB: backup.peakRssMiB },
      restore: { seconds: restore.seconds, peakRssMiB: restore.peakRssMiB },
    };
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

/** Peak RSS at `factor`× over the 1× run's, per scenario (aim ≤ 1.2×). */
export function formatScale(result: ScaleResult, atOne: { backup: number | undefined; restore: number | undefined }): string {
  const line = (scenario: string, big: number | undefined, one: number | undefined): string =>
    big !== undefined && one !== undefined
      ? `  peak RSS, ${scenario}: ${big.toFixed(0)} MiB at ${result.factor}× against ${one.toFixed(0)} MiB at 1×: ${(big / one).toFixed(2)}× (aim ≤ 1.2×)`
      : `  peak RSS, ${scenario}: not measured at both sizes`;
  return [line('first backup', result.backup.peakRssMiB, atOne.backup), line('restore', result.restore.peakRssMiB, atOne.restore)].join(
    '\n',
  );
}
