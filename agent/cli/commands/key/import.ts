import type { Command } from 'commander';
import { addKey } from '../../../commands/keys.ts';
import { operationContext } from '../../../commands/operation.ts';
import type { Cli } from '../../context.ts';
import { openWithRecoveryKit } from '../../open-repository.ts';
import { newPassphrase, recoveryPassphrase } from './passphrases.ts';

/** `cairn key import`: a passphrase key from a recovery kit, when every key file may be gone. */
export function registerKeyImport(key: Command, cli: Cli): void {
  key
    .command('import')
    .description('add a passphrase key from a recovery kit (opens the repository with the kit alone, even with no key file left)')
    .requiredOption('--recovery-kit <file>', 'the kit written by `cairn key export --recovery-kit` (or typed in from paper)')
    .option(
      '--recovery-password-file <file>',
      'read the recovery passphrase from this file (default: CAIRN_RECOVERY_PASSWORD, or a prompt)',
    )
    .option('--new-password-file <file>', 'read the new passphrase from this file (default: CAIRN_NEW_PASSWORD, or a prompt)')
    .action(async (opts: { recoveryKit: string; recoveryPasswordFile?: string; newPasswordFile?: string }, cmd: Command) => {
      const storage = await cli.storage(cmd);
      const repo = await openWithRecoveryKit(storage, opts.recoveryKit, () => recoveryPassphrase(cli, opts.recoveryPasswordFile, false));
      const ctx = operationContext(repo, cli.operation(cli.globals(cmd)));
      const id = await addKey(repo, await newPassphrase(cli, opts.newPasswordFile), ctx);
      cli.output.result(
        { type: 'key.imported', keyId: id, kind: 'passphrase', repositoryId: repo.id },
        `added passphrase key ${id} from the recovery kit`,
      );
    });
}
