import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { spawn, spawnSync } from 'node:child_process';
import { mkdir, readdir, readFile, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { earlyUnlockInput } from '../../../agent/cli/early-unlock.ts';
import { DEFAULT_SCRYPT, passphraseKey, prederivePassphraseKey } from '../../../agent/core/crypto.ts';
import { wrapMasterKey } from '../../../agent/core/keyfile.ts';
import { Repository } from '../../../agent/core/repository.ts';
import { CAIRN_BIN, runCliProcess } from '../../helpers/cli.ts';
import { fileRepo, PASSPHRASE, tempDir } from '../../helpers/repo.ts';

/**
 * The passphrase's scrypt started while the CLI loads (agent/cli/early-unlock.ts, issue 21). It may
 * only ever save time: a derivation for other inputs is never handed out, a wrong guess opens
 * nothing it should not, and odd repositories (several passphrase keys, a junk or hostile key file
 * first in line) open exactly as before.
 */
describe('early unlock', () => {
  let work: Awaited<ReturnType<typeof tempDir>>;
  let repo: string;
  let repository: Repository;
  before(async () => {
    work = await tempDir('early-unlock');
    repo = join(work.path, 'repo');
    repository = await Repository.init(fileRepo(repo), PASSPHRASE, { host: 'h', user: 'u' });
  });
  after(async () => {
    await work.remove();
  });

  const env = (): Record<string, string> => ({ CAIRN_REPOSITORY: repo, CAIRN_PASSWORD: PASSPHRASE });

  it('guesses for commands that open the repository, from the key file the unlock tries first', () => {
    for (const args of [
      ['snapshots'],
      ['--json', 'backup', '/data'],
      ['--concurrency', '4', 'restore', 'latest', '--target', '/t'],
      ['pin', 'latest'],
    ]) {
      const input = earlyUnlockInput(args, env());
      assert.ok(input, `${args.join(' ')}: a guess`);
      assert.equal(input.passphrase, PASSPHRASE);
      assert.deepEqual(input.params, DEFAULT_SCRYPT);
      assert.equal(input.salt.length, 16);
    }
    assert.ok(earlyUnlockInput(['snapshots'], { ...env(), CAIRN_REPOSITORY: pathToFileURL(repo).href }), 'a file:// URL is local too');
  });

  it('starts nothing where the guess would be wrong or wasted', () => {
    const none: Array<[string[], Record<string, string>]> = [
      [[], env()],
      [['--version'], env()],
      [['snapshots', '--help'], env()],
      [['init'], env()],
      [['engines'], env()],
      [['key', 'list'], env()],
      [['wal-push', 'pg_wal/000000010000000000000001'], env()],
      [['--repo', '/elsewhere', 'snapshots'], env()],
      [['--repo=/elsewhere', 'snapshots'], env()],
      [['-r', '/elsewhere', 'snapshots'], env()],
      [['snapshots', '--password-file', '/p'], env()],
      [['--password-command', 'vault read', 'snapshots'], env()],
      [['--storage-hook', 'age', 'snapshots'], env()],
      [['snapshots'], { ...env(), CAIRN_PASSWORD_FILE: '/p' }],
      [['snapshots'], { ...env(), CAIRN_PASSWORD_COMMAND: 'vault read' }],
      [['snapshots'], { ...env(), CAIRN_STORAGE_HOOK: 'age' }],
      [['snapshots'], { ...env(), CAIRN_REPOSITORY: 's3://bucket/prefix' }],
      [['snapshots'], { ...env(), CAIRN_REPOSITORY: join(work.path, 'no-such-repository') }],
      [['snapshots'], { CAIRN_REPOSITORY: repo }],
    ];
    for (const [args, environment] of none)
      assert.equal(earlyUnlockInput(args, environment), undefined, `${args.join(' ')} ${JSON.stringify(environment)}`);
  });

  it('a derivation started for other inputs is never handed out: the key is always the one of the inputs asked for', async () => {
    const salt = randomBytes(16);
    const params = { N: 1 << 10, r: 8, p: 1 };
    const right = await passphraseKey('right', salt, params);
    const cases: Array<[string, Buffer, typeof params]> = [
      ['wrong', salt, params],
      ['right', randomBytes(16), params],
      ['right', salt, { ...params, N: 1 << 11 }],
      ['right', salt, { ...params, r: 4 }],
      ['right', salt, params],
    ];
    for (const [passphrase, otherSalt, otherParams] of cases) {
      prederivePassphraseKey(passphrase, otherSalt, otherParams);
      assert.deepEqual(
        await passphraseKey('right', salt, params),
        right,
        `started for ${passphrase}, N=${otherParams.N}, r=${otherParams.r}`,
      );
    }
    // Taken once: a second call derives again, to the same key.
    assert.deepEqual(await passphraseKey('right', salt, params), right);
    // Refused parameters start nothing and still refuse when asked for.
    prederivePassphraseKey('right', salt, { N: 1 << 30, r: 8, p: 1 });
    await assert.rejects(passphraseKey('right', salt, { N: 1 << 30, r: 8, p: 1 }), /refusing scrypt parameters/);
  });

  it('through the bin: opens with the right passphrase, refuses a wrong one (exit 12)', async () => {
    const ok = await runCliProcess(['snapshots'], env());
    assert.equal(ok.code, 0, ok.stderr);
    const wrong = await runCliProcess(['snapshots'], { ...env(), CAIRN_PASSWORD: 'not the passphrase' });
    assert.equal(wrong.code, 12, wrong.stderr);
    assert.match(wrong.stderr, /does not open/);
  });

  it('through the bin: the guess is for another passphrase key, a junk one and a hostile one first in line; the right key still opens', async () => {
    const keys = join(repo, 'keys');
    // Sorted before the repository's own key: the first the unlock (and the guess) tries.
    const other = await wrapMasterKey(repository.masterKey(), 'another passphrase', repository.id, { host: 'h', user: 'u' });
    await writeFile(join(keys, `00${'a'.repeat(62)}`), JSON.stringify(other));
    assert.equal((await runCliProcess(['snapshots'], env())).code, 0, 'the second key opens with its passphrase');
    assert.equal((await runCliProcess(['snapshots'], { ...env(), CAIRN_PASSWORD: 'another passphrase' })).code, 0);

    await writeFile(join(keys, `${'0'.repeat(63)}1`), 'not json');
    const junk = await runCliProcess(['snapshots'], env());
    assert.equal(junk.code, 0, junk.stderr);
    assert.match(junk.stderr, /skipped the key file/);

    // 128 GiB of scrypt memory asked for: the guess must not run it (the unlock skips the file as damaged).
    const hostile = { ...other, kdf: { ...other.kdf, N: 2 ** 30, r: 1024 } };
    await writeFile(join(keys, '0'.repeat(64)), JSON.stringify(hostile));
    const refused = await runCliProcess(['snapshots'], env());
    assert.equal(refused.code, 0, refused.stderr);
  });

  it('reads regular key files only: a FIFO, a device and stdin named like key files neither block nor feed it', async () => {
    const odd = join(work.path, 'odd');
    const oddRepository = await Repository.init(fileRepo(odd), PASSPHRASE, { host: 'h', user: 'u' });
    const keys = join(odd, 'keys');
    const [own] = await readdir(keys);
    const ownSalt = Buffer.from(
      (JSON.parse(await readFile(join(keys, own as string), 'utf8')) as { kdf: { salt: string } }).kdf.salt,
      'base64',
    );
    // Sorted before the repository's own key, so the guess meets them first.
    assert.equal(spawnSync('mkfifo', [join(keys, '0'.repeat(32))]).status, 0, 'mkfifo');
    await symlink('/dev/zero', join(keys, `${'0'.repeat(31)}1`));
    await symlink('/dev/stdin', join(keys, `${'0'.repeat(31)}2`));
    const oddEnv = { CAIRN_REPOSITORY: odd, CAIRN_PASSWORD: PASSPHRASE };

    const data = join(work.path, 'odd-data');
    await mkdir(data);
    await writeFile(join(data, 'f'), 'content');
    // Through the bin, with the paths on stdin: the backup reads them (the guess did not), and nothing blocks.
    const backup = spawn(process.execPath, [CAIRN_BIN, '--json', 'backup', '--files-from', '-'], {
      env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '/tmp', ...oddEnv },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    // A bound on a hang, not a synchronisation: a blocked run is killed and fails below.
    const watchdog = setTimeout(() => backup.kill('SIGKILL'), 60_000);
    let stderr = '';
    backup.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    backup.stdout.resume();
    backup.stdin.end(`${data}\n`);
    const [code, signal] = await new Promise<[number | null, NodeJS.Signals | null]>((resolve) =>
      backup.on('close', (c, s) => resolve([c, s])),
    );
    clearTimeout(watchdog);
    assert.equal(signal, null, `not killed: ${stderr}`);
    assert.equal(code, 0, stderr);
    const listed = await runCliProcess(['snapshots'], oddEnv);
    assert.equal(listed.code, 0, listed.stderr);
    assert.equal((await oddRepository.listSnapshots()).snapshots.length, 1);
    // In this process only now: with the reads above broken, the FIFO would block the test itself.
    const input = earlyUnlockInput(['snapshots'], oddEnv);
    assert.ok(input, 'the guess passes over them to the passphrase key');
    assert.deepEqual(input.salt, ownSalt);
  });

  it('starts nothing for scrypt parameters no key file may name, though they are runnable', async () => {
    const bounded = join(work.path, 'bounded');
    const boundedRepository = await Repository.init(fileRepo(bounded), PASSPHRASE, { host: 'h', user: 'u' });
    const other = await wrapMasterKey(boundedRepository.masterKey(), PASSPHRASE, boundedRepository.id, { host: 'h', user: 'u' });
    // 256 MiB and p = 4: within what scrypt may run, beyond the key file's schema (r ≤ 32).
    await writeFile(join(bounded, 'keys', '0'.repeat(64)), JSON.stringify({ ...other, kdf: { ...other.kdf, N: 1024, r: 2048, p: 4 } }));
    assert.equal(earlyUnlockInput(['snapshots'], { CAIRN_REPOSITORY: bounded, CAIRN_PASSWORD: PASSPHRASE }), undefined);
  });
});
