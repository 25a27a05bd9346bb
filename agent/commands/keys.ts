import { randomBytes } from 'node:crypto';
import { CairnError } from '../core/errors.ts';
import { wrapMasterKey, parseKeyFile } from '../core/keyfile.ts';
import { KEYS_PREFIX, idFromKey, keyFileKey } from '../core/layout.ts';
import type { Repository } from '../core/repository.ts';
import type { DeletableStorage } from '../core/storage.ts';
import { record, type OperationContext } from './operation.ts';

export interface KeyInfo {
  id: string;
  current: boolean;
  kind: string;
  created: string;
  host: string;
  user: string;
}

export async function listKeys(repo: Repository): Promise<KeyInfo[]> {
  const keys: KeyInfo[] = [];
  for await (const object of repo.storage.list(KEYS_PREFIX)) {
    const id = idFromKey(object.key, KEYS_PREFIX);
    if (!id) continue;
    const file = parseKeyFile(await repo.storage.get(object.key), object.key);
    keys.push({ id, current: id === repo.keyId, kind: file.kind, created: file.created, host: file.host, user: file.user });
  }
  return keys.sort((a, b) => a.created.localeCompare(b.created));
}

/** Adds a wrapping of the same master key under a new passphrase: no data changes. */
export async function addKey(repo: Repository, passphrase: string, ctx: OperationContext): Promise<string> {
  const keyFile = await wrapMasterKey(repo.masterKey(), passphrase, repo.id, ctx.who);
  const id = randomBytes(16).toString('hex');
  await repo.storage.put(keyFileKey(id), Buffer.from(JSON.stringify(keyFile, null, 2)), { ifAbsent: true });
  await record(ctx, 'key.added', { keyId: id });
  return id;
}

export async function removeKey(repo: Repository, storage: DeletableStorage, id: string, ctx: OperationContext, options: { allowCurrent?: boolean } = {}): Promise<void> {
  const keys = await listKeys(repo);
  const key = keys.find((k) => k.id === id || (id.length >= 4 && k.id.startsWith(id)));
  if (!key) throw new CairnError('Cairn.NotFound', `no key ${id} in ${repo.storage.location}`, { hint: 'list them with `cairn key list`' });
  if (keys.length === 1) throw new CairnError('Cairn.Usage', 'this is the repository\'s last key: removing it would make every backup unreadable', { hint: 'add another key first (`cairn key add`)' });
  if (key.current && !options.allowCurrent) {
    throw new CairnError('Cairn.Usage', `key ${key.id.slice(0, 8)} is the one this command opened the repository with`, { hint: 'open the repository with another passphrase to remove it, or use `cairn key passwd` to replace it' });
  }
  await storage.delete(keyFileKey(key.id));
  await record(ctx, 'key.removed', { keyId: key.id });
}

/** Replaces the current passphrase: a new wrapping is written first, then the old one removed. */
export async function changePassphrase(repo: Repository, storage: DeletableStorage, passphrase: string, ctx: OperationContext): Promise<string> {
  const id = await addKey(repo, passphrase, ctx);
  await removeKey(repo, storage, repo.keyId, ctx, { allowCurrent: true });
  await record(ctx, 'key.changed', { oldKeyId: repo.keyId, newKeyId: id });
  return id;
}
