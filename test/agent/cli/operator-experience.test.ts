import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFile, readdir, writeFile, mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { CairnError, type ErrorCode } from '../../../agent/core/errors.ts';
import { runCli, runCliText, lastOfType } from '../../helpers/cli.ts';
import { PASSPHRASE, tempDir } from '../../helpers/repo.ts';

/** Issue 19, operator experience: exit codes as restic's, init's passphrase warning, readable forget and verify text. */

const root = new URL('../../../', import.meta.url).pathname;

describe('exit codes (restic 0.17: 11 locked, 12 wrong password)', () => {
  it('docs/exit-codes.md pairs every Cairn.* code with the exit code the CLI uses', async () => {
    const text = await readFile(join(root, 'docs', 'exit-codes.md'), 'utf8');
    const rows = [...text.matchAll(/^\| (\d+) \| `(Cairn\.\w+)` \|/gm)].map((m) => [Number(m[1]), m[2] as ErrorCode] as const);
    assert.ok(rows.length >= 15, `the table has a row per code (found ${rows.length})`);
    for (const [exit, code] of rows) assert.equal(new CairnError(code, '').exitCode, exit, `${code} exits ${exit}`);
    assert.equal(new CairnError('Cairn.Locked', '').exitCode, 11);
    assert.equal(new CairnError('Cairn.WrongKey', '').exitCode, 12);
  });

  it('the README lists 11 as locked and 12 as wrong passphrase, and says they were swapped before', async () => {
    const readme = (await readFile(join(root, 'README.md'), 'utf8')).replace(/\s+/g, ' ');
    assert.match(readme, /10 repository not found · 11 locked · 12 wrong passphrase · 13/);
    assert.match(readme, /earlier versions of Cairn had them swapped/);
  });
});

