import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { chmod, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { runCli } from '../../helpers/cli.ts';
import { PASSPHRASE, tempDir } from '../../helpers/repo.ts';

/**
 * Passphrase sources as restic users know them (issue 19): --password-file and
 * --password-command, CAIRN_PASSWORD_FILE and CAIRN_PASSWORD_COMMAND, then CAIRN_PASSWORD. A
 * command runs with /bin/sh as an operator's hook: Cairn's own secrets are not in its
 * environment, its output is never shown, and a failure names its exit.
 */
describe('passphrase from a file or a command', () => {
  let work: Awaited<ReturnType<typeof tempDir>>;
  let repo: string;
  let file: string;
  before(async () => {
    work = await tempDir('password-sources');
    repo = join(work.path, 'repo');
    file = join(work.path, 'pass.txt');
    await writeFile(file, `${PASSPHRASE}\n`, { mode: 0o600 });
    assert.equal((await runCli(['init'], { CAIRN_REPOSITORY: repo, CAIRN_PASSWORD: PASSPHRASE })).code, 0);
  });
  after(async () => {
    await work.remove();
  });

  it('CAIRN_PASSWORD_FILE opens the repository (one trailing newline is not part of it)', async () => {
    const result = await runCli(['snapshots'], { CAIRN_REPOSITORY: repo, CAIRN_PASSWORD_FILE: file });
    assert.equal(result.code, 0, result.stderr);
  });

  it('a password file other users can read still opens it, with a warning naming the file, its mode and the fix; a 0600 one says nothing', async () => {
    const open = join(work.path, 'pass-0644.txt');
    await writeFile(open, `${PASSPHRASE}\n`, { mode: 0o644 });
    await chmod(open, 0o644);
    const loose = await runCli(['snapshots'], { CAIRN_REPOSITORY: repo, CAIRN_PASSWORD_FILE: open });
    assert.equal(loose.code, 0, loose.stderr);
    const warned = loose.lines.filter((l) => l.type === 'warning').map((l) => String(l.message));
    assert.ok(
      warned.some((w) => w.includes(`the password file ${open}: other users can read it (mode 644)`) && w.includes('chmod 600')),
      warned.join('\n'),
    );
    const tight = await runCli(['snapshots'], { CAIRN_REPOSITORY: repo, CAIRN_PASSWORD_FILE: file });
    assert.ok(!tight.lines.some((l) => l.type === 'warning' && String(l.message).includes('password file')));
  });

  it('--password-command opens it; the command sees none of Cairn’s secrets', async () => {
    const seen = join(work.path, 'command-env.txt');
    const command = `env > '${seen}'; printf '%s\\n' '${PASSPHRASE}'`;
    const result = await runCli(['--password-command', command, 'snapshots'], {
      CAIRN_REPOSITORY: repo,
      CAIRN_DB_PASSWORD: 'database secret',
      CAIRN_TASK_TOKEN: 'task token',
    });
    assert.equal(result.code, 0, result.stderr);
    const env = await readFile(seen, 'utf8');
    assert.match(env, /^CAIRN_REPOSITORY=/m, 'the command ran with the environment, scrubbed');
    assert.doesNotMatch(env, /database secret|task token|CAIRN_DB_PASSWORD|CAIRN_TASK_TOKEN/);
  });

  it('CAIRN_PASSWORD_COMMAND that prints the wrong passphrase: exit 12, wrong passphrase', async () => {
    const result = await runCli(['snapshots'], { CAIRN_REPOSITORY: repo, CAIRN_PASSWORD_COMMAND: 'echo not-it' });
    assert.equal(result.code, 12, result.stderr);
    assert.doesNotMatch(result.stderr, /not-it/, 'the output of the command is never shown');
  });

  it('a failing command is a usage error naming its exit and its last message, never its output', async () => {
    const result = await runCli(['snapshots'], {
      CAIRN_REPOSITORY: repo,
      CAIRN_PASSWORD_COMMAND: "printf 'half-%s' secret; echo 'vault: permission denied' >&2; exit 3",
    });
    assert.equal(result.code, 2, result.stderr);
    assert.match(result.stderr, /the password command failed \(exit 3\): vault: permission denied/);
    assert.doesNotMatch(result.stderr, /half-secret/);
    const empty = await runCli(['snapshots'], { CAIRN_REPOSITORY: repo, CAIRN_PASSWORD_COMMAND: 'true' });
    assert.equal(empty.code, 2);
    assert.match(empty.stderr, /the password command printed nothing/);
  });

  it('a flag outranks the environment; two of one rank are refused', async () => {
    const flag = await runCli(['--password-file', file, 'snapshots'], { CAIRN_REPOSITORY: repo, CAIRN_PASSWORD: 'wrong' });
    assert.equal(flag.code, 0, flag.stderr);
    const both = await runCli(['--password-file', file, '--password-command', 'echo x', 'snapshots'], { CAIRN_REPOSITORY: repo });
    assert.equal(both.code, 2);
    assert.match(both.stderr, /give one of --password-file and --password-command, not both/);
    const bothEnv = await runCli(['snapshots'], { CAIRN_REPOSITORY: repo, CAIRN_PASSWORD_FILE: file, CAIRN_PASSWORD_COMMAND: 'echo x' });
    assert.equal(bothEnv.code, 2);
    assert.match(bothEnv.stderr, /give one of CAIRN_PASSWORD_FILE and CAIRN_PASSWORD_COMMAND/);
  });
});
