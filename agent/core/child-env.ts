/**
 * The one environment every child process starts with (docs/storage-hooks.md,
 * "What a child process sees"): the parent's, minus a deny-list, plus what the
 * child is given on purpose. Every spawn in agent/ builds its env here (a test
 * greps agent/ for spawns that do not), so a secret Cairn holds in its own
 * environment never reaches a hook, a database tool or a storage hook.
 *
 * Three kinds of child:
 * - `tool`: the database and system tools Cairn drives (pg_dump, mariadb-dump,
 *   mariabackup, mariadbd, etcdctl, pg_waldump, chown). They get no Cairn
 *   secret, no database password (they log in through the private option file
 *   or PGPASSFILE Cairn writes, or, for etcdctl, which has no such file, the
 *   ETCDCTL_USER the engine grants explicitly), and no cloud credentials
 *   (none of them talks to a cloud; Cairn does the uploading).
 * - `hook`: the operator's own commands (--pre-hook, --post-hook, --stop-cmd,
 *   --start-cmd, --storage-hook). No Cairn secret and no database password,
 *   but the cloud credentials stay: a storage hook that encrypts with KMS or a
 *   pre-hook that snapshots a volume needs them, the operator wrote the
 *   command, and on a cloud host the same credentials are one metadata-service
 *   request away for any process, so withholding them would break hooks
 *   without protecting anything.
 * - `cairn`: Cairn itself (the WAL daemon `wal-push` starts). It opens the
 *   repository, so it keeps the repository passphrase (CAIRN_PASSWORD, or
 *   where it lies: CAIRN_PASSWORD_FILE, CAIRN_PASSWORD_COMMAND) and the cloud
 *   credentials; every other Cairn secret, the task token and the database
 *   passwords go.
 */
export type ChildKind = 'tool' | 'hook' | 'cairn';

/**
 * A CAIRN_ variable whose name says it holds a secret or points at one:
 * CAIRN_PASSWORD, CAIRN_NEW_PASSWORD, CAIRN_RECOVERY_PASSWORD,
 * CAIRN_TO_PASSWORD, CAIRN_DB_PASSWORD, CAIRN_TASK_TOKEN, and any future
 * CAIRN_*KEY*, *SECRET*, *TOKEN*, *PASSWORD*, *PASSPHRASE*. A *_FILE variant
 * (a path, not the secret) is withheld too: no child needs to know where the
 * passphrase lies.
 */
const CAIRN_SECRET = /^CAIRN_.*(PASSWORD|PASSPHRASE|TOKEN|SECRET|KEY)/i;

/** Where the repository's passphrase comes from (cli/passphrase.ts): what the WAL daemon, Cairn itself, needs to open it. */
const REPOSITORY_PASSPHRASE = new Set(['CAIRN_PASSWORD', 'CAIRN_PASSWORD_FILE', 'CAIRN_PASSWORD_COMMAND']);

/** The database clients' own password variables; Cairn reads them and hands the tools a private file instead. */
const DATABASE_PASSWORDS = new Set(['PGPASSWORD', 'MYSQL_PWD', 'ETCDCTL_PASSWORD']);

/** Cloud credentials given as values (paths and profile names are not secrets and stay). */
const CLOUD_CREDENTIALS = new Set([
  'AWS_ACCESS_KEY_ID',
  'AWS_SECRET_ACCESS_KEY',
  'AWS_SESSION_TOKEN',
  'AWS_SECURITY_TOKEN',
  'AWS_CONTAINER_AUTHORIZATION_TOKEN',
]);

/** Whether a child of this kind is denied the variable `name` (holding `value`). */
export function isWithheld(name: string, value: string | undefined, kind: ChildKind): boolean {
  const upper = name.toUpperCase();
  if (DATABASE_PASSWORDS.has(upper)) return true;
  // etcdctl's own form ETCDCTL_USER=name:password carries the password; a bare name is harmless.
  if (upper === 'ETCDCTL_USER' && value?.includes(':')) return true;
  if (CAIRN_SECRET.test(upper)) return !(kind === 'cairn' && REPOSITORY_PASSPHRASE.has(upper));
  if (CLOUD_CREDENTIALS.has(upper)) return kind === 'tool';
  return false;
}

/**
 * A child's environment: `parent` without what a `kind` child is denied, then
 * `grant` (variables this child is given on purpose, such as etcdctl's login),
 * which are never filtered.
 */
export function childEnvironment(
  parent: NodeJS.ProcessEnv,
  kind: ChildKind,
  grant: Readonly<Record<string, string | undefined>> = {},
): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [name, value] of Object.entries(parent)) if (value !== undefined && !isWithheld(name, value, kind)) env[name] = value;
  for (const [name, value] of Object.entries(grant)) if (value !== undefined) env[name] = value;
  return env;
}
