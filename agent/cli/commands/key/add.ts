import type { Command } from 'commander';
import { CairnError } from '../../../core/errors.ts';
import { kmsRegion } from '../../../core/keyfile.ts';
import { addKey, addKmsKey } from '../../../commands/keys.ts';
import { operationContext } from '../../../commands/operation.ts';
import type { Cli } from '../../context.ts';
import { newPassphrase } from './passphrases.ts';

/** `cairn key add`: a passphrase or a KMS wrapping. */
export function registerKeyAdd(key: Command, cli: Cli): void {
  key
    .command('add')
    .description(
      'add a passphrase (CAIRN_NEW_PASSWORD, --new-password-file or a prompt), or with --kms-key-id a KMS wrapping; no data is rewritten',
    )
    .option('--new-password-file <file>', 'read the new passphrase from this file')
    .option('--kms-key-id <arn>', 'wrap the master key with this AWS KMS key (needs kms:Encrypt now, kms:Decrypt to open)')
    .action(async (opts: { newPasswordFile?: string; kmsKeyId?: string }, cmd: Command) => {
      if (opts.kmsKeyId && opts.newPasswordFile)
        throw new CairnError('Cairn.Usage', 'give either --kms-key-id or --new-password-file, not both');
      if (opts.kmsKeyId) kmsRegion(opts.kmsKeyId); // a malformed ARN fails before the repository is opened
      const { g, repo } = await cli.openRepo(cmd);
      const ctx = operationContext(repo, cli.operation(g));
      if (opts.kmsKeyId) {
        const added = await addKmsKey(repo, opts.kmsKeyId, ctx);
        cli.output.result(
          { type: 'key.added', keyId: added.id, kind: 'kms', keyArn: added.keyArn },
          `added key ${added.id} (KMS ${added.keyArn})`,
        );
        return;
      }
      const id = await addKey(repo, await newPassphrase(cli, opts.newPasswordFile), ctx);
      cli.output.result({ type: 'key.added', keyId: id, kind: 'passphrase' }, `added key ${id}`);
    });
}
