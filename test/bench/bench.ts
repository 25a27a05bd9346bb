/**
 * `npm run bench [-- --size MiB] [--only cairn] [--keep] [--dir DIR] [--json FILE]`
 *
 * One run, same data, same machine: Cairn beside `tar | zstd -T2 -3` and restic
 * (Debian package; installed with apt-get when missing and possible). Prints a
 * table and the ratios the targets speak of, writes all figures as JSON. Timing
 * never fails the run; a failing command or a wrong restore does.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';
import { generateDataset, mutateDataset } from './dataset.ts';

const { values: args } = parseArgs({
  options: {
    size: { type: 'string', default: '1024' },
    dir: { type: 'string' },
    keep: { type: 'boolean', default: false },
    json: { type: 'string', default: join(tmpdir(), 'cairn-bench-results.json') },
    only: { type: 'string' },
  },
});

const CAIRN = fileURLToPath(new URL('../../agent/cli/cairn.js', import.meta.url));
const MB = 1e6;

interface Measure {
  tool: string;
  phase: string;
  seconds: number;
  peakRssMiB: number;
  storedBytes?: number;
  addedBytes?: number;
}

const results: Measure[] = [];

/** Runs a command under /usr/bin/time; returns wall seconds and the peak RSS of the largest process. */
function timed(cmd: string, argv: string[], env: Record<string, string> = {}): { seconds: number; peakRssMiB: number; stdout: string } {
  const timeFile = join(tmpdir(), `cairn-bench-time-${process.pid}`);
  const run = spawnSync('/usr/bin/time', ['-f', '%e %M', '-o', timeFile, cmd, ...argv], {
    env: { ...process.env, ...env },
    encoding: 'utf8',
    maxBuffer: 256 << 20,
  });
  if (run.status !== 0) throw new Error(`${cmd} ${argv.join(' ')} failed (${run.status}): ${run.stderr.slice(-2000)}`);
  const [seconds, rssKiB] = execFileSync('tail', ['-1', timeFile], { encoding: 'utf8' }).trim().split(' ').map(Number);
  return { seconds: seconds as number, peakRssMiB: (rssKiB as number) / 1024, stdout: run.stdout };
}

async function duBytes(path: string): Promise<number> {
  let total = 0;
  const walk = async (p: string): Promise<void> => {
    for (const e of await readdir(p, { withFileTypes: true })) {
      if (e.isDirectory()) await walk(join(p, e.name));
      else if (e.isFile()) total += (await stat(join(p, e.name))).size;
    }
  };
  if (existsSync(path)) await walk(path);
  return total;
}

function ensureRestic(): boolean {
  if (spawnSync('restic', ['version']).status === 0) return true;
  if (process.getuid?.() === 0 && spawnSync('apt-get', ['install', '-y', '-qq', 'restic'], { stdio: 'ignore', env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } }).status === 0) return true;
  console.log('restic is not installed (Debian: apt-get install restic); its column is skipped');
  return false;
}

function ensureTime(): void {
  if (existsSync('/usr/bin/time')) return;
  if (process.getuid?.() === 0) spawnSync('apt-get', ['install', '-y', '-qq', 'time'], { stdio: 'ignore' });
  if (!existsSync('/usr/bin/time')) throw new Error('/usr/bin/time is missing: apt-get install time');
}

function lastJson(stdout: string, type: string): Record<string, unknown> {
  const line = stdout.split('\n').filter((l) => l.includes(`"type":"${type}"`)).at(-1);
  if (!line) throw new Error(`no ${type} line in the output`);
  return JSON.parse(line) as Record<string, unknown>;
}

