import type { Command } from 'commander';
import { listKeys } from '../../../commands/keys.ts';
import type { Cli } from '../../context.ts';

/** `cairn key list`. */
export function registerKeyList(key: Command, cli: Cli): void {
  key
    .command('list')
    .description('list the key files: kind (passphrase or kms), the KMS key ARN, who added it; * marks the one used now')
    .action(async (_opts: unknown, cmd: Command) => {
      const { repo } = await cli.openRepo(cmd);
      const keys = await listKeys(repo);
      cli.output.result(
        { type: 'keys', repositoryId: repo.id, keys },
        keys
          .map(
            (k) =>
              `${k.current ? '*' : ' '} ${k.id}  ${k.kind.padEnd(10)}  ${k.created}  ${k.user}@${k.host}${k.keyArn ? `  ${k.keyArn}` : ''}`,
          )
          .join('\n') || 'no key files',
      );
    });
}
