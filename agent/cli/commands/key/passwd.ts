import type { Command } from 'commander';
import { changePassphrase } from '../../../commands/keys.ts';
import { operationContext } from '../../../commands/operation.ts';
import type { Cli } from '../../context.ts';
import { newPassphrase } from './passphrases.ts';

/** `cairn key passwd`: replace the passphrase the repository was opened with. */
export function registerKeyPasswd(key: Command, cli: Cli): void {
  key
    .command('passwd')
    .description('replace the passphrase this command was opened with (no data is rewritten)')
    .option('--new-password-file <file>', 'read the new passphrase from this file')
    .action(async (opts: { newPasswordFile?: string }, cmd: Command) => {
      const { g, repo, storage } = await cli.openRepo(cmd);
      const passphrase = await newPassphrase(cli, opts.newPasswordFile);
      const id = await changePassphrase(repo, storage, passphrase, operationContext(repo, cli.operation(g)));
      cli.output.result({ type: 'key.changed', keyId: id }, `changed the passphrase (new key ${id})`);
    });
}