async function main(): Promise<void> {
  ensureTime();
  const size = Number(args.size) * 1024 * 1024;
  const work = args.dir ?? (await mkdtemp(join(tmpdir(), 'cairn-bench-')));
  await mkdir(work, { recursive: true });
  const data = join(work, 'data');
  await rm(data, { recursive: true, force: true });
  let started = Date.now();
  const layout = await generateDataset(data, size);
  console.log(`dataset: ${(layout.bytes / MB).toFixed(0)} MB (${layout.dbFiles.length} page files, ${layout.randomFiles.length} random files, ${layout.smallFiles} small files) generated in ${((Date.now() - started) / 1000).toFixed(1)} s in ${data}`);
  const peers = args.only !== 'cairn';
  const restic = peers && ensureRestic();

  const cairnEnv = { CAIRN_REPOSITORY: join(work, 'cairn-repo'), CAIRN_PASSWORD: 'bench' };
  const resticEnv = { RESTIC_REPOSITORY: join(work, 'restic-repo'), RESTIC_PASSWORD: 'bench', RESTIC_CACHE_DIR: join(work, 'restic-cache') };
  for (const p of [cairnEnv.CAIRN_REPOSITORY, resticEnv.RESTIC_REPOSITORY, resticEnv.RESTIC_CACHE_DIR]) await rm(p, { recursive: true, force: true });
  const warm = (): void => void spawnSync('bash', ['-c', `find ${JSON.stringify(data)} -type f -exec cat {} + > /dev/null`]);
  const cairn = (...argv: string[]): ReturnType<typeof timed> => timed(process.execPath, [CAIRN, '--json', ...argv], cairnEnv);
  const resticRun = (...argv: string[]): ReturnType<typeof timed> => timed('restic', ['--no-lock', '-q', ...argv], resticEnv);

  execFileSync(process.execPath, [CAIRN, 'init'], { env: { ...process.env, ...cairnEnv }, stdio: 'ignore' });
  if (restic) execFileSync('restic', ['init', '--repository-version', '2'], { env: { ...process.env, ...resticEnv }, stdio: 'ignore' });

  const record = (m: Measure): void => {
    results.push(m);
    console.log(`  ${m.tool.padEnd(10)} ${m.phase.padEnd(18)} ${m.seconds.toFixed(2).padStart(7)} s`);
  };

  warm();
  let r = cairn('backup', data);
  record({ tool: 'cairn', phase: 'first backup', seconds: r.seconds, peakRssMiB: r.peakRssMiB, storedBytes: await duBytes(cairnEnv.CAIRN_REPOSITORY), addedBytes: lastJson(r.stdout, 'summary').bytesAdded as number });
  if (peers) {
    warm();
    const out = join(work, 'tar.zst');
    const t = timed('bash', ['-c', `tar -cf - -C ${JSON.stringify(data)} . | zstd -T2 -3 -q -f -o ${JSON.stringify(out)}`]);
    record({ tool: 'tar|zstd', phase: 'first backup', seconds: t.seconds, peakRssMiB: t.peakRssMiB, storedBytes: (await stat(out)).size });
    await rm(out);
  }
  if (restic) {
    warm();
    const t = resticRun('backup', '--compression', 'auto', '--host', 'bench', data);
    record({ tool: 'restic', phase: 'first backup', seconds: t.seconds, peakRssMiB: t.peakRssMiB, storedBytes: await duBytes(resticEnv.RESTIC_REPOSITORY) });
  }

  r = cairn('backup', data);
  record({ tool: 'cairn', phase: 'unchanged backup', seconds: r.seconds, peakRssMiB: r.peakRssMiB, addedBytes: lastJson(r.stdout, 'summary').bytesAdded as number });
  if (restic) {
    const before = await duBytes(resticEnv.RESTIC_REPOSITORY);
    const t = resticRun('backup', '--compression', 'auto', '--host', 'bench', data);
    record({ tool: 'restic', phase: 'unchanged backup', seconds: t.seconds, peakRssMiB: t.peakRssMiB, addedBytes: (await duBytes(resticEnv.RESTIC_REPOSITORY)) - before });
  }

  started = Date.now();
  const changed = await mutateDataset(data, layout, 0.05);
  console.log(`changed ${(changed / MB).toFixed(0)} MB in place (${((changed / layout.bytes) * 100).toFixed(1)}%) in ${((Date.now() - started) / 1000).toFixed(1)} s`);
  warm();
  r = cairn('backup', data);
  record({ tool: 'cairn', phase: 'changed backup', seconds: r.seconds, peakRssMiB: r.peakRssMiB, addedBytes: lastJson(r.stdout, 'summary').bytesAdded as number });
  if (restic) {
    const before = await duBytes(resticEnv.RESTIC_REPOSITORY);
    const t = resticRun('backup', '--compression', 'auto', '--host', 'bench', data);
    record({ tool: 'restic', phase: 'changed backup', seconds: t.seconds, peakRssMiB: t.peakRssMiB, addedBytes: (await duBytes(resticEnv.RESTIC_REPOSITORY)) - before });
  }

  const cairnTarget = join(work, 'cairn-restore');
  await rm(cairnTarget, { recursive: true, force: true });
  r = cairn('restore', 'latest', '--target', cairnTarget);
  record({ tool: 'cairn', phase: 'restore', seconds: r.seconds, peakRssMiB: r.peakRssMiB });
  const diff = spawnSync('diff', ['-r', '-q', data, cairnTarget], { encoding: 'utf8' });
  if (diff.status !== 0) throw new Error(`cairn's restore differs from the data:\n${diff.stdout.slice(0, 2000)}`);
  await rm(cairnTarget, { recursive: true, force: true });
  if (restic) {
    const target = join(work, 'restic-restore');
    await rm(target, { recursive: true, force: true });
    const t = resticRun('restore', 'latest', '--target', target);
    record({ tool: 'restic', phase: 'restore', seconds: t.seconds, peakRssMiB: t.peakRssMiB });
    await rm(target, { recursive: true, force: true });
  }

  r = cairn('verify', '--read-data');
  record({ tool: 'cairn', phase: 'verify --read-data', seconds: r.seconds, peakRssMiB: r.peakRssMiB });
  if (restic) {
    const t = resticRun('check', '--read-data');
    record({ tool: 'restic', phase: 'check --read-data', seconds: t.seconds, peakRssMiB: t.peakRssMiB });
  }

  report(layout.bytes, changed);
  await writeFile(args.json, JSON.stringify({ date: new Date().toISOString(), datasetBytes: layout.bytes, changedBytes: changed, results }, null, 2));
  console.log(`\nfigures written to ${args.json}`);
  if (!args.keep && !args.dir) await rm(work, { recursive: true, force: true });
}

