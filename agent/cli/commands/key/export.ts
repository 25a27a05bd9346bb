import type { Command } from 'commander';
import { exportRecoveryKit } from '../../../commands/keys.ts';
import { operationContext } from '../../../commands/operation.ts';
import type { Cli } from '../../context.ts';
import { recoveryPassphrase } from './passphrases.ts';

/** `cairn key export`: a printable recovery kit. */
export function registerKeyExport(key: Command, cli: Cli): void {
  key
    .command('export')
    .description('write a recovery kit: the master key under a separate recovery passphrase, printable, for when every key is lost')
    .requiredOption('--recovery-kit <file>', 'where to write the kit (mode 0600; an existing file is never overwritten)')
    .option(
      '--recovery-password-file <file>',
      'read the recovery passphrase from this file (default: CAIRN_RECOVERY_PASSWORD, or a prompt)',
    )
    .action(async (opts: { recoveryKit: string; recoveryPasswordFile?: string }, cmd: Command) => {
      const { g, repo } = await cli.openRepo(cmd);
      const passphrase = await recoveryPassphrase(cli, opts.recoveryPasswordFile, true);
      const kit = await exportRecoveryKit(repo, opts.recoveryKit, passphrase, operationContext(repo, cli.operation(g)));
      cli.output.result(
        { type: 'key.kit-exported', repositoryId: repo.id, file: kit.path, checksum: kit.checksum },
        `wrote the recovery kit for repository ${repo.id.slice(0, 8)} to ${kit.path} (kit checksum ${kit.checksum})\n` +
          'Print it, keep it apart from its recovery passphrase, and delete the file: together they read every backup, and a kit cannot be revoked.',
      );
    });
}
