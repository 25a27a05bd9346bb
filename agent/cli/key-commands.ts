import type { Command } from 'commander';
import { CairnError } from '../core/errors.ts';
import { kmsRegion, wrapMasterKey, type KeyFile } from '../core/keyfile.ts';
import { addKey, addKmsKey, changePassphrase, exportRecoveryKit, listKeys, removeKey } from '../commands/keys.ts';
import { kmsWrapMasterKey } from '../keys/kms.ts';
import type { Cli } from './context.ts';
import { readPassphrase } from './passphrase.ts';
import { openWithRecoveryKit } from './unlock.ts';

/**
 * `cairn key ...`: the wrappings of the master key (docs/keys.md). Each one
 * is a key file; adding or removing one rewrites no data, so rotating a KMS
 * key is `key add --kms-key-id NEW` then `key remove OLD`.
 */
export function registerKeyCommands(program: Command, cli: Cli): void {
  const newPassphrase = (file: string | undefined): Promise<string> =>
    readPassphrase({ env: { CAIRN_PASSWORD: cli.env.CAIRN_NEW_PASSWORD }, passwordFile: file, confirm: true });
  const recoveryPassphrase = (file: string | undefined, confirm: boolean): Promise<string> =>
    readPassphrase({ env: { CAIRN_PASSWORD: cli.env.CAIRN_RECOVERY_PASSWORD }, passwordFile: file, confirm });

  const key = program.command('key').description('manage the keys that open the repository: passphrases, KMS keys, recovery kits');

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
      const ctx = cli.operation(repo, g);
      if (opts.kmsKeyId) {
        const added = await addKmsKey(repo, opts.kmsKeyId, ctx);
        cli.output.result(
          { type: 'key.added', keyId: added.id, kind: 'kms', keyArn: added.keyArn },
          `added key ${added.id} (KMS ${added.keyArn})`,
        );
        return;
      }
      const id = await addKey(repo, await newPassphrase(opts.newPasswordFile), ctx);
      cli.output.result({ type: 'key.added', keyId: id, kind: 'passphrase' }, `added key ${id}`);
    });

  key
    .command('remove')
    .description('remove a key file (revokes that wrapping; the master key and the data stay)')
    .argument('<id>', 'key id (or a unique prefix) from `cairn key list`')
    .option('--force-last-key', 'remove it even when it is the last key file, or the last passphrase beside KMS keys (have a recovery kit)')
    .action(async (id: string, opts: { forceLastKey?: boolean }, cmd: Command) => {
      const { g, repo, storage } = await cli.openRepo(cmd);
      const removed = await removeKey(repo, storage, id, cli.operation(repo, g), { forceLastKey: Boolean(opts.forceLastKey) });
      cli.output.result(
        { type: 'key.removed', keyId: removed.id, kind: removed.kind, ...(removed.keyArn ? { keyArn: removed.keyArn } : {}) },
        `removed key ${removed.id}`,
      );
    });

  key
    .command('passwd')
    .description('replace the passphrase this command was opened with (no data is rewritten)')
    .option('--new-password-file <file>', 'read the new passphrase from this file')
    .action(async (opts: { newPasswordFile?: string }, cmd: Command) => {
      const { g, repo, storage } = await cli.openRepo(cmd);
      const id = await changePassphrase(repo, storage, await newPassphrase(opts.newPasswordFile), cli.operation(repo, g));
      cli.output.result({ type: 'key.changed', keyId: id }, `changed the passphrase (new key ${id})`);
    });

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
      const passphrase = await recoveryPassphrase(opts.recoveryPasswordFile, true);
      const kit = await exportRecoveryKit(repo, opts.recoveryKit, passphrase, cli.operation(repo, g));
      cli.output.result(
        { type: 'key.kit-exported', repositoryId: repo.id, file: kit.path, checksum: kit.checksum },
        `wrote the recovery kit for repository ${repo.id.slice(0, 8)} to ${kit.path} (kit checksum ${kit.checksum})\n` +
          'Print it, keep it apart from its recovery passphrase, and delete the file: together they read every backup, and a kit cannot be revoked.',
      );
    });

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
      const repo = await openWithRecoveryKit(storage, opts.recoveryKit, () => recoveryPassphrase(opts.recoveryPasswordFile, false));
      const ctx = cli.operation(repo, cli.globals(cmd));
      const id = await addKey(repo, await newPassphrase(opts.newPasswordFile), ctx);
      cli.output.result(
        { type: 'key.imported', keyId: id, kind: 'passphrase', repositoryId: repo.id },
        `added passphrase key ${id} from the recovery kit`,
      );
    });
}

/**
 * The key files `cairn init` writes. Without --kms-key-id: one passphrase
 * (CAIRN_PASSWORD, --password-file or a prompt asked twice). With it: the KMS
 * wrapping, plus a passphrase wrapping only when one is given explicitly; a
 * KMS-only repository needs KMS to restore, and `notice` says so.
 */
export async function initKeys(
  cli: Cli,
  cmd: Command,
  kmsKeyId: string | undefined,
): Promise<{ wrap: string | ((master: Buffer, repositoryId: string) => Promise<KeyFile[]>); kmsOnly: boolean; notice: string }> {
  if (!kmsKeyId) {
    return {
      wrap: await cli.passphrase(cmd, true),
      kmsOnly: false,
      notice: 'Keep the passphrase safe: without it the backups cannot be read.',
    };
  }
  kmsRegion(kmsKeyId);
  const g = cli.globals(cmd);
  const passphrase = g.passwordFile || cli.env.CAIRN_PASSWORD ? await cli.passphrase(cmd) : undefined;
  const owner = cli.who();
  const wrap = async (master: Buffer, repositoryId: string): Promise<KeyFile[]> => [
    await kmsWrapMasterKey(master, kmsKeyId, repositoryId, owner),
    ...(passphrase ? [await wrapMasterKey(master, passphrase, repositoryId, owner)] : []),
  ];
  return passphrase
    ? {
        wrap,
        kmsOnly: false,
        notice: `The master key is wrapped by KMS key ${kmsKeyId} and by the passphrase: either opens the repository; keep the passphrase safe.`,
      }
    : {
        wrap,
        kmsOnly: true,
        notice:
          `The master key is wrapped only by KMS key ${kmsKeyId}: restoring needs AWS credentials allowed kms:Decrypt on it, ` +
          'and if the key is disabled or deleted the backups cannot be read.\n' +
          'Add a way in that needs no AWS now: `cairn key export --recovery-kit FILE` (a printable kit), or `cairn key add` (a passphrase).',
      };
}
