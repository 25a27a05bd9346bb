import { stat } from 'node:fs/promises';

/**
 * A warning, not a refusal, when a file holding a secret (the repository's passphrase, a database
 * password, a cloud key) is open to other users: its mode lets group or others in, or another
 * (non-root) user owns it and can change it. Docs and examples install these 0600; a file left
 * 0644 by a default umask is easy to miss, and refusing would stop backups on hosts whose secrets
 * come mode 0644 from their platform (container secret volumes). Reported through Node's process
 * warnings, which the CLI shows as its own warnings (cli/process-warnings.ts) and the WAL daemon
 * writes to its log.
 */
export async function warnIfExposed(path: string, what: string): Promise<void> {
  const info = await stat(path).catch(() => undefined);
  if (!info?.isFile()) return;
  const uid = process.getuid?.();
  const problems: string[] = [];
  if ((info.mode & 0o077) !== 0)
    problems.push(`other users can ${info.mode & 0o022 ? 'change or ' : ''}read it (mode ${(info.mode & 0o777).toString(8)})`);
  if (uid !== undefined && info.uid !== uid && info.uid !== 0) problems.push(`it belongs to uid ${info.uid}, who can change it`);
  if (problems.length === 0) return;
  process.emitWarning(`${what} ${path}: ${problems.join('; ')}; make it this user's own, mode 600 (chmod 600 ${path})`, {
    type: 'SecretFileOpen',
    code: 'CAIRN_SECRET_FILE',
  });
}
