import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { lastOfType, runCli } from '../../helpers/cli.ts';
import { PASSPHRASE, tempDir } from '../../helpers/repo.ts';

/**
 * `latest` scoped as restic scopes it (issue 19): --host, --path and --tag on restore, ls, dump,
 * diff and drill. Two hosts back up into one repository, the second one last: unscoped, `latest`
 * is the second's; scoped, it is the newest of the host, path or tags asked for.
 */
describe('latest --host / --path / --tag', () => {
  let work: Awaited<ReturnType<typeof tempDir>>;
  let env: Record<string, string>;
  let dirA: string;
  let dirB: string;
  let idA: string;
  let idB: string;
  before(async () => {
    work = await tempDir('latest-filter');
    env = { CAIRN_REPOSITORY: join(work.path, 'repo'), CAIRN_PASSWORD: PASSPHRASE };
    assert.equal((await runCli(['init'], env)).code, 0);
    dirA = join(work.path, 'app');
    dirB = join(work.path, 'web');
    await mkdir(dirA);
    await mkdir(dirB);
    await writeFile(join(dirA, 'which.txt'), 'app on host-a\n');
    await writeFile(join(dirB, 'which.txt'), 'web on host-b\n');
    const backup = async (host: string, dir: string, tag: string): Promise<string> => {
      const r = await runCli(['backup', '--host', host, '--tag', tag, dir], env);
      assert.equal(r.code, 0, r.stderr);
      return (lastOfType(r, 'summary') as { snapshotId: string }).snapshotId;
    };
    idA = await backup('host-a', dirA, 'nightly');
    idB = await backup('host-b', dirB, 'hourly');
  });
  after(async () => {
    await work.remove();
  });

  it('restore latest --host restores that host’s newest, not the repository’s', async () => {
    const target = join(work.path, 'restored-a');
    const r = await runCli(['restore', 'latest', '--host', 'host-a', '--target', target], env);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(await readFile(join(target, 'which.txt'), 'utf8'), 'app on host-a\n');
    const unscoped = join(work.path, 'restored-latest');
    assert.equal((await runCli(['restore', 'latest', '--target', unscoped], env)).code, 0);
    assert.equal(await readFile(join(unscoped, 'which.txt'), 'utf8'), 'web on host-b\n', 'unscoped, latest is the newest of all');
  });

  it('ls --path, dump --tag and drill --host choose the same way', async () => {
    const ls = await runCli(['ls', 'latest', '--path', dirA], env);
    assert.equal(ls.code, 0, ls.stderr);
    assert.equal((lastOfType(ls, 'ls') as { snapshotId: string }).snapshotId, idA);
    const dump = await runCli(['dump', 'latest', 'which.txt', '--tag', 'nightly'], env);
    assert.equal(dump.code, 0, dump.stderr);
    assert.equal(dump.stdout, 'app on host-a\n');
    const drill = await runCli(['drill', '--host', 'host-a'], env);
    assert.equal(drill.code, 0, drill.stderr);
    assert.equal((lastOfType(drill, 'drill') as { snapshotId: string }).snapshotId, idA);
    const diff = await runCli(['diff', idB, 'latest', '--host', 'host-a'], env);
    assert.equal(diff.code, 0, diff.stderr);
    assert.equal((lastOfType(diff, 'diff') as { b: string }).b, idA);
  });

  it('a filter nothing matches is exit 13, naming the flags; with --to-time it is refused', async () => {
    const none = await runCli(['restore', 'latest', '--host', 'host-z', '--target', join(work.path, 'none')], env);
    assert.equal(none.code, 13, none.stderr);
    assert.match(none.stderr, /no snapshot in .* matches the --host, --path and --tag given/);
    assert.deepEqual(await readdir(work.path).then((names) => names.filter((n) => n === 'none')), [], 'nothing was written');
    const pitr = await runCli(['restore', '--to-time', '2026-12-01T00:00:00Z', '--host', 'host-a', '--target', join(work.path, 'p')], env);
    assert.equal(pitr.code, 2, pitr.stderr);
    assert.match(pitr.stderr, /a point-in-time restore chooses its base itself/);
  });
});
