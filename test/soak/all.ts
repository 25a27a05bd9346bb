/**
 * `npm run soak`: every part of the reliability soak (docs/reliability.md), one
 * after another (never in parallel: the machine is shared), each as its own
 * process, then a summary: part, result, seconds and its figures.
 *
 *   node test/soak/all.ts                        # every part
 *   node test/soak/all.ts sigkill storage-faults # only these, in this order
 *
 * CAIRN_SOAK_SEED is passed on (each part prints the seed it used). Exit status 1
 * when any part failed.
 */
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { RESULT_PREFIX } from './soak-report.ts';

const PARTS = ['sigkill', 'storage-faults', 'clock-skew', 'hostile-host', 'fuzz'];
const wanted = process.argv.slice(2);
const parts = wanted.length === 0 ? PARTS : wanted.filter((p) => PARTS.includes(p));
const rows: Array<{ part: string; status: string; seconds: number; figures: string }> = [];
const started = Date.now();

for (const part of parts) {
  const t0 = Date.now();
  console.log(`=== soak part ${part}`);
  let result: { passed: boolean; figures: unknown } | undefined;
  const code = await new Promise<number | null>((resolve) => {
    const child = spawn(process.execPath, [join(import.meta.dirname, `${part}.ts`)], { stdio: ['ignore', 'pipe', 'inherit'] });
    let pending = '';
    child.stdout.on('data', (chunk: Buffer) => {
      process.stdout.write(chunk);
      pending += chunk.toString();
      const lines = pending.split('\n');
      pending = lines.pop() ?? '';
      for (const line of lines) if (line.startsWith(RESULT_PREFIX)) result = JSON.parse(line.slice(RESULT_PREFIX.length)) as typeof result;
    });
    child.on('close', (exit) => resolve(exit));
  });
  const figures = result ? JSON.stringify(result.figures).slice(0, 400) : '(the fuzz part prints its own table above)';
  rows.push({ part, status: code === 0 ? 'passed' : `FAILED (exit ${code})`, seconds: Math.round((Date.now() - t0) / 1000), figures });
}

console.log('\n=== soak summary\npart | result | seconds | figures');
for (const row of rows) console.log(`${row.part} | ${row.status} | ${row.seconds} | ${row.figures}`);
console.log(
  `\n${rows.filter((r) => r.status === 'passed').length} of ${rows.length} parts passed in ${Math.round((Date.now() - started) / 1000)} s`,
);
process.exitCode = rows.every((r) => r.status === 'passed') ? 0 : 1;
