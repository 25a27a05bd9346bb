import type { Command } from 'commander';
import { shortId } from '../../core/snapshot.ts';
import { repairIndex, type RepairIndexReport } from '../../commands/repair-index.ts';
import { repairPacks, type RepairPacksReport } from '../../commands/repair-packs.ts';
import { repairSnapshots, type RepairSnapshotsReport } from '../../commands/repair-snapshots.ts';
import type { Cli } from '../context.ts';
import { formatBytes } from '../output.ts';

/**
 * `cairn repair index|packs|snapshots` (docs/repair.md), after restic's: what
 * to run when `verify` or `check` found damage. `index` and `packs` delete
 * (old index files, damaged packs) and refuse under credentials that cannot;
 * `snapshots` only adds manifests. Each takes --dry-run.
 */
export function registerRepair(program: Command, cli: Cli): void {
  const repair = program
    .command('repair')
    .description('repair the repository after verify or check found damage: index, packs, snapshots (docs/repair.md)');

  repair
    .command('index')
    .description("rebuild the index from the packs' trailers and delete the old index files (needs delete rights)")
    .option('--dry-run', 'say what the rebuilt index would hold; write and delete nothing')
    .action(async (opts: { dryRun?: boolean }, cmd: Command) => {
      const { g, repo, storage } = await cli.openRepo(cmd);
      const report = await repairIndex(repo, storage, { ...cli.operation(g), dryRun: Boolean(opts.dryRun) });
      cli.output.result({ type: 'repair-index', ...report }, indexText(report));
    });

  repair
    .command('packs')
    .description(
      'read every indexed pack (or those named); copy the good pieces of damaged ones into new packs, drop the rest from the index and delete the damaged packs (needs delete rights)',
    )
    .argument(
      '[pack...]',
      'check only these packs (ids, unique prefixes or packs/… names as verify prints them); default: every indexed pack',
    )
    .option('--dry-run', 'say which packs are damaged and what would be salvaged; write and delete nothing')
    .action(async (packs: string[], opts: { dryRun?: boolean }, cmd: Command) => {
      const { g, repo, storage } = await cli.openRepo(cmd);
      const report = await repairPacks(repo, storage, { ...cli.operation(g), packs, dryRun: Boolean(opts.dryRun) });
      cli.output.result({ type: 'repair-packs', ...report }, packsText(report));
    });

  repair
    .command('snapshots')
    .description("write new manifests (tagged 'repaired') without the files that cannot be read back; the originals stay until forgotten")
    .argument('[snapshot...]', 'repair these snapshots (ids, unique prefixes or "latest"); default: every snapshot')
    .option(
      '--read-data',
      'also read every piece the snapshots use and recompute its id (slow); otherwise a piece the index names counts as present',
    )
    .option('--dry-run', 'say which files each new snapshot would leave out; write nothing')
    .action(async (refs: string[], opts: { dryRun?: boolean; readData?: boolean }, cmd: Command) => {
      const { g, repo } = await cli.openRepo(cmd);
      const report = await repairSnapshots(repo, {
        ...cli.operation(g),
        refs,
        dryRun: Boolean(opts.dryRun),
        readData: Boolean(opts.readData),
      });
      cli.output.result({ type: 'repair-snapshots', ...report }, snapshotsText(report));
    });
}

function would(dryRun: boolean, done: string, planned: string): string {
  return dryRun ? planned : done;
}

function indexText(r: RepairIndexReport): string {
  const lines = [
    `read the trailers of ${r.packs} pack(s): ${r.pieces} piece location(s); ${r.piecesAdded} the old index lacked, ${r.piecesDropped} it named that no pack holds`,
  ];
  for (const u of r.unreadableIndexFiles) lines.push(`unreadable index file: ${u.object}: ${u.problem}`);
  for (const p of r.unreadablePacks)
    lines.push(`unreadable trailer: ${p.pack}: ${p.problem} (kept the old index's ${p.keptFromIndex} entries; run \`cairn repair packs\`)`);
  lines.push(
    r.dryRun
      ? `would write the new index and delete ${r.indexFilesBefore} old index file(s)`
      : `wrote ${r.indexFilesWritten} index file(s), deleted ${r.indexFilesRemoved} old one(s)`,
  );
  return lines.join('\n');
}

