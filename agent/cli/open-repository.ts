import { readFile } from 'node:fs/promises';
import { CairnError, errorMessage } from '../core/errors.ts';
import { passphraseUnlocker, type UnlockRequest, type Unlocked } from '../core/keyfile.ts';
import { openRecoveryKit, parseRecoveryKit } from '../core/recovery-kit.ts';
import { Repository } from '../core/repository.ts';
import type { Storage } from '../core/storage.ts';
import { kmsUnwrapMasterKey } from '../keys/kms.ts';
import { passphraseGiven, readPassphrase } from './passphrase.ts';

/**
 * How the CLI gets the master key: an ordered list of sources. The first one
 * that applies (returns something other than undefined) decides: its failure
 * is the command's failure, it does not fall through to the next one, so a
 * wrong CAIRN_PASSWORD is reported as such and not hidden by a KMS attempt.
 *
 *   1. a passphrase given explicitly (--password-file, --password-command,
 *      CAIRN_PASSWORD_FILE, CAIRN_PASSWORD_COMMAND, CAIRN_PASSWORD)
 *      [the orchestration work adds "passphrase from an SSM SecureString" here]
 *   2. the repository's KMS wrappings, newest first (no prompt)
 *   3. a passphrase prompt on a terminal
 *
 * With none applicable, a clear error says what to give.
 */
export interface UnlockSource {
  readonly name: string;
  /** undefined: this source has nothing to offer for this repository. */
  unlock(request: UnlockRequest): Promise<Unlocked | undefined>;
}

export interface UnlockOptions {
  env: NodeJS.ProcessEnv;
  passwordFile?: string | undefined;
  passwordCommand?: string | undefined;
}

/** The passphrase given by a flag or the environment (passphrase.ts), when one is; read (a command run) once. */
export function givenPassphraseSource(options: UnlockOptions): UnlockSource {
  let passphrase: Promise<string> | undefined;
  return {
    name: 'passphrase',
    async unlock(request) {
      if (!passphraseGiven(options)) return undefined;
      passphrase ??= readPassphrase(options);
      return passphraseUnlocker(await passphrase)(request);
    },
  };
}

/** Each KMS key file, newest first; the first that decrypts wins. No KMS key file: not applicable. */
export function kmsSource(): UnlockSource {
  return {
    name: 'kms',
    async unlock({ config, keys }) {
      const kms = keys.filter((k) => k.file.kind === 'kms').sort((a, b) => b.file.created.localeCompare(a.file.created));
      if (kms.length === 0) return undefined;
      const failures: CairnError[] = [];
      for (const key of kms) {
        if (key.file.kind !== 'kms') continue;
        try {
          return { master: await kmsUnwrapMasterKey(key.file, config.id), keyId: key.id };
        } catch (error) {
          failures.push(error instanceof CairnError ? error : new CairnError('Cairn.Failure', errorMessage(error), { cause: error }));
        }
      }
      const first = failures[0] as CairnError;
      if (failures.length === 1) throw first;
      // Unreachable KMS may pass on a later try: say so only when that is all that happened.
      const code = failures.every((f) => f.code === 'Cairn.Storage')
        ? 'Cairn.Storage'
        : (failures.find((f) => f.code !== 'Cairn.Storage') ?? first).code;
      throw new CairnError(
        code,
        `none of the repository's ${failures.length} KMS keys opened it:\n${failures.map((f) => `  - ${f.message}`).join('\n')}`,
        {
          hint: `${first.hint ?? ''}${first.hint ? '; ' : ''}or give a passphrase (CAIRN_PASSWORD, --password-file, --password-command)`,
          cause: first,
        },
      );
    },
  };
}

/** A prompt on a terminal. */
export function promptSource(): UnlockSource {
  return {
    name: 'prompt',
    async unlock(request) {
      if (!process.stdin.isTTY) return undefined;
      return passphraseUnlocker(await readPassphrase({ env: {} }))(request);
    },
  };
}

export function defaultSources(options: UnlockOptions): UnlockSource[] {
  return [givenPassphraseSource(options), kmsSource(), promptSource()];
}

/** Opens the repository with the first source that applies. */
export async function openRepository(storage: Storage, sources: UnlockSource[]): Promise<Repository> {
  return Repository.openWith(storage, async (request) => {
    for (const source of sources) {
      const unlocked = await source.unlock(request);
      if (unlocked) return unlocked;
    }
    throw new CairnError('Cairn.Usage', 'no passphrase given, and the repository has no KMS key to open it with', {
      hint: 'set CAIRN_PASSWORD, CAIRN_PASSWORD_FILE or CAIRN_PASSWORD_COMMAND, pass --password-file FILE or --password-command CMD, or run on a terminal to be asked',
    });
  });
}

/** Opens the repository with a recovery kit alone (every key file may be gone): `key import`. */
export async function openWithRecoveryKit(
  storage: Storage,
  kitPath: string,
  recoveryPassphrase: () => Promise<string>,
): Promise<Repository> {
  let text: string;
  try {
    text = await readFile(kitPath, 'utf8');
  } catch (error) {
    throw new CairnError('Cairn.Usage', `cannot read the recovery kit ${kitPath}: ${errorMessage(error)}`, { cause: error });
  }
  const kit = parseRecoveryKit(text);
  return Repository.openWith(storage, async ({ config }) => ({
    master: await openRecoveryKit(kit, await recoveryPassphrase(), config.id),
    keyId: 'recovery-kit',
  }));
}
