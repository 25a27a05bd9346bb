import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { chown, readdir, readFile, rm, stat, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { CairnError } from '../../../agent/core/errors.ts';
import { base32Decode, base32Encode, createRecoveryKit, openRecoveryKit, parseRecoveryKit } from '../../../agent/core/recovery-kit.ts';
import { runCli, lastOfType, type CliResult } from '../../helpers/cli.ts';
import { startKmsStandIn, type KmsStandIn } from '../../helpers/kms-standin.ts';
import { PASSPHRASE, tempDir } from '../../helpers/repo.ts';
import { describeTree, makeRandomTree } from '../../helpers/tree.ts';

const FAST = { N: 1 << 10, r: 8, p: 1 };
const REPO_ID = 'ab'.repeat(32);

/** Replaces one data character of kit line `lineNo` by another valid one. */
function mistype(kit: string, lineNo: number): string {
  const label = `${String(lineNo).padStart(2, '0')}: `;
  return kit
    .split('\n')
    .map((line) => {
      if (!line.startsWith(label)) return line;
      const at = label.length + 5; // second group, first character
      const old = line.charAt(at);
      return line.slice(0, at) + (old === 'Q' ? 'R' : 'Q') + line.slice(at + 1);
    })
    .join('\n');
}

function errorOf(r: CliResult): { code: string; message: string; hint?: string } {
  const line = lastOfType(r, 'error');
  assert.ok(line, `an error line in ${r.stdout} ${r.stderr}`);
  return line as { code: string; message: string; hint?: string };
}

describe('recovery kit format', () => {
  it('base32 (Crockford) round-trips', () => {
    const data = randomBytes(115);
    const text = base32Encode(data);
    assert.deepEqual(base32Decode(text), data);
    assert.equal(base32Encode(Buffer.from('f')), 'CR', 'Crockford alphabet: 0x66 = 01100 110(00)');
    assert.deepEqual(base32Decode('CR'), Buffer.from('f'));
  });

  it('a kit parses back (also retyped in lower case with other spacing) and opens with its passphrase only', async () => {
    const master = randomBytes(32);
    const kit = await createRecoveryKit(master, 'recovery words', { repositoryId: REPO_ID, location: '/srv/repo' }, FAST);
    assert.match(kit, /^Repository: abab/m);
    assert.match(kit, /key import --recovery-kit/);
    assert.deepEqual(await openRecoveryKit(parseRecoveryKit(kit), 'recovery words', REPO_ID), master);

    const retyped = kit.replace(
      /^(\d\d: )(.*)$/gm,
      (_m, label: string, rest: string) => label + rest.toLowerCase().replace(/ /g, '  ').replace(/0/g, 'o'),
    );
    assert.deepEqual(await openRecoveryKit(parseRecoveryKit(retyped), 'recovery words', REPO_ID), master);

    await assert.rejects(
      openRecoveryKit(parseRecoveryKit(kit), 'other words', REPO_ID),
      (e: unknown) => e instanceof CairnError && e.code === 'Cairn.WrongKey' && /recovery passphrase does not open/.test(e.message),
    );
    await assert.rejects(
      openRecoveryKit(parseRecoveryKit(kit), 'recovery words', 'cd'.repeat(32)),
      (e: unknown) => e instanceof CairnError && e.code === 'Cairn.WrongKey' && /belongs to repository abababab/.test(e.message),
    );
  });

  it('names the mistyped line, a missing line, and a wrong whole-kit checksum', async () => {
    const kit = await createRecoveryKit(randomBytes(32), 'pw', { repositoryId: REPO_ID }, FAST);
    for (const n of [1, 3, 12]) {
      assert.throws(
        () => parseRecoveryKit(mistype(kit, n)),
        (e: unknown) =>
          e instanceof CairnError &&
          e.code === 'Cairn.Usage' &&
          e.message.includes(`line ${String(n).padStart(2, '0')} does not match its checksum`),
      );
    }
    const withoutLine5 = kit
      .split('\n')
      .filter((l) => !l.startsWith('05: '))
      .join('\n');
    assert.throws(() => parseRecoveryKit(withoutLine5), /line 06 is out of place: line 05 was expected/);
    const withoutLast = kit
      .split('\n')
      .filter((l) => !l.startsWith('12: '))
      .join('\n');
    assert.throws(() => parseRecoveryKit(withoutLast), /whole kit does not/);
    const badSum = kit.replace(/Kit checksum: (\S)/, (_m, c: string) => `Kit checksum: ${c === 'A' ? 'B' : 'A'}`);
    assert.throws(() => parseRecoveryKit(badSum), /whole kit does not/);
    assert.throws(
      () => parseRecoveryKit(kit.replace(/^03: (\S)/m, '03: U')),
      /line 03: "U" \(character 1\) is not a recovery-kit character/,
    );
    assert.throws(() => parseRecoveryKit('hello'), /not a cairn recovery kit/);
  });
});

describe('recovery kit through the CLI (KMS stand-in for the KMS key)', () => {
  let work: Awaited<ReturnType<typeof tempDir>>;
  let kms: KmsStandIn;
  before(async () => {
    work = await tempDir('kit');
    kms = await startKmsStandIn();
  });
  after(async () => {
    await kms.close();
    await work.remove();
  });

  it('export, remove every key file, then import from the kit alone and restore byte-identically; a mistyped kit or a wrong recovery passphrase is refused', async () => {
    const repo = join(work.path, 'repo');
    const src = join(work.path, 'src');
    const kitFile = join(work.path, 'kit.txt');
    await makeRandomTree(src, 99, { files: 25, maxFileSize: 150_000 });
    const keyA = kms.createKey();
    const withPass = { CAIRN_REPOSITORY: repo, CAIRN_PASSWORD: PASSPHRASE, ...kms.env() };
    const noPass = { CAIRN_REPOSITORY: repo, ...kms.env() };

    assert.equal((await runCli(['init'], withPass)).code, 0);
    const backedUp = await runCli(['backup', src], withPass);
    assert.equal(backedUp.code, 0, backedUp.stderr);
    assert.equal((await runCli(['key', 'add', '--kms-key-id', keyA], withPass)).code, 0);

    // What a SIGKILLed export leaves: its whole kit under a hidden temporary name. The next export
    // removes this user's old ones, not a fresh one (an export in flight) nor another user's.
    const leftover = (hex: string): string => join(work.path, `.cairn-kit-${hex}.tmp`);
    const hour = new Date(Date.now() - 3_600_000);
    for (const hex of ['0123456789ab', 'fedcba987654', 'aaaaaaaaaaaa']) await writeFile(leftover(hex), 'a killed export', { mode: 0o600 });
    await utimes(leftover('0123456789ab'), hour, hour);
    await utimes(leftover('aaaaaaaaaaaa'), hour, hour);
    const asRoot = process.getuid?.() === 0;
    if (asRoot) await chown(leftover('aaaaaaaaaaaa'), 65534, 65534);
    const exported = await runCli(['key', 'export', '--recovery-kit', kitFile], { ...withPass, CAIRN_RECOVERY_PASSWORD: 'kit passphrase' });
    assert.equal(exported.code, 0, exported.stderr);
    const left = (await readdir(work.path)).filter((name) => name.startsWith('.cairn-kit-')).sort();
    assert.deepEqual(left, asRoot ? ['.cairn-kit-aaaaaaaaaaaa.tmp', '.cairn-kit-fedcba987654.tmp'] : ['.cairn-kit-fedcba987654.tmp']);
    const warned = exported.lines.filter((line) => line.type === 'warning').map((line) => String(line.message));
    assert.ok(
      warned.some((message) => /removed 1 temporary recovery kit file .*was killed/.test(message)),
      warned.join('\n'),
    );
    for (const name of left) await rm(join(work.path, name));
    assert.equal((await stat(kitFile)).mode & 0o777, 0o600);
    const kitText = await readFile(kitFile, 'utf8');
    assert.match(kitText, /-----BEGIN CAIRN RECOVERY KEY-----/);
    assert.equal(lastOfType(exported, 'key.kit-exported')?.checksum, /Kit checksum: (.*)/.exec(kitText)?.[1]);

    const again = await runCli(['key', 'export', '--recovery-kit', kitFile], { ...withPass, CAIRN_RECOVERY_PASSWORD: 'other' });
    assert.equal(again.code, 17, 'never writes over a file');
    assert.equal(await readFile(kitFile, 'utf8'), kitText);
    // Written through a temporary file beside it (agent/core/durable-file.ts), which neither export leaves.
    assert.deepEqual((await readdir(work.path)).sort(), ['kit.txt', 'repo', 'src']);
    // A taken name in a directory where no temporary file can be made is still "already exists".
    const readOnlyDir = await runCli(['key', 'export', '--recovery-kit', '/proc/version'], { ...withPass, CAIRN_RECOVERY_PASSWORD: 'x' });
    assert.equal(readOnlyDir.code, 17, readOnlyDir.stdout);
    // The temporary name does not grow with the kit's: a 240-byte name works.
    const longName = join(work.path, `${'k'.repeat(236)}.txt`);
    const long = await runCli(['key', 'export', '--recovery-kit', longName], { ...withPass, CAIRN_RECOVERY_PASSWORD: 'kit passphrase' });
    assert.equal(long.code, 0, long.stdout);
    await rm(longName);

    // Remove every key file: the passphrase one (opened through KMS), then the KMS one.
    const keys = (lastOfType(await runCli(['key', 'list'], noPass), 'keys') as { keys: Array<{ id: string; kind: string }> }).keys;
    const passKey = keys.find((k) => k.kind === 'passphrase')?.id as string;
    const kmsKey = keys.find((k) => k.kind === 'kms')?.id as string;
    const removePass = await runCli(['key', 'remove', passKey, '--force-last-key'], noPass);
    assert.equal(removePass.code, 0, removePass.stderr);
    const lastRefused = await runCli(['key', 'remove', kmsKey], noPass);
    assert.equal(lastRefused.code, 2);
    assert.match(errorOf(lastRefused).message, /last key file.*recovery kit export/);
    const removeKms = await runCli(['key', 'remove', kmsKey, '--force-last-key'], noPass);
    assert.equal(removeKms.code, 0, removeKms.stderr);
    assert.deepEqual(await readdir(join(repo, 'keys')), []);
    const locked = await runCli(['snapshots'], withPass);
    assert.equal(locked.code, 12);
    assert.match(errorOf(locked).hint ?? '', /key import --recovery-kit/);

    // A kit with one mistyped character: refused, naming the line; nothing added.
    const typo = join(work.path, 'kit-typo.txt');
    await writeFile(typo, mistype(kitText, 4));
    const mistyped = await runCli(['key', 'import', '--recovery-kit', typo], {
      CAIRN_REPOSITORY: repo,
      CAIRN_RECOVERY_PASSWORD: 'kit passphrase',
      CAIRN_NEW_PASSWORD: 'new one',
    });
    assert.equal(mistyped.code, 2);
    assert.match(errorOf(mistyped).message, /line 04 does not match its checksum/);

    const wrongPass = await runCli(['key', 'import', '--recovery-kit', kitFile], {
      CAIRN_REPOSITORY: repo,
      CAIRN_RECOVERY_PASSWORD: 'not the kit passphrase',
      CAIRN_NEW_PASSWORD: 'new one',
    });
    assert.equal(wrongPass.code, 12);
    assert.match(errorOf(wrongPass).message, /recovery passphrase does not open/);
    assert.deepEqual(await readdir(join(repo, 'keys')), [], 'refused imports add no key');

    // The kit alone (no AWS credentials, no key file) brings the repository back.
    const imported = await runCli(['key', 'import', '--recovery-kit', kitFile], {
      CAIRN_REPOSITORY: repo,
      CAIRN_RECOVERY_PASSWORD: 'kit passphrase',
      CAIRN_NEW_PASSWORD: 'new one',
    });
    assert.equal(imported.code, 0, imported.stdout + imported.stderr);
    const target = join(work.path, 'restored');
    const restored = await runCli(['restore', 'latest', '--target', target], { CAIRN_REPOSITORY: repo, CAIRN_PASSWORD: 'new one' });
    assert.equal(restored.code, 0, restored.stderr);
    assert.deepEqual(await describeTree(target), await describeTree(src));
  });
});
