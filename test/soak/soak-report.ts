/** What every soak part shares: its seed, and the one line the soak's summary (all.ts) reads. */
export function seedFromEnv(): number {
  const given = process.env.CAIRN_SOAK_SEED;
  return given === undefined ? Math.floor(Math.random() * 2 ** 31) : Number(given);
}

export const RESULT_PREFIX = 'SOAK-RESULT ';

/** Prints the failures, then `SOAK-RESULT {json}`, and sets the exit status. */
export function printResult(part: string, failures: string[], figures: object): void {
  for (const failure of failures) console.log(`FAILED: ${failure}`);
  console.log(`${RESULT_PREFIX}${JSON.stringify({ part, passed: failures.length === 0, failures, figures })}`);
  process.exitCode = failures.length === 0 ? 0 : 1;
}
