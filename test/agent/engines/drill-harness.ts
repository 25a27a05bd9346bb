import assert from 'node:assert/strict';
import type { DrillReport } from '../../../agent/commands/drill.ts';
import type { DrillCheck } from '../../../agent/engines/engine.ts';
import { lastOfType, runCli } from '../../helpers/cli.ts';
import { PASSPHRASE } from '../../helpers/repo.ts';

/**
 * `cairn drill <snapshot> [--thorough]` on a file repository, in-process; returns the checks of
 * its JSON report, after checking that the exit status agrees with the report (0 only when
 * every check passed). `env` adds variables to the drill's environment.
 */
export async function drillSnapshot(
  repoPath: string,
  snapshotId: string,
  options: { thorough?: boolean; env?: Record<string, string> } = {},
): Promise<DrillCheck[]> {
  const result = await runCli(['drill', snapshotId, ...(options.thorough ? ['--thorough'] : [])], {
    ...options.env,
    CAIRN_REPOSITORY: repoPath,
    CAIRN_PASSWORD: PASSPHRASE,
  });
  const report = lastOfType(result, 'drill') as DrillReport | undefined;
  assert.ok(report, `cairn drill printed no report (exit ${String(result.code)}): ${result.stderr}`);
  assert.equal(
    result.code === 0,
    report.ok,
    `exit ${String(result.code)} for a drill that ${report.ok ? 'passed' : 'failed'}: ${result.stderr}`,
  );
  return report.checks;
}

/** The check of that name, or a failure listing the checks there are. */
export function checkNamed(checks: readonly DrillCheck[], name: string): DrillCheck {
  const check = checks.find((c) => c.name === name);
  if (!check) throw new Error(`no check ${name} among ${checks.map((c) => c.name).join(', ')}`);
  return check;
}
