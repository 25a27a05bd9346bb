/**
 * The fuzzing part of the reliability soak (docs/reliability.md, "Fuzzing"):
 * runs every decoder fuzzer under test/fuzz/ in sequence (never in parallel:
 * the machine is shared) with CAIRN_FUZZ_RUNS inputs per property (default
 * 100,000), then prints one line per property: inputs, seed, duration.
 *
 *   node test/soak/fuzz.ts                 # every fuzzer, 100,000 inputs each
 *   node test/soak/fuzz.ts binlog tree     # only the files named
 *   CAIRN_FUZZ_RUNS=20000 CAIRN_FUZZ_SEED=42 node test/soak/fuzz.ts envelope
 *
 * A failing property prints fast-check's seed and counterexample; the same
 * CAIRN_FUZZ_SEED reproduces it. Exit status 1 when any file failed. Properties
 * marked todo (crashes whose owners must fix them) run but do not fail the soak.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
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

for (const file of files) {
  const t0 = Date.now();
  console.log(`--- ${file}: ${runs} inputs per property`);
  const result = spawnSync(process.execPath, ['--test', '--test-reporter=spec', join(root, file)], {
    stdio: 'inherit',
    env: { ...process.env, CAIRN_FUZZ_RUNS: runs, CAIRN_FUZZ_REPORT: reportFile },
  });
  console.log(`--- ${file}: exit ${result.status ?? result.signal}, ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  if (result.status !== 0) failed.push(file);
}

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
  `\n${lines.length} properties passed in ${((Date.now() - started) / 1000).toFixed(0)} s; failed files: ${failed.length ? failed.join(', ') : 'none'}`,
);
rmSync(dir, { recursive: true, force: true });
process.exitCode = failed.length ? 1 : 0;
