/**
 * The storage-faults part of the reliability soak (docs/reliability.md, "Storage faults"):
 *
 *   node test/soak/storage-faults.ts
 *   CAIRN_SOAK_SEED=42 CAIRN_SOAK_STEPS=30 CAIRN_SOAK_FAULT_RATE=0.1 node test/soak/storage-faults.ts
 *
 * Prints each step, then per backend the requests, the faults by kind, the exit
 * codes seen, and a last line `SOAK-RESULT {json}`. Exit status 1 on any failure.
 */
import { tempDir } from '../helpers/repo.ts';
import { printResult, seedFromEnv } from './soak-report.ts';
import { runStorageFaultsCampaign } from './storage-faults-campaign.ts';

const seed = seedFromEnv();
// 8 steps: about 20 runs and 1,000 requests per backend, 100 of them faulted at the default rate.
const steps = Number(process.env.CAIRN_SOAK_STEPS ?? 8);
const rate = Number(process.env.CAIRN_SOAK_FAULT_RATE ?? 0.1);
const work = await tempDir('soak-storage-faults');
console.log(`storage-faults soak: seed ${seed}, ${steps} steps per backend, ${(rate * 100).toFixed(0)}% of requests faulted`);
try {
  const report = await runStorageFaultsCampaign({
    seed,
    work: work.path,
    steps,
    rate,
    backends: ['s3', 'gcs'],
    log: (l) => console.log(l),
  });
  console.log('\nbackend | requests | faulted | share | by kind | exits | committed (despite a failure) | restores compared');
  for (const [name, b] of Object.entries(report.backends)) {
    console.log(
      `${name} | ${b.requests} | ${b.faulted} | ${b.share} | ${JSON.stringify(b.byKind)} | ${JSON.stringify(b.exits)} | ${b.committed} (${b.committedDespiteFailure}) | ${b.restoresCompared}`,
    );
  }
  console.log(`\n${report.failures.length} failures, ${report.seconds} s`);
  printResult('storage-faults', report.failures, report);
} finally {
  await work.remove();
}
