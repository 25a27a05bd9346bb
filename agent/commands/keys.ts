import { randomBytes } from 'node:crypto';
import { lstat, readdir, unlink } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { writeNewFileDurably } from '../core/durable-file.ts';
import { CairnError, errorMessage } from '../core/errors.ts';
import { readHistory } from '../core/history.ts';
import { wrapMasterKey, parseKeyFile, type KeyFile } from '../core/keyfile.ts';
import { KEYS_PREFIX, idFromKey, keyFileKey } from '../core/layout.ts';
import { createRecoveryKit } from '../core/recovery-kit.ts';
import type { Repository } from '../core/repository.ts';
import type { DeletableStorage } from '../core/storage.ts';
import { kmsWrapMasterKey } from '../keys/kms.ts';
import { record, type OperationContext } from './operation.ts';

export interface KeyInfo {
  id: string;
  current: boolean;
  /** unreadable: the object under keys/ cannot be parsed (shown, skipped when opening; `key remove` deletes it). */
  kind: KeyFile['kind'] | 'unreadable';
  /** unreadable: why. */
  error?: string;
  /** kms: the KMS key's ARN. */
  keyArn?: string;
  created: string;
  host: string;
  user: string;
}

export async function listKeys(repo: Repository): Promise<KeyInfo[]> {
  const keys: KeyInfo[] = [];
  for await (const object of repo.storage.list(KEYS_PREFIX)) {
    const id = idFromKey(object.key, KEYS_PREFIX);
    if (!id) continue;
    let file: KeyFile;
    try {
      file = parseKeyFile(await repo.storage.get(object.key), object.key);
    } catch (error) {
      if (!(error instanceof CairnError && error.code === 'Cairn.Damaged')) throw error;
      keys.push({ id, current: false, kind: 'unreadable', error: errorMessage(error), created: '?', host: '?', user: '?' });
      continue;
    }
    keys.push({
      id,
      current: id === repo.keyId,
      kind: file.kind,
      ...(file.kind === 'kms' ? { keyArn: file.keyArn } : {}),
      created: file.created,
      host: file.host,
      user: file.user,
    });
  }
  return keys.sort((a, b) => a.created.localeCompare(b.created));
}

async function putKeyFile(repo: Repository, keyFile: KeyFile, ctx: OperationContext): Promise<string> {
  const id = randomBytes(16).toString('hex');
  await repo.ensureKeyCheck();
  await repo.storage.put(keyFileKey(id), Buffer.from(JSON.stringify(keyFile, null, 2)), { ifAbsent: true });
  await record(ctx, 'key.added', { keyId: id, kind: keyFile.kind, ...(keyFile.kind === 'kms' ? { keyArn: keyFile.keyArn } : {}) });
  return id;
}

/** Adds a wrapping of the same master key under a new passphrase: no data changes. */
export async function addKey(repo: Repository, passphrase: string, ctx: OperationContext): Promise<string> {
  return putKeyFile(repo, await wrapMasterKey(repo.masterKey(), passphrase, repo.id, ctx.who), ctx);
}

/** Adds a wrapping of the same master key by a KMS key (kms:Encrypt on it): no data changes. */
export async function addKmsKey(repo: Repository, keyArn: string, ctx: OperationContext): Promise<{ id: string; keyArn: string }> {
  const keyFile = await kmsWrapMasterKey(repo.masterKey(), keyArn, repo.id, ctx.who);
  return { id: await putKeyFile(repo, keyFile, ctx), keyArn: keyFile.keyArn };
}

export interface RemoveOptions {
  /** Remove the key this command was opened with (key passwd). */
  allowCurrent?: boolean;
  /** Remove the last key file, or the last passphrase key (leaving only KMS). */
  forceLastKey?: boolean;
}

/**
 * Removes one wrapping (revokes it; the master key stays). Refused without
 * --force-last-key when it would leave no key file at all (only a recovery
 * kit would open the repository), or no passphrase key beside KMS keys
 * (restoring would need AWS KMS): docs/contracts.md ("Keys"), docs/keys.md.
 */
export async function removeKey(
  repo: Repository,
  storage: DeletableStorage,
  id: string,
  ctx: OperationContext,
  options: RemoveOptions = {},
): Promise<KeyInfo> {
  const keys = await listKeys(repo);
  const matches = keys.filter((k) => k.id === id || (id.length >= 4 && k.id.startsWith(id)));
  if (matches.length > 1)
    throw new CairnError('Cairn.Usage', `key id prefix ${id} is ambiguous (${matches.length} keys)`, {
      hint: 'give more digits (see `cairn key list`)',
    });
  const key = matches[0];
  if (!key) throw new CairnError('Cairn.NotFound', `no key ${id} in ${repo.storage.location}`, { hint: 'list them with `cairn key list`' });
  const rest = keys.filter((k) => k.id !== key.id && k.kind !== 'unreadable');
  // The last key file is necessarily the one opened with: the last-key rule below decides that case.
  if (key.current && !options.allowCurrent && rest.length > 0) {
    throw new CairnError('Cairn.Usage', `key ${key.id.slice(0, 8)} is the one this command opened the repository with`, {
      hint: 'open the repository with another key to remove it (another passphrase, or a KMS key when no passphrase is given), or use `cairn key passwd` to replace a passphrase',
    });
  }
  if (!options.forceLastKey) {
    const lastKey = rest.length === 0;
    const lastPassphrase = !lastKey && key.kind === 'passphrase' && !rest.some((k) => k.kind === 'passphrase');
    if (lastKey || lastPassphrase) {
      const kits = await recoveryKitsRecorded(repo);
      const kitNote =
        kits.length > 0
          ? `the history records ${kits.length} recovery kit export(s), the latest on ${kits.at(-1)}`
          : 'the history records no recovery kit export';
      throw new CairnError(
        'Cairn.Usage',
        lastKey
          ? `key ${key.id.slice(0, 8)} is the repository's last key file: without it only a recovery kit opens the repository (${kitNote})`
          : `key ${key.id.slice(0, 8)} is the last passphrase key: without it the repository opens only through KMS (${rest.map((k) => k.keyArn).join(', ')}), so restoring would need AWS (${kitNote})`,
        {
          hint: 'export a recovery kit first (`cairn key export --recovery-kit FILE`) and keep it and its passphrase safe, or add a passphrase (`cairn key add`); then pass --force-last-key to remove it anyway',
        },
      );
    }
  }
  await storage.delete(keyFileKey(key.id));
  await record(ctx, 'key.removed', {
    keyId: key.id,
    kind: key.kind,
    ...(key.keyArn ? { keyArn: key.keyArn } : {}),
    remaining: rest.length,
  });
  return key;
}

