import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { lastOfType, runCli } from '../../helpers/cli.ts';
import { PASSPHRASE, tempDir } from '../../helpers/repo.ts';

/**
 * `backup --files-from` and `--exclude-file` as restic users write them (issue 19): one entry a
 * line, blank lines and `#` comments skipped, a name with spaces kept whole; a list that cannot be
 * read or names nothing is refused before anything is written.
 */
describe('backup --files-from and --exclude-file', () => {
  let work: Awaited<ReturnType<typeof tempDir>>;
  let env: Record<string, string>;
  before(async () => {
    work = await tempDir('backup-lists');
    env = { CAIRN_REPOSITORY: join(work.path, 'repo'), CAIRN_PASSWORD: PASSPHRASE };
    assert.equal((await runCli(['init'], env)).code, 0);
  });
  after(async () => {
    await work.remove();
  });

  it('backs up the listed paths, without the excluded patterns', async () => {
    const src = join(work.path, 'src');
    await mkdir(join(src, 'my docs'), { recursive: true });
    await mkdir(join(src, 'other'), { recursive: true });
    await writeFile(join(src, 'my docs', 'keep.txt'), 'keep');
    await writeFile(join(src, 'my docs', 'drop.tmp'), 'drop');
    await writeFile(join(src, 'other', 'not-listed.txt'), 'no');
    const list = join(work.path, 'files.txt');
    await writeFile(list, `# what to back up\n\n${join(src, 'my docs')}\r\n`);
    const excludes = join(work.path, 'excludes.txt');
    await writeFile(excludes, '# scratch files\n*.tmp\n');
    const r = await runCli(['backup', '--files-from', list, '--exclude-file', excludes], env);
    assert.equal(r.code, 0, r.stderr);
    const id = (lastOfType(r, 'summary') as { snapshotId: string }).snapshotId;
    const ls = await runCli(['ls', id, '/', '--recursive'], env);
    const names = ls.lines.filter((l) => l.type === 'entry').map((l) => (l.entry as { path: string }).path);
    assert.ok(
      names.some((n) => n.endsWith('keep.txt')),
      names.join(', '),
    );
    assert.ok(!names.some((n) => n.endsWith('drop.tmp')), 'the excluded pattern was skipped');
    assert.ok(!names.some((n) => n.includes('not-listed')), 'only the listed path');
  });

  it('a list that is missing or names nothing is a usage error, and no snapshot is made', async () => {
    const before = await runCli(['snapshots'], env);
    const count = (lastOfType(before, 'snapshots') as { snapshots: unknown[] }).snapshots.length;
    const missing = await runCli(['backup', '--files-from', join(work.path, 'nope.txt')], env);
    assert.equal(missing.code, 2);
    assert.match(missing.stderr, /cannot read the list of paths .*nope\.txt/);
    const empty = join(work.path, 'empty.txt');
    await writeFile(empty, '# nothing yet\n\n');
    const none = await runCli(['backup', '--files-from', empty], env);
    assert.equal(none.code, 2);
    assert.match(none.stderr, /the list of paths .*empty\.txt names none/);
    const after = await runCli(['snapshots'], env);
    assert.equal((lastOfType(after, 'snapshots') as { snapshots: unknown[] }).snapshots.length, count);
  });

  it('--exclude-if-present leaves out a directory holding the marker, whole', async () => {
    const src = join(work.path, 'marked');
    await mkdir(join(src, 'cache'), { recursive: true });
    await mkdir(join(src, 'data'), { recursive: true });
    await writeFile(join(src, 'cache', '.nobackup'), '');
    await writeFile(join(src, 'cache', 'big.bin'), 'cached');
    await writeFile(join(src, 'data', 'keep.txt'), 'keep');
    const r = await runCli(['backup', '--exclude-if-present', '.nobackup', src], env);
    assert.equal(r.code, 0, r.stderr);
    const id = (lastOfType(r, 'summary') as { snapshotId: string }).snapshotId;
    const ls = await runCli(['ls', id, '/', '--recursive'], env);
    const names = ls.lines.filter((l) => l.type === 'entry').map((l) => (l.entry as { path: string }).path);
    assert.deepEqual(
      names.map((n) => n.replace(/^\//, '')).sort(),
      ['data', 'data/keep.txt'],
      'the marked directory is left out whole, the rest kept',
    );
    assert.match(r.stderr + r.stdout, /left out cache: it holds \.nobackup/);
  });

  it(
    '--one-file-system stores a mount point as an empty directory and reads nothing below it',
    { skip: process.getuid?.() === 0 ? undefined : 'needs root (mounts a tmpfs inside the tree)' },
    async () => {
      const src = join(work.path, 'fs');
      const mnt = join(src, 'mnt');
      await mkdir(mnt, { recursive: true });
      await writeFile(join(src, 'here.txt'), 'same file system');
      const mount = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=4m', 'tmpfs', mnt], { encoding: 'utf8' });
      assert.equal(mount.status, 0, `mount a tmpfs: ${mount.stderr}`);
      try {
        await writeFile(join(mnt, 'other.txt'), 'another file system');
        const pathsOf = async (args: string[]): Promise<string[]> => {
          const r = await runCli(['backup', ...args, src], env);
          assert.equal(r.code, 0, r.stderr);
          const id = (lastOfType(r, 'summary') as { snapshotId: string }).snapshotId;
          const ls = await runCli(['ls', id, '/', '--recursive'], env);
          return ls.lines.filter((l) => l.type === 'entry').map((l) => (l.entry as { path: string }).path.replace(/^\//, ''));
        };
        assert.deepEqual((await pathsOf([])).sort(), ['here.txt', 'mnt', 'mnt/other.txt'], 'without the flag the walk crosses');
        assert.deepEqual((await pathsOf(['--one-file-system'])).sort(), ['here.txt', 'mnt'], 'the mount point stays, empty');
      } finally {
        spawnSync('umount', [mnt]);
      }
    },
  );
});
