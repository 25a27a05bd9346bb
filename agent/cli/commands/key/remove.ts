import type { Command } from 'commander';
import { removeKey } from '../../../commands/keys.ts';
import { operationContext } from '../../../commands/operation.ts';
import type { Cli } from '../../context.ts';

/** `cairn key remove`: revoke one wrapping. */
export function registerKeyRemove(key: Command, cli: Cli): void {
  key
    .command('remove')
    .description('remove a key file (revokes that wrapping; the master key and the data stay)')
    .argument('<id>', 'key id (or a unique prefix) from `cairn key list`')
    .option('--force-last-key', 'remove it even when it is the last key file, or the last passphrase beside KMS keys (have a recovery kit)')
    .action(async (id: string, opts: { forceLastKey?: boolean }, cmd: Command) => {
      const { g, repo, storage } = await cli.openRepo(cmd);
      const removed = await removeKey(repo, storage, id, operationContext(repo, cli.operation(g)), {
        forceLastKey: Boolean(opts.forceLastKey),
      });
      cli.output.result(
        { type: 'key.removed', keyId: removed.id, kind: removed.kind, ...(removed.keyArn ? { keyArn: removed.keyArn } : {}) },
        `removed key ${removed.id}`,
      );
    });
}
