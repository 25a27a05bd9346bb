/**
 * The hostile-host part of the reliability soak (docs/reliability.md, "Hostile host"):
 *
 *   node test/soak/hostile-host.ts
 *   CAIRN_SOAK_SEED=42 CAIRN_SOAK_ROUNDS=4 node test/soak/hostile-host.ts
 *
 * Prints each round, what was forged, and a last line `SOAK-RESULT {json}`.
 * Exit status 1 on any failure.
 */
import { tempDir } from '../helpers/repo.ts';
import { runHostileHostCampaign } from './hostile-host-campaign.ts';
import { printResult, seedFromEnv } from './soak-report.ts';

const seed = seedFromEnv();
const rounds = Number(process.env.CAIRN_SOAK_ROUNDS ?? 4);
const work = await tempDir('soak-hostile-host');
console.log(`hostile-host soak: seed ${seed}, ${rounds} rounds`);
try {
  const report = await runHostileHostCampaign({ seed, work: work.path, rounds, log: (l) => console.log(l) });
  console.log('\nforged | objects');
  for (const [what, n] of Object.entries(report.forged)) console.log(`${what} | ${n}`);
  console.log(
    `\n${report.rounds} rounds, ${report.trueSnapshots} true snapshots kept, ${report.restoresCompared} restores compared, verify --read-data exits ${JSON.stringify(report.verifyExits)}, ${report.failures.length} failures, ${report.seconds} s`,
  );
  for (const o of report.observations) console.log(`observed: ${o}`);
  printResult('hostile-host', report.failures, report);
} finally {
  await work.remove();
}
