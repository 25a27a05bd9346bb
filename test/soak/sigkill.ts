/**
 * The SIGKILL part of the reliability soak (docs/reliability.md, "SIGKILL"):
 *
 *   node test/soak/sigkill.ts
 *   CAIRN_SOAK_SEED=42 CAIRN_SOAK_KILLS=100 CAIRN_SOAK_PER_PHASE=12 node test/soak/sigkill.ts
 *   CAIRN_SOAK_MINUTES=30 node test/soak/sigkill.ts   # start no operation after 30 minutes
 *
 * Prints every operation and kill, then the counts per phase and per operation,
 * and a last line `SOAK-RESULT {json}` for the soak's summary. Exit status 1 on
 * any failure or when the counts were not reached.
 */
import { rm } from 'node:fs/promises';
import { tempDir } from '../helpers/repo.ts';
import { PHASES } from './kill-switch.ts';
import { runSigkillCampaign } from './sigkill-campaign.ts';
import { printResult, seedFromEnv } from './soak-report.ts';

const seed = seedFromEnv();
const kills = Number(process.env.CAIRN_SOAK_KILLS ?? 100);
const perPhase = Number(process.env.CAIRN_SOAK_PER_PHASE ?? 12);
const work = await tempDir('soak-sigkill');
console.log(`sigkill soak: seed ${seed}, at least ${kills} kills, ${perPhase} in each phase`);
try {
  const report = await runSigkillCampaign({
    seed,
    work: work.path,
    kills,
    perPhase,
    maxOps: kills * 4,
    ...(process.env.CAIRN_SOAK_MINUTES ? { minutes: Number(process.env.CAIRN_SOAK_MINUTES) } : {}),
    fullCheckEvery: 40,
    log: (line) => console.log(line),
  });
  console.log('\nphase | kills');
  for (const [phase, count] of Object.entries(report.byPhase)) console.log(`${phase} | ${count}`);
  console.log('\noperation | runs | kills');
  for (const [operation, { runs, kills: k }] of Object.entries(report.byOperation)) console.log(`${operation} | ${runs} | ${k}`);
  const reached = report.kills >= kills && PHASES.every((p) => (report.byPhase[p] ?? 0) >= perPhase);
  if (!reached) report.failures.push(`counts not reached in ${report.operations} operations`);
  console.log(
    `\n${report.operations} operations, ${report.kills} kills, ${report.committed} snapshots committed, ${report.forgotten} forgotten, ${report.restoresCompared} restores compared, ${report.verifyRuns} verify --read-data runs, ${report.failures.length} failures, ${report.seconds} s`,
  );
  printResult('sigkill', report.failures, report);
} finally {
  await work.remove();
  await rm(work.path, { recursive: true, force: true });
}
