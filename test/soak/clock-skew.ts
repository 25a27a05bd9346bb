/**
 * The clock-skew part of the reliability soak (docs/reliability.md, "Clock skew"):
 *
 *   node test/soak/clock-skew.ts
 *   CAIRN_SOAK_SEED=42 CAIRN_SOAK_ROUNDS=8 CAIRN_SOAK_LEASE=15 node test/soak/clock-skew.ts
 *
 * Needs libfaketime (`apt-get install faketime`). Prints each host's rounds, the
 * dead holders' takeovers, and a last line `SOAK-RESULT {json}`. Exit status 1 on
 * any failure, or when faketime is missing.
 */
import { tempDir } from '../helpers/repo.ts';
import { runClockSkewCampaign } from './clock-skew-campaign.ts';
import { faketimeWorks } from './skewed-cli.ts';
import { printResult, seedFromEnv } from './soak-report.ts';

const seed = seedFromEnv();
const rounds = Number(process.env.CAIRN_SOAK_ROUNDS ?? 8);
const leaseSeconds = Number(process.env.CAIRN_SOAK_LEASE ?? 15);
console.log(`clock-skew soak: seed ${seed}, ${rounds} operations per host, lease ${leaseSeconds} s`);
if (!(await faketimeWorks())) {
  printResult('clock-skew', ['faketime is not installed or does not shift the clock of node: apt-get install faketime'], {});
} else {
  const work = await tempDir('soak-clock-skew');
  try {
    const report = await runClockSkewCampaign({ seed, work: work.path, rounds, leaseSeconds, log: (l) => console.log(l) });
    console.log('\nhost | operations');
    for (const [host, ops] of Object.entries(report.operations)) console.log(`${host} | ${JSON.stringify(ops)}`);
    console.log('\ndead holder skew | prune got the lock after (s) | lease (s) | exit');
    for (const t of report.takeovers) console.log(`${t.skew} | ${(t.blockedMs / 1000).toFixed(1)} | ${t.leaseMs / 1000} | ${t.exit}`);
    console.log(
      `\n${report.committed} committed, ${report.forgotten} forgotten by policy, ${report.restoresCompared} restores compared, ${report.failures.length} failures, ${report.seconds} s`,
    );
    printResult('clock-skew', report.failures, report);
  } finally {
    await work.remove();
  }
}
