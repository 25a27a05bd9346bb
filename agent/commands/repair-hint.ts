import { INDEX_PREFIX, LOGS_PREFIX, PACKS_PREFIX, SNAPSHOTS_PREFIX } from '../core/layout.ts';
import type { VerifyReport } from './verify.ts';

/**
 * What to run after `verify` or `check` found problems (docs/repair.md), from
 * what they found:
 * - the index cannot be read, or snapshots use pieces no index names while no
 *   pack is damaged: the index lost entries the packs may still hold, so
 *   `repair index` rebuilds it from their trailers;
 * - a pack is missing, truncated or fails authentication: `repair packs` drops
 *   its damaged pieces from the index (salvaging the rest), a backup of the
 *   same paths uploads the files that still exist again;
 * - files that no backup can bring back: `repair snapshots` writes snapshots
 *   without them;
 * - an unreadable manifest cannot be repaired: it is forgotten;
 * - nor can archived log files: `pitr status` shows the gaps.
 */
export function repairHint(report: Pick<VerifyReport, 'problems' | 'affected'>): string {
  const objects = report.problems.map((p) => p.object);
  const steps: string[] = [];
  const indexDamaged = objects.some((o) => o === 'index' || o.startsWith(INDEX_PREFIX));
  const packsDamaged = objects.some((o) => o.startsWith(PACKS_PREFIX));
  const unindexed = report.affected.some((a) => {
    const why = cause(a.problem);
    return / is (missing|not indexed)$/.test(why) && !why.startsWith('pack ');
  });
  if (indexDamaged || (unindexed && !packsDamaged)) steps.push('`cairn repair index` rebuilds the index from the packs');
  if (packsDamaged)
    steps.push(
      '`cairn repair packs` drops the damaged pieces from the index, then a backup of the same paths uploads the files that still exist again',
    );
  if (report.affected.length > 0 || packsDamaged)
    steps.push('`cairn repair snapshots` then writes snapshots without the files that cannot be brought back (originals are kept)');
  const manifests = objects
    .filter((o) => o.startsWith(SNAPSHOTS_PREFIX))
    .map((o) => o.slice(SNAPSHOTS_PREFIX.length, SNAPSHOTS_PREFIX.length + 8));
  if (manifests.length > 0) steps.push(`unreadable snapshot manifests cannot be repaired: \`cairn forget ${manifests.join(' ')}\``);
  if (objects.some((o) => o.startsWith(LOGS_PREFIX)))
    steps.push('archived log files that are missing or damaged cannot be repaired: `cairn pitr status` shows the gaps they leave');
  if (steps.length === 0) return 'restore affected files from another snapshot or copy (docs/repair.md)';
  return `${steps.join('; ')} (docs/repair.md; add --dry-run to see what each would change)`;
}

/**
 * The distinct problems a verify or check found: each damaged object's
 * problem and each distinct reason files are affected (a missing piece found
 * only through the files that need it is a problem too), counted once however
 * many files or snapshots it affects.
 */
export function distinctProblems(report: Pick<VerifyReport, 'problems' | 'affected'>): number {
  return new Set([...report.problems.map((p) => p.problem), ...report.affected.map((a) => cause(a.problem))]).size;
}

/** A directory is unreadable because of something else found: the cause, not the symptom. */
function cause(problem: string): string {
  return problem.replace(/^directory unreadable: /, '');
}
