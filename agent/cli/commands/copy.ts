import { Option, type Command } from 'commander';
import { copy, initCopyTarget, type CopyReport } from '../../commands/copy.ts';
import { record } from '../../commands/operation.ts';
import { CairnError } from '../../core/errors.ts';
import { CONFIG_KEY } from '../../core/layout.ts';
import { Repository } from '../../core/repository.ts';
import { shortId } from '../../core/snapshot.ts';
import { collect, type Cli } from '../context.ts';
import { formatBytes, formatDuration } from '../output.ts';
import { readPassphrase } from '../passphrase.ts';

interface CopyCliOptions {
  toRepo?: string;
  toPasswordFile?: string;
  toInit?: boolean;
  copyChunkerParams: boolean;
  snapshot: string[];
  host: string[];
  tag: string[];
}

/** `cairn copy`: snapshots from --repo into --to-repo (agent/commands/copy.ts, docs/copy.md). */
export function registerCopy(program: Command, cli: Cli): void {
  program
    .command('copy')
    .description('copy snapshots into another repository (default: every snapshot the target lacks)')
    .addOption(
      new Option('--to-repo <url>', 'the target repository: a directory, file:///path or s3://bucket/prefix').env('CAIRN_TO_REPOSITORY'),
    )
    .option('--to-password-file <file>', "read the target's passphrase from this file (default: CAIRN_TO_PASSWORD, or a prompt)")
    .option('--to-init', 'create the target repository if it does not exist (its own master key)')
    .option(
      '--no-copy-chunker-params',
      "with --to-init: let the target cut data its own way (copies then dedupe only partly with the target's own backups)",
    )
    .option('--snapshot <id>', 'copy this snapshot (id, prefix or "latest"; repeatable)', collect, [])
    .option('--host <name>', 'only snapshots of this host (repeatable)', collect, [])
    .option('--tag <tag>', 'only snapshots with this tag (repeatable: any of them)', collect, [])
    .action(async (opts: CopyCliOptions, cmd: Command) => {
      if (!opts.toRepo)
        throw new CairnError('Cairn.Usage', 'no target repository given', { hint: 'pass --to-repo URL or set CAIRN_TO_REPOSITORY' });
      const { g, repo: source } = await cli.openRepo(cmd);
      // The target goes through the same storage hook, bandwidth limits and cancellation as --repo.
      const targetStorage = await cli.storageAt(opts.toRepo, cmd);
      const creating = Boolean(opts.toInit) && !(await targetStorage.stat(CONFIG_KEY));
      const passphrase = await readPassphrase({
        env: { CAIRN_PASSWORD: cli.env.CAIRN_TO_PASSWORD },
        passwordFile: opts.toPasswordFile,
        confirm: creating,
      });
      const who = cli.who();
      let target: Repository;
      if (creating) {
        target = await initCopyTarget(targetStorage, passphrase, source, who, opts.copyChunkerParams);
        await record({ repo: target, who, progress: cli.output }, 'init', {
          repositoryId: target.id,
          location: targetStorage.location,
          copyOf: source.id,
          chunkerParamsFrom: opts.copyChunkerParams ? source.id : undefined,
        });
        cli.output.warn(
          `created the target repository ${target.id.slice(0, 8)} at ${targetStorage.location}${opts.copyChunkerParams ? " with the source's chunker parameters" : ''}`,
        );
      } else {
        target = await Repository.open(targetStorage, passphrase);
      }
      const report = await copy(source, target, { ...cli.operation(g), snapshots: opts.snapshot, hosts: opts.host, tags: opts.tag });
      cli.output.result(
        {
          type: 'summary',
          operation: 'copy',
          target: targetStorage.location,
          ...report,
          snapshotsCopied: report.copied.length,
          snapshotsSkipped: report.skipped.length,
        },
        copyText(report, targetStorage.location),
      );
    });
}

function copyText(r: CopyReport, location: string): string {
  return [
    `copied ${r.copied.length} snapshot(s) to ${location}, skipped ${r.skipped.length} already there`,
    ...r.copied.map((id) => `  copied  ${shortId(id)}`),
    `  pieces: ${r.piecesRead} read, ${r.piecesReused} already in the target, ${r.piecesUploaded} uploaded`,
    `  data:   ${formatBytes(r.bytesRead)} read, ${formatBytes(r.bytesUploaded)} uploaded in ${r.packsWritten} pack(s) (${formatBytes(r.rawBytesUploaded)} before compression) in ${formatDuration(r.durationMs)}`,
  ].join('\n');
}