describe('init, forget and verify say things readably', () => {
  let work: Awaited<ReturnType<typeof tempDir>>;
  before(async () => {
    work = await tempDir('operator');
  });
  after(async () => {
    await work.remove();
  });

  it('init warns about a passphrase under 12 characters and points to a recovery kit; 12 or more get no warning', async () => {
    const short = await runCli(['init'], { CAIRN_REPOSITORY: join(work.path, 'short'), CAIRN_PASSWORD: 'elevenchars' });
    assert.equal(short.code, 0, short.stderr);
    const warning = short.lines.find((l) => l.type === 'warning' && typeof l.passphraseLength === 'number');
    assert.ok(warning, short.stdout);
    assert.equal(warning.passphraseLength, 11);
    assert.match(String(warning.message), /^the passphrase is 11 characters long: .*use 12 or more/);
    assert.match(String(warning.message), /cairn key export --recovery-kit FILE/);
    assert.ok(lastOfType(short, 'init'), 'the repository is created all the same');

    const text = await runCliText(['init'], { CAIRN_REPOSITORY: join(work.path, 'short-text'), CAIRN_PASSWORD: 'short' });
    assert.equal(text.code, 0, text.stderr);
    assert.match(text.stderr, /^warning: the passphrase is 5 characters long/m);

    const long = await runCli(['init'], { CAIRN_REPOSITORY: join(work.path, 'long'), CAIRN_PASSWORD: 'twelve chars' });
    assert.equal(long.code, 0, long.stderr);
    assert.equal(
      long.lines.some((l) => l.type === 'warning'),
      false,
      'a passphrase of 12 characters is not warned about',
    );
  });

  it('forget --dry-run prints each group as words, not JSON', async () => {
    const src = join(work.path, 'src');
    await mkdir(src);
    await writeFile(join(src, 'f.txt'), 'x');
    const env = { CAIRN_REPOSITORY: join(work.path, 'forget'), CAIRN_PASSWORD: PASSPHRASE };
    assert.equal((await runCli(['init'], env)).code, 0);
    for (let i = 0; i < 2; i++) assert.equal((await runCli(['backup', src, '--host', 'db1'], env)).code, 0);
    const dry = await runCliText(['forget', '--keep-last', '1', '--dry-run'], env);
    assert.equal(dry.code, 0, dry.stderr);
    assert.match(dry.stdout, new RegExp(`^host db1, paths ${src}, plan \\(none\\): keep 1, would remove 1$`, 'm'));
    assert.doesNotMatch(dry.stdout, /[{}"]/, dry.stdout);
    assert.match(dry.stdout, /^ {2}would remove {2}[0-9a-f]{8} /m);
    const kept = await runCliText(['snapshots'], env);
    assert.match(kept.stdout, /2 snapshot\(s\)/, 'a dry run deletes nothing');
  });

  it('verify --read-data names a damaged frame once per message', async () => {
    const src = join(work.path, 'damaged-src');
    await mkdir(src);
    await writeFile(join(src, 'data.bin'), Buffer.alloc(200_000, 7));
    const repo = join(work.path, 'damaged');
    const env = { CAIRN_REPOSITORY: repo, CAIRN_PASSWORD: PASSPHRASE };
    assert.equal((await runCli(['init'], env)).code, 0);
    assert.equal((await runCli(['backup', src], env)).code, 0);
    const packs = (await readdir(join(repo, 'packs'), { recursive: true, withFileTypes: true })).filter((e) => e.isFile());
    assert.equal(packs.length, 1);
    const pack = join(packs[0]?.parentPath as string, packs[0]?.name as string);
    const bytes = await readFile(pack);
    const middle = Math.floor(bytes.length / 2);
    bytes[middle] = (bytes[middle] as number) ^ 0xff;
    await writeFile(pack, bytes);

    const text = await runCliText(['verify', '--read-data', '--no-lock'], env);
    assert.equal(text.code, 14, text.stderr);
    const lines = text.stdout.split('\n').filter((l) => /^(damaged|affected): /.test(l));
    assert.ok(lines.length >= 2, text.stdout);
    for (const line of lines) {
      assert.equal(line.match(/frame @\d+/g)?.length, 1, `the frame is named once: ${line}`);
      assert.match(line, /frame @\d+: frame failed authentication/);
    }
    const json = await runCli(['verify', '--read-data', '--no-lock'], env);
    const report = lastOfType(json, 'verify') as { problems: Array<{ problem: string }> };
    assert.equal(report.problems[0]?.problem.match(/pack [0-9a-f]{64}/g)?.length, 1, report.problems[0]?.problem);

    // A subset that reads nothing is a mistake, not a clean check: an empty value is refused like 0% (it passed, reading no data).
    for (const subset of ['', '0', '0%', 'ten']) {
      const refused = await runCliText(['verify', '--read-data-subset', subset, '--no-lock'], env);
      assert.equal(refused.code, 2, `--read-data-subset ${JSON.stringify(subset)}: ${refused.stdout}${refused.stderr}`);
      assert.match(refused.stderr, /invalid percentage/);
    }
    assert.equal(
      (await runCliText(['verify', '--read-data-subset', '100%', '--no-lock'], env)).code,
      14,
      'a whole subset finds the damage',
    );
  });

  it('an option given an empty value is refused, not taken as absent (a KMS init would otherwise make a passphrase repository)', async () => {
    const repo = join(work.path, 'empty-values');
    const env = { CAIRN_REPOSITORY: repo, CAIRN_PASSWORD: PASSPHRASE };
    const kms = await runCliText(['init', '--kms-key-id', ''], env);
    assert.equal(kms.code, 2, kms.stderr);
    assert.match(kms.stderr, /"" is not a KMS key ARN/);
    await assert.rejects(readdir(repo), { code: 'ENOENT' }, 'nothing was created');
    assert.equal((await runCli(['init'], env)).code, 0);
    const compression = await runCliText(['backup', '--compression', '', work.path], env);
    assert.equal(compression.code, 2, compression.stderr);
    assert.match(compression.stderr, /invalid compression ""/);
    const wait = await runCliText(['restore', 'latest', '--target', join(work.path, 'nowhere'), '--wait-for-snapshot', ''], env);
    assert.equal(wait.code, 2, wait.stderr);
    assert.match(wait.stderr, /invalid duration ""/);
  });
});