function report(datasetBytes: number, changedBytes: number): void {
  const find = (tool: string, phase: string): Measure | undefined => results.find((m) => m.tool === tool && m.phase.startsWith(phase));
  console.log(`\n| phase | tool | seconds | MB/s | stored / added MB | peak RSS MiB |\n| --- | --- | ---: | ---: | ---: | ---: |`);
  for (const m of results) {
    const rate = m.phase === 'unchanged backup' || m.phase === 'changed backup' ? '' : (datasetBytes / MB / m.seconds).toFixed(0);
    const bytes = m.storedBytes ?? m.addedBytes;
    console.log(`| ${m.phase} | ${m.tool} | ${m.seconds.toFixed(2)} | ${rate} | ${bytes === undefined ? '' : (bytes / MB).toFixed(1)} | ${m.peakRssMiB.toFixed(0)} |`);
  }
  const rows: Array<[string, number | undefined, string, (v: number) => boolean]> = [];
  const first = find('cairn', 'first backup');
  const tar = find('tar|zstd', 'first backup');
  const resticFirst = find('restic', 'first backup');
  if (first && tar) rows.push(['first backup throughput vs tar|zstd -T2 -3', tar.seconds / first.seconds, '≥ 0.9×', (v) => v >= 0.9]);
  if (first && resticFirst) rows.push(['first backup throughput vs restic', resticFirst.seconds / first.seconds, '≥ 1.5×', (v) => v >= 1.5]);
  if (first && resticFirst?.storedBytes && first.storedBytes) rows.push(['bytes stored vs restic', first.storedBytes / resticFirst.storedBytes, '≤ 1×', (v) => v <= 1]);
  const unchanged = find('cairn', 'unchanged backup');
  if (first && unchanged) rows.push(['unchanged re-backup time / first backup', unchanged.seconds / first.seconds, '< 5%', (v) => v < 0.05]);
  const changedCairn = find('cairn', 'changed backup');
  const changedRestic = find('restic', 'changed backup');
  if (changedCairn?.addedBytes !== undefined) rows.push([`bytes added after ${(changedBytes / MB).toFixed(0)} MB changed in place, ÷ changed`, changedCairn.addedBytes / changedBytes, 'report', () => true]);
  if (changedCairn?.addedBytes !== undefined && changedRestic?.addedBytes) rows.push(['bytes added after changes vs restic', changedCairn.addedBytes / changedRestic.addedBytes, '≤ 1×', (v) => v <= 1]);
  const restore = find('cairn', 'restore');
  const resticRestore = find('restic', 'restore');
  if (restore && resticRestore) rows.push(['restore throughput vs restic', resticRestore.seconds / restore.seconds, '≥ 1.5×', (v) => v >= 1.5]);
  const peak = Math.max(...results.filter((m) => m.tool === 'cairn').map((m) => m.peakRssMiB));
  rows.push(['cairn peak RSS, MiB (any phase)', peak, '< 256', (v) => v < 256]);
  const resticPeak = Math.max(0, ...results.filter((m) => m.tool === 'restic').map((m) => m.peakRssMiB));
  if (resticPeak > 0) rows.push(['cairn peak RSS vs restic', peak / resticPeak, '≤ 1× (PERFORMANCE.md)', (v) => v <= 1]);
  console.log(`\n| ratio | value | target | |\n| --- | ---: | --- | --- |`);
  for (const [label, value, target, met] of rows) {
    if (value === undefined) continue;
    console.log(`| ${label} | ${value < 0.1 ? `${(value * 100).toFixed(1)}%` : value.toFixed(2)} | ${target} | ${target === 'report' ? '' : met(value) ? 'met' : 'not met'} |`);
  }
}

await main().catch((error: unknown) => {
  console.error(error instanceof Error ? error.message : error);
  process.exitCode = 1;
});

