import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parseWalArgv } from '../../../agent/pitr/wal-fast.ts';
import { runCli } from '../../helpers/cli.ts';
import { PASSPHRASE, tempDir } from '../../helpers/repo.ts';

const ENTRY = new URL('../../../agent/pitr/wal-fast.ts', import.meta.url).href;

describe('wal-push / wal-fetch without the full CLI', () => {
  it("parses the global options before the command and the command's own after it", () => {
    assert.deepEqual(parseWalArgv(['--repo', '/r', '--password-file=/p', '-q', 'wal-push', 'pg_wal/000000010000000000000003']), {
      command: 'wal-push',
      flags: { repo: '/r', passwordFile: '/p' },
      options: {},
      args: ['pg_wal/000000010000000000000003'],
    });
    assert.deepEqual(
      parseWalArgv([
        '-r',
        's3://b/p',
        '--limit-download',
        '5',
        'wal-fetch',
        '--stream',
        'pg-1',
        '00000002.history',
        'pg_wal/RECOVERYHISTORY',
        '--spool-dir=/s',
      ]),
      {
        command: 'wal-fetch',
        flags: { repo: 's3://b/p', limitDownload: '5' },
        options: { stream: 'pg-1', spoolDir: '/s' },
        args: ['00000002.history', 'pg_wal/RECOVERYHISTORY'],
      },
    );
    assert.deepEqual(
      parseWalArgv(['wal-fetch', '--stage-dir', 'cairn-wal-stage.0123456789abcdef', '000000010000000000000003', 'pg_wal/RECOVERYXLOG'])
        ?.options,
      {
        stageDir: 'cairn-wal-stage.0123456789abcdef',
      },
    );
  });

  it('leaves to the full CLI whatever it does not know: help, other commands and options, wrong argument counts', () => {
    for (const argv of [
      ['wal-push', '--help'],
      ['wal-push', '-h', 'x'],
      ['backup', 'wal-push'],
      ['--unknown', 'wal-push', 'x'],
      ['wal-push'],
      ['wal-fetch', 'x'],
      ['wal-push', 'a', 'b'],
      ['wal-push', '--stage-dir', 'd', 'x'],
      ['--repo'],
      ['snapshots'],
    ]) {
      assert.equal(parseWalArgv(argv), undefined, argv.join(' '));
    }
  });

  it('pushes and fetches through the daemon, exit 1 and silence for a missing file, the same as the CLI', async () => {
    const work = await tempDir('walfast');
    try {
      const env = {
        PATH: process.env.PATH ?? '',
        CAIRN_REPOSITORY: join(work.path, 'repo'),
        CAIRN_PASSWORD: PASSPHRASE,
        CAIRN_SPOOL_DIR: join(work.path, 'spool'),
        CAIRN_WAL_DAEMON_IDLE: '30',
      };
      assert.equal((await runCli(['init'], env)).code, 0);
      const data = join(work.path, 'data');
      await mkdir(join(data, 'global'), { recursive: true });
      await mkdir(join(data, 'pg_wal'), { recursive: true });
      const control = randomBytes(64);
      control.writeBigUInt64LE(42n, 0);
      await writeFile(join(data, 'global', 'pg_control'), control);
      const segment = randomBytes(1 << 20);
      await writeFile(join(data, 'pg_wal', '000000010000000000000007'), segment);
      const fast = (args: string[], extra: Record<string, string | undefined> = {}) =>
        spawnSync(
          process.execPath,
          [
            '--input-type=module',
            '-e',
            `const { runWalCommand } = await import(${JSON.stringify(ENTRY)}); process.exitCode = (await runWalCommand(process.argv.slice(1), process.env)) ?? 99;`,
            '--',
            ...args,
          ],
          {
            cwd: data,
            env: Object.fromEntries(
              Object.entries({ ...env, ...extra }).filter((entry): entry is [string, string] => entry[1] !== undefined),
            ),
            encoding: 'utf8',
          },
        );
      const pushed = fast(['wal-push', 'pg_wal/000000010000000000000007']);
      assert.equal(pushed.status, 0, pushed.stderr);
      assert.equal(pushed.stdout + pushed.stderr, '');
      const fetched = fast(['wal-fetch', '000000010000000000000007', 'pg_wal/RECOVERYXLOG']);
      assert.equal(fetched.status, 0, fetched.stderr);
      assert.deepEqual(await readFile(join(data, 'pg_wal', 'RECOVERYXLOG')), segment);
      const missing = fast(['wal-fetch', '000000010000000000000008', 'pg_wal/RECOVERYXLOG']);
      assert.equal(missing.status, 1);
      assert.equal(missing.stderr, '');
      // As restore_command's snippet asks for it (pg-recovery.ts), through both entries.
      assert.equal(
        fast(['wal-fetch', '000000010000000000000008', 'pg_wal/RECOVERYXLOG'], { CAIRN_WAL_FETCH_MISSING_EXIT: '99' }).status,
        99,
      );
      const viaCli = await runCli(['wal-fetch', '--stream', 'pg-42', '000000010000000000000008', join(data, 'pg_wal', 'RECOVERYXLOG')], {
        ...env,
        CAIRN_WAL_FETCH_MISSING_EXIT: '99',
      });
      assert.equal(viaCli.code, 99, viaCli.stderr);
      await writeFile(join(data, 'pg_wal', '000000010000000000000007'), randomBytes(1 << 20));
      const conflict = fast(['wal-push', 'pg_wal/000000010000000000000007']);
      assert.equal(conflict.status, 17);
      assert.match(conflict.stderr, /^cairn: .*different content; nothing was overwritten\nhint: /);
      assert.equal(conflict.stdout, '', 'text unless asked: PostgreSQL logs stderr');
      const asked = fast(['wal-push', 'pg_wal/000000010000000000000007'], { CAIRN_JSON: '1' });
      assert.equal(asked.status, 17, asked.stderr);
      assert.equal(
        (JSON.parse(asked.stdout) as { code: string }).code,
        'Cairn.AlreadyExists',
        'the JSON error line when asked (CAIRN_JSON), as the full CLI prints it',
      );
      assert.equal(fast(['snapshots']).status, 99, 'not a command it takes on');

      // The repository's volume goes away under the running daemon (unmounted, the directory moved): every object
      // is "not found", and that must not read as "never archived" (exit 1), or PostgreSQL would go on without it.
      await rename(join(work.path, 'repo'), join(work.path, 'repo-away'));
      const gone = fast(['wal-fetch', '000000010000000000000007', 'pg_wal/RECOVERYXLOG']);
      await rename(join(work.path, 'repo-away'), join(work.path, 'repo'));
      assert.equal(gone.status, 200, gone.stderr);
      assert.match(gone.stderr, /is not there any more/);
      assert.equal(fast(['wal-fetch', '000000010000000000000007', 'pg_wal/RECOVERYXLOG']).status, 0, 'back once it is');

      // The passphrase in a file or from a command instead of CAIRN_PASSWORD: the daemon wal-push starts gets it too.
      const passFile = join(work.path, 'passphrase');
      await writeFile(passFile, `${PASSPHRASE}\n`, { mode: 0o600 });
      const nine = randomBytes(1 << 20);
      await writeFile(join(data, 'pg_wal', '000000010000000000000009'), nine);
      // Relative, as PostgreSQL's environment may give it: the data directory is where wal-push runs, not the daemon.
      await writeFile(join(data, 'passphrase'), `${PASSPHRASE}\n`, { mode: 0o600 });
      const byFile = fast(['wal-push', 'pg_wal/000000010000000000000009'], {
        CAIRN_PASSWORD: undefined,
        CAIRN_PASSWORD_FILE: 'passphrase',
        CAIRN_SPOOL_DIR: join(work.path, 'spool-file'),
      });
      assert.equal(byFile.status, 0, byFile.stderr);
      const byCommand = fast(['--password-command', `cat ${passFile}`, 'wal-fetch', '000000010000000000000009', 'pg_wal/RECOVERYXLOG'], {
        CAIRN_PASSWORD: undefined,
        CAIRN_SPOOL_DIR: join(work.path, 'spool-command'),
      });
      assert.equal(byCommand.status, 0, byCommand.stderr);
      assert.deepEqual(await readFile(join(data, 'pg_wal', 'RECOVERYXLOG')), nine);

      // A real failure is not "never archived": PostgreSQL reads 1–125 as that, and stops on more.
      const elsewhere = { CAIRN_REPOSITORY: join(work.path, 'no-repo'), CAIRN_SPOOL_DIR: join(work.path, 'spool2') };
      const failedFast = fast(['wal-fetch', '000000010000000000000007', 'pg_wal/RECOVERYXLOG'], elsewhere);
      assert.equal(failedFast.status, 200, failedFast.stderr);
      assert.match(failedFast.stderr, /^cairn: /);
      const failedJson = fast(['wal-fetch', '000000010000000000000007', 'pg_wal/RECOVERYXLOG'], { ...elsewhere, CAIRN_JSON: '1' });
      assert.deepEqual(
        { ...(JSON.parse(failedJson.stdout) as { code: string; exitCode: number }), time: 0, message: '', hint: '' },
        { type: 'error', code: 'Cairn.RepositoryNotFound', exitCode: 200, time: 0, message: '', hint: '' },
      );
      const failedCli = await runCli(['wal-fetch', '000000010000000000000007', 'pg_wal/RECOVERYXLOG'], { ...env, ...elsewhere });
      assert.equal(failedCli.code, 200, failedCli.stderr);
      assert.equal((await runCli(['wal-fetch', 'one-argument'], env)).code, 200, 'a usage error too');
      assert.equal((await runCli(['wal-push', 'one', 'two'], env)).code, 2, 'other commands keep their codes');
    } finally {
      for (const spool of ['spool', 'spool-file', 'spool-command'])
        await runCli(['wal-daemon', '--stop', '--spool-dir', join(work.path, spool)], {}).catch(() => undefined);
      await work.remove();
    }
  });
});
