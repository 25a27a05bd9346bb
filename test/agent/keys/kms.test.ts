import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createServer } from 'node:net';
import type { AddressInfo } from 'node:net';
import { runCli, runCliProcess, lastOfType, type CliResult } from '../../helpers/cli.ts';
import { startKmsStandIn, type KmsStandIn } from '../../helpers/kms-standin.ts';
import { PASSPHRASE, tempDir } from '../../helpers/repo.ts';
import { describeTree, makeRandomTree } from '../../helpers/tree.ts';

/**
 * KMS-wrapped keys through the real CLI and the real @aws-sdk/client-kms,
 * pointed at a KMS STAND-IN (test/helpers/kms-standin.ts, not AWS KMS) with
 * AWS_ENDPOINT_URL_KMS. stdin is never a terminal here, so "no passphrase"
 * means no CAIRN_PASSWORD, no --password-file and no prompt.
 */

interface KeyRow {
  id: string;
  kind: string;
  keyArn?: string;
  current: boolean;
}

/** Every object under packs/ with its size and sha256. */
async function packDigests(repo: string): Promise<string[]> {
  const out: string[] = [];
  for (const dir of await readdir(join(repo, 'packs'))) {
    for (const name of await readdir(join(repo, 'packs', dir))) {
      const data = await readFile(join(repo, 'packs', dir, name));
      out.push(`${dir}/${name} ${data.length} ${createHash('sha256').update(data).digest('hex')}`);
    }
  }
  return out.sort();
}

function errorLine(r: CliResult): { code: string; message: string; hint?: string } {
  const line = lastOfType(r, 'error');
  assert.ok(line, `an error line in ${r.stdout} ${r.stderr}`);
  return line as { code: string; message: string; hint?: string };
}

async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