/** Times of the `key.kit-exported` events in the history (a kit itself leaves no trace in the repository). */
async function recoveryKitsRecorded(repo: Repository): Promise<string[]> {
  try {
    return (await readHistory(repo)).filter((e) => e.event === 'key.kit-exported').map((e) => e.time);
  } catch {
    return [];
  }
}

/** Replaces the current passphrase: a new wrapping is written first, then the old one removed. */
export async function changePassphrase(
  repo: Repository,
  storage: DeletableStorage,
  passphrase: string,
  ctx: OperationContext,
): Promise<string> {
  const current = (await listKeys(repo)).find((k) => k.current);
  if (current?.kind !== 'passphrase') {
    throw new CairnError(
      'Cairn.Usage',
      `key passwd replaces the passphrase the repository was opened with, but it was opened ${current ? `with a ${current.kind} key` : 'with a recovery kit'}`,
      {
        hint: 'open it with the passphrase to change (CAIRN_PASSWORD / --password-file), or use `cairn key add` and `cairn key remove`',
      },
    );
  }
  const id = await addKey(repo, passphrase, ctx);
  await removeKey(repo, storage, repo.keyId, ctx, { allowCurrent: true, forceLastKey: true });
  await record(ctx, 'key.changed', { oldKeyId: repo.keyId, newKeyId: id });
  return id;
}

/**
 * Writes a recovery kit for this repository's master key to `path` (mode 0600;
 * never overwrites). Through a temporary file beside it, so a full disk, an
 * I/O error or the CLI's exit at a second SIGTERM never leaves a truncated kit
 * that could be printed and filed as the real one.
 */
export async function exportRecoveryKit(
  repo: Repository,
  path: string,
  recoveryPassphrase: string,
  ctx: OperationContext,
): Promise<{ path: string; checksum: string }> {
  const text = await createRecoveryKit(repo.masterKey(), recoveryPassphrase, { repositoryId: repo.id, location: repo.storage.location });
  try {
    // A short hidden name: one that grew with the kit's would fail long names (ENAMETOOLONG).
    await writeNewFileDurably(path, text, join(dirname(path), `${KIT_TEMPORARY}${randomBytes(6).toString('hex')}.tmp`), 0o600);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    // Also when the temporary file could not be made (a directory we cannot write to) but the name is taken.
    if (
      code === 'EEXIST' ||
      (await lstat(path).then(
        () => true,
        () => false,
      ))
    )
      throw new CairnError('Cairn.AlreadyExists', `${path} already exists: a recovery kit is never written over a file`, {
        hint: 'choose a new file name',
        cause: error,
      });
    throw new CairnError('Cairn.Usage', `cannot write the recovery kit to ${path}: ${errorMessage(error)}`, { cause: error });
  }
  const swept = await sweepKitTemporaries(dirname(path));
  if (swept > 0)
    ctx.progress.warn(
      `removed ${swept} temporary recovery kit file${swept === 1 ? '' : 's'} (.cairn-kit-*.tmp) from ${dirname(path)}: an earlier export was killed while writing`,
    );
  const checksum = /Kit checksum: (.*)/.exec(text)?.[1] ?? '';
  await record(ctx, 'key.kit-exported', { checksum });
  return { path, checksum };
}

const KIT_TEMPORARY = '.cairn-kit-';
const KIT_TEMPORARY_NAME = /^\.cairn-kit-[0-9a-f]{12}\.tmp$/;

/**
 * A kit export killed by SIGKILL (or a crash) between writing its temporary file and removing it
 * leaves a whole kit under a hidden name, a secret the operator does not know is there. The next
 * export into the same directory removes such files: only this user's own (another user's cannot
 * be ours), and only those older than a minute (an export in flight holds its file for milliseconds).
 */
async function sweepKitTemporaries(dir: string): Promise<number> {
  const names = await readdir(dir).catch(() => [] as string[]);
  let swept = 0;
  for (const name of names) {
    if (!KIT_TEMPORARY_NAME.test(name)) continue;
    const file = join(dir, name);
    const info = await lstat(file).catch(() => undefined);
    if (!info?.isFile() || info.uid !== process.getuid?.() || Math.abs(Date.now() - info.mtimeMs) <= 60_000) continue;
    if (
      await unlink(file).then(
        () => true,
        () => false,
      )
    )
      swept++;
  }
  return swept;
}
