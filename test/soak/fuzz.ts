/**
 * The fuzzing part of the reliability soak (docs/reliability.md, "Fuzzing"):
 * runs every decoder fuzzer under test/fuzz/, CAIRN_FUZZ_JOBS files at a time
 * (default: one per processor; each file is one single-threaded process, so on a
 * machine of its own this divides the part's time; give 1 on a shared machine),
 * with CAIRN_FUZZ_RUNS inputs per property (default 100,000), then prints one
 * line per property: inputs, seed, duration.
 *
 *   node test/soak/fuzz.ts                 # every fuzzer, 100,000 inputs each
 *   node test/soak/fuzz.ts binlog tree     # only the files named
 *   CAIRN_FUZZ_RUNS=20000 CAIRN_FUZZ_SEED=42 CAIRN_FUZZ_JOBS=1 node test/soak/fuzz.ts envelope
 *
 * A failing property prints fast-check's seed and counterexample; the same
 * CAIRN_FUZZ_SEED reproduces it. Exit status 1 when any file failed. Properties
 * marked todo (crashes whose owners must fix them) run but do not fail the soak.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';

const root = join(import.meta.dirname, '..', 'fuzz');
const wanted = process.argv.slice(2);
const all = readdirSync(root)
  .filter((f) => f.endsWith('.test.ts'))
  .sort();
// Named files run in the order given.
const files = wanted.length === 0 ? all : wanted.map((w) => `${w}.test.ts`).filter((f) => all.includes(f));
const runs = process.env.CAIRN_FUZZ_RUNS ?? '100000';
const dir = mkdtempSync(join(tmpdir(), 'cairn-fuzz-soak-'));
const reportFile = join(dir, 'report.jsonl');
const failed: string[] = [];
const started = Date.now();

const jobs = Math.max(1, Number(process.env.CAIRN_FUZZ_JOBS ?? availableParallelism()) || 1);

/** One fuzzer file in its own process; its output is printed whole when it ends, so parallel files do not interleave. */
function runFile(file: string): Promise<void> {
  const t0 = Date.now();
  console.log(`--- ${file}: ${runs} inputs per property (started)`);
  const child = spawn(process.execPath, ['--test', '--test-reporter=spec', join(root, file)], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, CAIRN_FUZZ_RUNS: runs, CAIRN_FUZZ_REPORT: reportFile },
  });
  const output: Buffer[] = [];
  child.stdout.on('data', (chunk: Buffer) => output.push(chunk));
  child.stderr.on('data', (chunk: Buffer) => output.push(chunk));
  return new Promise((resolve) => {
    child.on('close', (code, signal) => {
      process.stdout.write(Buffer.concat(output));
      console.log(`--- ${file}: exit ${code ?? signal}, ${((Date.now() - t0) / 1000).toFixed(1)} s`);
      if (code !== 0) failed.push(file);
      resolve();
    });
  });
}

const queue = [...files];
await Promise.all(
  Array.from({ length: Math.min(jobs, queue.length) }, async () => {
    for (let file = queue.shift(); file !== undefined; file = queue.shift()) await runFile(file);
  }),
);

let lines: string[] = [];
try {
  lines = readFileSync(reportFile, 'utf8').trim().split('\n').filter(Boolean);
} catch {
  // No property finished: every file failed before reporting.
}
console.log('\nproperty | inputs | seed | seconds');
for (const line of lines) {
  const { name, runs: n, seed, ms } = JSON.parse(line) as { name: string; runs: number; seed: number; ms: number };
  console.log(`${name} | ${n} | ${seed} | ${(ms / 1000).toFixed(1)}`);
}
console.log(
  `\n${jobs} file(s) at a time; ${lines.length} properties passed in ${((Date.now() - started) / 1000).toFixed(0)} s; failed files: ${failed.length ? failed.join(', ') : 'none'}`,
);
rmSync(dir, { recursive: true, force: true });
process.exitCode = failed.length ? 1 : 0;