describe('KMS-wrapped repository keys (against a KMS stand-in)', () => {
  let work: Awaited<ReturnType<typeof tempDir>>;
  let kms: KmsStandIn;
  before(async () => {
    work = await tempDir('kms');
    kms = await startKmsStandIn();
  });
  after(async () => {
    await kms.close();
    await work.remove();
  });

  it('a KMS key opens the repository without any passphrase; rotating to another KMS key rewrites no pack, and the old key no longer opens it', async () => {
    const repo = join(work.path, 'rot-repo');
    const src = join(work.path, 'rot-src');
    await makeRandomTree(src, 41, { files: 30, maxFileSize: 200_000 });
    const withPass = { CAIRN_REPOSITORY: repo, CAIRN_PASSWORD: PASSPHRASE, ...kms.env() };
    const noPass = { CAIRN_REPOSITORY: repo, ...kms.env() };
    const keyA = kms.createKey();
    const keyB = kms.createKey();

    assert.equal((await runCli(['init'], withPass)).code, 0);
    const first = await runCli(['backup', src], withPass);
    assert.equal(first.code, 0, first.stderr);

    const addA = await runCli(['key', 'add', '--kms-key-id', keyA], withPass);
    assert.equal(addA.code, 0, addA.stderr);
    assert.equal(lastOfType(addA, 'key.added')?.keyArn, keyA);
    assert.equal(kms.count('Encrypt', keyA), 1);

    // No passphrase anywhere: the KMS key file opens it.
    const decryptsBefore = kms.count('Decrypt', keyA);
    const second = await runCli(['backup', src], noPass);
    assert.equal(second.code, 0, second.stderr);
    assert.ok(kms.count('Decrypt', keyA) > decryptsBefore, 'the backup unwrapped the key through KMS');
    const target = join(work.path, 'rot-restore-a');
    const restored = await runCli(['restore', 'latest', '--target', target], noPass);
    assert.equal(restored.code, 0, restored.stderr);
    assert.deepEqual(await describeTree(target), await describeTree(src));

    const listed = lastOfType(await runCli(['key', 'list'], noPass), 'keys') as { keys: KeyRow[] };
    assert.deepEqual(listed.keys.map((k) => k.kind).sort(), ['kms', 'passphrase']);
    const rowA = listed.keys.find((k) => k.kind === 'kms') as KeyRow;
    assert.equal(rowA.keyArn, keyA);
    assert.equal(rowA.current, true, 'opened with the KMS key');

    // Rotation: add B, remove A. Nothing under packs/ may change.
    const packsBefore = await packDigests(repo);
    assert.ok(packsBefore.length > 0);
    const addB = await runCli(['key', 'add', '--kms-key-id', keyB], noPass);
    assert.equal(addB.code, 0, addB.stderr);
    const removeA = await runCli(['key', 'remove', rowA.id], noPass);
    assert.equal(removeA.code, 0, removeA.stderr);
    assert.equal(lastOfType(removeA, 'key.removed')?.keyArn, keyA);

    const afterRotation = lastOfType(await runCli(['key', 'list'], noPass), 'keys') as { keys: KeyRow[] };
    assert.deepEqual(
      afterRotation.keys.filter((k) => k.kind === 'kms').map((k) => k.keyArn),
      [keyB],
    );
    assert.ok(afterRotation.keys.find((k) => k.keyArn === keyB)?.current, 'B opened it');
    const targetB = join(work.path, 'rot-restore-b');
    const restoredB = await runCli(['restore', 'latest', '--target', targetB], noPass);
    assert.equal(restoredB.code, 0, restoredB.stderr);
    assert.deepEqual(await describeTree(targetB), await describeTree(src));
    assert.deepEqual(await packDigests(repo), packsBefore, 'rotation rewrote no pack');

    // The stand-in still accepts A; what makes A useless is that no key file for it exists.
    // With B refused, nothing opens the repository without a passphrase, and A is never tried.
    kms.deny(keyB);
    const aDecrypts = kms.count('Decrypt', keyA);
    const refused = await runCli(['snapshots'], noPass);
    assert.equal(refused.code, 12, refused.stderr);
    const error = errorLine(refused);
    assert.equal(error.code, 'Cairn.WrongKey');
    assert.match(error.message, new RegExp(keyB.replace(/[/.]/g, '\\$&')));
    assert.doesNotMatch(error.message, new RegExp(keyA.replace(/[/.]/g, '\\$&')));
    assert.equal(kms.count('Decrypt', keyA), aDecrypts, 'no Decrypt with the removed key A');
    // The passphrase key still opens it.
    assert.equal((await runCli(['snapshots'], withPass)).code, 0);
  });

  it('init --kms-key-id says restoring needs KMS; AccessDenied, a disabled key, a wrong encryption context and unreachable KMS name the key ARN', async () => {
    const repo = join(work.path, 'err-repo');
    const src = join(work.path, 'err-src');
    await makeRandomTree(src, 7, { files: 8, maxFileSize: 50_000 });
    const keyC = kms.createKey();
    const env = { CAIRN_REPOSITORY: repo, ...kms.env() };

    const init = await runCli(['init', '--kms-key-id', keyC], env);
    assert.equal(init.code, 0, init.stderr);
    assert.equal(lastOfType(init, 'init')?.kmsOnly, true);
    const warning = lastOfType(init, 'warning') as { message: string; kmsOnly: boolean } | undefined;
    assert.equal(warning?.kmsOnly, true);
    assert.match(warning.message, /wrapped only by KMS key arn:aws:kms:.*restoring needs AWS credentials allowed kms:Decrypt/s);
    assert.match(warning.message, /cairn key export --recovery-kit FILE/);
    assert.deepEqual(await readdir(join(repo, 'keys')).then((k) => k.length), 1, 'only the KMS key file');
    const backedUp = await runCli(['backup', src], env);
    assert.equal(backedUp.code, 0, backedUp.stderr);

    const escaped = new RegExp(keyC.replace(/[/.]/g, '\\$&'));
    kms.disable(keyC);
    const disabled = await runCli(['snapshots'], env);
    assert.equal(disabled.code, 12);
    assert.match(errorLine(disabled).message, escaped);
    assert.match(errorLine(disabled).message, /disabled/);
    kms.enable(keyC);
    assert.equal((await runCli(['snapshots'], env)).code, 0, 'enabled again, it opens');

    // A KMS key file copied into another repository: Decrypt runs with that repository's context.
    const other = join(work.path, 'err-other');
    assert.equal((await runCli(['init'], { CAIRN_REPOSITORY: other, CAIRN_PASSWORD: PASSPHRASE })).code, 0);
    const [kmsFile] = await readdir(join(repo, 'keys'));
    await writeFile(join(other, 'keys', kmsFile as string), await readFile(join(repo, 'keys', kmsFile as string)));
    const foreign = await runCli(['snapshots'], { CAIRN_REPOSITORY: other, ...kms.env() });
    assert.equal(foreign.code, 12);
    const foreignError = errorLine(foreign);
    assert.match(foreignError.message, escaped);
    assert.match(foreignError.message, /InvalidCiphertextException/);
    assert.match(foreignError.hint ?? '', /encryption context/);

    const endpoint = `http://127.0.0.1:${await closedPort()}`;
    // A subprocess: the agent keeps one KMS client per region for its whole process, made with the first endpoint.
    const unreachable = await runCliProcess(['snapshots'], { ...env, AWS_ENDPOINT_URL_KMS: endpoint });
    assert.equal(unreachable.code, 16, unreachable.stdout);
    assert.match(errorLine(unreachable).message, escaped);
    assert.match(errorLine(unreachable).message, /could not be reached/);

    kms.deny(keyC);
    const denied = await runCli(['restore', 'latest', '--target', join(work.path, 'err-restore')], env);
    assert.equal(denied.code, 12);
    const deniedError = errorLine(denied);
    assert.equal(deniedError.code, 'Cairn.WrongKey');
    assert.match(deniedError.message, escaped);
    assert.match(deniedError.message, /AccessDeniedException/);
    assert.match(deniedError.hint ?? '', /allow kms:Decrypt on arn:aws:kms:/);
  });

  it('removing the last passphrase beside a KMS key is refused without --force-last-key; a wrong passphrase is not hidden by KMS', async () => {
    const repo = join(work.path, 'last-repo');
    const keyD = kms.createKey();
    const withPass = { CAIRN_REPOSITORY: repo, CAIRN_PASSWORD: PASSPHRASE, ...kms.env() };
    const noPass = { CAIRN_REPOSITORY: repo, ...kms.env() };
    // init with a KMS key and a passphrase given: both wrappings, no KMS-only warning.
    const init = await runCli(['init', '--kms-key-id', keyD], withPass);
    assert.equal(init.code, 0, init.stderr);
    assert.equal(lastOfType(init, 'init')?.kmsOnly, false);
    assert.equal(lastOfType(init, 'warning'), undefined);
    const keys = (lastOfType(await runCli(['key', 'list'], noPass), 'keys') as { keys: KeyRow[] }).keys;
    assert.deepEqual(keys.map((k) => k.kind).sort(), ['kms', 'passphrase']);
    const passphraseKey = keys.find((k) => k.kind === 'passphrase') as KeyRow;

    const refused = await runCli(['key', 'remove', passphraseKey.id], noPass);
    assert.equal(refused.code, 2);
    assert.match(errorLine(refused).message, /last passphrase key/);
    assert.match(errorLine(refused).hint ?? '', /--recovery-kit/);
    assert.match(errorLine(refused).hint ?? '', /--force-last-key/);

    const wrong = await runCli(['snapshots'], { ...noPass, CAIRN_PASSWORD: 'not the passphrase' });
    assert.equal(wrong.code, 12);
    assert.match(errorLine(wrong).message, /passphrase does not open/);

    const forced = await runCli(['key', 'remove', passphraseKey.id, '--force-last-key'], noPass);
    assert.equal(forced.code, 0, forced.stderr);
    const onlyKms = await runCli(['snapshots'], withPass);
    assert.equal(onlyKms.code, 12, 'a passphrase is given, so the passphrase keys are used, and there are none');
    assert.match(errorLine(onlyKms).message, /no passphrase key/);
  });
});
