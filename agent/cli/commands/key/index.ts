import type { Command } from 'commander';
import type { Cli } from '../../context.ts';
import { registerKeyAdd } from './add.ts';
import { registerKeyExport } from './export.ts';
import { registerKeyImport } from './import.ts';
import { registerKeyList } from './list.ts';
import { registerKeyPasswd } from './passwd.ts';
import { registerKeyRemove } from './remove.ts';

/**
 * `cairn key ...`: the wrappings of the master key (docs/keys.md). Each one
 * is a key file; adding or removing one rewrites no data, so rotating a KMS
 * key is `key add --kms-key-id NEW` then `key remove OLD`.
 */
export function registerKey(program: Command, cli: Cli): void {
  const key = program.command('key').description('manage the keys that open the repository: passphrases, KMS keys, recovery kits');
  for (const register of [registerKeyList, registerKeyAdd, registerKeyRemove, registerKeyPasswd, registerKeyExport, registerKeyImport])
    register(key, cli);
}
