import type { Cli } from '../../context.ts';
import { readPassphrase } from '../../passphrase.ts';

/** A new passphrase: CAIRN_NEW_PASSWORD, the file, or a prompt asked twice. */
export function newPassphrase(cli: Cli, file: string | undefined): Promise<string> {
  return readPassphrase({ env: { CAIRN_PASSWORD: cli.env.CAIRN_NEW_PASSWORD }, passwordFile: file, confirm: true });
}

/** A recovery kit's passphrase: CAIRN_RECOVERY_PASSWORD, the file, or a prompt (asked twice when writing a kit). */
export function recoveryPassphrase(cli: Cli, file: string | undefined, confirm: boolean): Promise<string> {
  return readPassphrase({ env: { CAIRN_PASSWORD: cli.env.CAIRN_RECOVERY_PASSWORD }, passwordFile: file, confirm });
}
