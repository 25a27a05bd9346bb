import type { Command } from 'commander';
import { parseCompression } from '../../core/config.ts';
import { kmsRegion, wrapMasterKey, type KeyFile } from '../../core/keyfile.ts';
import { Repository } from '../../core/repository.ts';
import { record } from '../../commands/operation.ts';
import { kmsWrapMasterKey } from '../../keys/kms.ts';
import type { Cli } from '../context.ts';

/** `cairn init`: a new repository, its master key wrapped by a passphrase and/or a KMS key (docs/keys.md). */
export function registerInit(program: Command, cli: Cli): void {
  program
    .command('init')
    .description('create a new repository')
    .option('--compression <codec>', 'default compression: zstd, zstd:LEVEL or none', 'zstd:1')
    .option(
      '--kms-key-id <arn>',
      'wrap the master key with this AWS KMS key (see docs/keys.md); with no passphrase given, restoring then needs KMS',
    )
    .action(async (opts: { compression: string; kmsKeyId?: string }, cmd: Command) => {
      const storage = await cli.storage(cmd);
      const keys = await initKeys(cli, cmd, opts.kmsKeyId);
      const who = cli.who();
      const repo = await Repository.init(storage, keys.wrap, who, { compression: parseCompression(opts.compression) });
      await record({ repo, who, progress: cli.output }, 'init', {
        repositoryId: repo.id,
        location: storage.location,
        ...(opts.kmsKeyId !== undefined ? { kmsKeyId: opts.kmsKeyId } : {}),
      });
      if (keys.kmsOnly) cli.output.warn(keys.notice, { kmsOnly: true });
      if (keys.passphrase !== undefined) {
        const short = shortPassphraseWarning(keys.passphrase);
        if (short) cli.output.warn(short, { passphraseLength: characters(keys.passphrase) });
      }
      cli.output.result(
        { type: 'init', repository: storage.location, id: repo.id, kmsOnly: keys.kmsOnly },
        `created repository ${repo.id.slice(0, 8)} at ${storage.location}\n${keys.notice}`,
      );
    });
}

/**
 * The key files `cairn init` writes. Without --kms-key-id: one passphrase
 * (CAIRN_PASSWORD, --password-file or a prompt asked twice). With it: the KMS
 * wrapping, plus a passphrase wrapping only when one is given explicitly; a
 * KMS-only repository needs KMS to restore, and `notice` says so.
 */
async function initKeys(
  cli: Cli,
  cmd: Command,
  kmsKeyId: string | undefined,
): Promise<{
  wrap: string | ((master: Buffer, repositoryId: string) => Promise<KeyFile[]>);
  passphrase: string | undefined;
  kmsOnly: boolean;
  notice: string;
}> {
  if (kmsKeyId === undefined) {
    const passphrase = await cli.passphrase(cmd, true);
    return {
      wrap: passphrase,
      passphrase,
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
        passphrase,
        kmsOnly: false,
        notice: `The master key is wrapped by KMS key ${kmsKeyId} and by the passphrase: either opens the repository; keep the passphrase safe.`,
      }
    : {
        wrap,
        passphrase: undefined,
        kmsOnly: true,
        notice:
          `The master key is wrapped only by KMS key ${kmsKeyId}: restoring needs AWS credentials allowed kms:Decrypt on it, ` +
          'and if the key is disabled or deleted the backups cannot be read.\n' +
          'Add a way in that needs no AWS now: `cairn key export --recovery-kit FILE` (a printable kit), or `cairn key add` (a passphrase).',
      };
}

/** Passphrases shorter than this get a warning from `init` (it is not refused: the operator decides). */
export const MIN_PASSPHRASE_LENGTH = 12;

/**
 * The warning for a short passphrase, or undefined. Whoever obtains the key
 * files (a copy of the repository is enough) can guess offline; scrypt slows
 * each guess, but a short passphrase still falls to a patient attacker.
 */
export function shortPassphraseWarning(passphrase: string): string | undefined {
  const length = characters(passphrase);
  if (length >= MIN_PASSPHRASE_LENGTH) return undefined;
  return (
    `the passphrase is ${length} character${length === 1 ? '' : 's'} long: anyone holding a copy of the repository can try guesses offline; ` +
    `use ${MIN_PASSPHRASE_LENGTH} or more (\`cairn key add\` a longer one, then \`cairn key remove ID\` this one), ` +
    'and keep a recovery kit: `cairn key export --recovery-kit FILE` writes a printable one that opens the repository if the passphrase is lost'
  );
}

/** Characters as a person counts them (grapheme clusters), not UTF-16 units. */
function characters(text: string): number {
  return Array.from(new Intl.Segmenter().segment(text)).length;
}
