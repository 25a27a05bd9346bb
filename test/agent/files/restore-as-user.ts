/**
 * Run by hostile-root-user.test.ts as an unprivileged user (a child process
 * started with another uid): restores one snapshot and prints what happened as
 * JSON. Arguments: repository path, snapshot id, target, "force" or "".
 */
import { Repository } from '../../../agent/core/repository.ts';
import { PASSPHRASE, fileRepo, restoreTo } from '../../helpers/repo.ts';

const [repoPath, snapshot, target, force] = process.argv.slice(2) as [string, string, string, string];
const repo = await Repository.open(fileRepo(repoPath), PASSPHRASE);
try {
  const { result } = await restoreTo(repo, snapshot, target, { force: force === 'force' });
  process.stdout.write(JSON.stringify({ ok: true, files: result.files, errors: result.errors }));
} catch (error) {
  const e = error as Error & { code?: string };
  process.stdout.write(JSON.stringify({ ok: false, code: e.code, message: e.message }));
}