function packsText(r: RepairPacksReport): string {
  const lines = [`read ${r.packsChecked} pack(s), ${formatBytes(r.bytesRead)}`];
  if (r.damagedPacks.length === 0) {
    lines.push('no damaged packs: nothing to repair');
    return lines.join('\n');
  }
  for (const p of r.damagedPacks) {
    lines.push(`damaged: ${p.pack}: ${p.salvaged} piece(s) ${would(r.dryRun, 'salvaged', 'to salvage')}, ${p.lost} lost`);
    for (const problem of p.problems.slice(0, 5)) lines.push(`  ${problem}`);
    if (p.problems.length > 5) lines.push(`  … and ${p.problems.length - 5} more`);
  }
  lines.push(
    r.dryRun
      ? `would copy ${r.piecesSalvaged} piece(s) into new packs, drop ${r.piecesLost} from the index and delete ${r.damagedPacks.length} damaged pack(s)`
      : `copied ${r.piecesSalvaged} piece(s) into ${r.packsWritten} new pack(s), dropped ${r.piecesLost} from the index, replaced ${r.indexFilesRemoved} index file(s), deleted ${r.packsRemoved} damaged pack(s)`,
  );
  if (r.piecesLost > 0)
    lines.push(
      'back up the same paths again: files that still exist are uploaded again; then `cairn repair snapshots` for what cannot be brought back',
    );
  return lines.join('\n');
}

function snapshotsText(r: RepairSnapshotsReport): string {
  const lines: string[] = [];
  for (const s of r.snapshots) {
    if (s.status === 'intact') continue;
    if (s.status === 'unrepairable') {
      lines.push(`snapshot ${shortId(s.id)}: cannot be repaired: ${s.problem ?? 'its root directory cannot be read'}`);
      continue;
    }
    const head =
      s.status === 'already-repaired'
        ? `snapshot ${shortId(s.id)}: already repaired as ${shortId(s.newId ?? '')}`
        : r.dryRun
          ? `snapshot ${shortId(s.id)}: would write a repaired snapshot without ${s.removed.length} entr(ies)`
          : `snapshot ${shortId(s.id)}: repaired as ${shortId(s.newId ?? '')}, without ${s.removed.length} entr(ies)`;
    lines.push(head + (s.hashesDropped.length > 0 ? `, ${s.hashesDropped.length} page file(s) kept without page hashes` : ''));
    for (const e of s.removed.slice(0, 20)) lines.push(`  ${would(r.dryRun, 'left out', 'would leave out')}: ${e.path}: ${e.problem}`);
    if (s.removed.length > 20) lines.push(`  … and ${s.removed.length - 20} more`);
    for (const e of s.hashesDropped.slice(0, 20))
      lines.push(
        `  ${would(r.dryRun, 'kept without its page hashes', 'would keep without its page hashes')} (the next backup stores it whole): ${e.path}: ${e.problem}`,
      );
    if (s.hashesDropped.length > 20) lines.push(`  … and ${s.hashesDropped.length - 20} more kept without page hashes`);
  }
  for (const u of r.unreadable)
    lines.push(`snapshot ${shortId(u.id)}: manifest unreadable (${u.error}): forget it with \`cairn forget ${shortId(u.id)}\``);
  const repaired = r.snapshots.filter((s) => s.status === 'repaired').length;
  const intact = r.snapshots.filter((s) => s.status === 'intact').length;
  lines.push(
    `${intact} snapshot(s) intact, ${repaired} ${would(r.dryRun, 'repaired', 'to repair')}` +
      (repaired > 0 && !r.dryRun ? '; the originals are kept until you forget them (`cairn forget ID`)' : ''),
  );
  return lines.join('\n');
}
