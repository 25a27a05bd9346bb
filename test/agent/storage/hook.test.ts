import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmod, readFile, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { runCli, lastOfType } from '../../helpers/cli.ts';
import { tempDir } from '../../helpers/repo.ts';
import { describeTree, makeRandomTree } from '../../helpers/tree.ts';
import { FileStorage } from '../../../agent/storage/file.ts';
import { HookStorage } from '../../../agent/storage/hook.ts';
import { storageConformance } from './conformance.ts';

/** A transform hook: XORs every byte with 0x5a (its own inverse); can be told to fail on writes of some objects. */
const XOR_HOOK = `
const chunks = [];
process.stdin.on('data', (c) => chunks.push(c));
process.stdin.on('end', () => {
  const op = process.argv[process.argv.indexOf('--operation') + 1];
  const fail = process.env.XOR_FAIL_WRITE;
  if (op === 'write' && fail && process.env.CAIRN_OBJECT.startsWith(fail)) {
    process.stderr.write('vault says: quota exceeded for ' + process.env.CAIRN_OBJECT + '\\n');
    process.exit(3);
  }
  const b = Buffer.concat(chunks);
  for (let i = 0; i < b.length; i++) b[i] ^= 0x5a;
  process.stderr.write('xor ' + op + ' ' + process.env.CAIRN_OBJECT + '\\n');
  process.stdout.write(b);
});
`;

const PACK_MAGIC = Buffer.from('CPK\x01', 'latin1');

async function packFiles(repo: string): Promise<string[]> {
  const out: string[] = [];
  for (const dir of await readdir(join(repo, 'packs')))
    for (const name of await readdir(join(repo, 'packs', dir))) out.push(join(repo, 'packs', dir, name));
  return out;
}

function xor(data: Buffer): Buffer {
  const out = Buffer.from(data);
  for (let i = 0; i < out.length; i++) out[i] = (out[i] as number) ^ 0x5a;
  return out;
}

/**
 * A cheap transform for the conformance suite's thousands of objects (one shell and one tr per object,
 * not a node process): rot13 on the bytes, its own inverse. The appended `--operation X` goes to `:`.
 */
const ROT13_HOOK = "LC_ALL=C tr 'A-Za-z' 'N-ZA-Mn-za-m'; :";

// The hook's list passes straight through to the file backend (whose own suite lists 1100 keys): 150 here.
storageConformance(
  'the storage hook (HookStorage with a rot13 hook over the file backend)',
  async () => {
    const dir = await tempDir('hook-conformance');
    const storage = new HookStorage(new FileStorage(dir.path), { command: ROT13_HOOK });
    return {
      storage,
      teardown: async () => {
        // The stored bytes are the hook's output, not what was put.
        assert.equal((await readFile(join(dir.path, 'exclusive', 'new'))).toString(), 'svefg');
        await dir.remove();
      },
    };
  },
  { pagedKeys: 150 },
);

describe('storage hook (--storage-hook)', () => {
  let work: Awaited<ReturnType<typeof tempDir>>;
  let hookCmd: string;
  let source: string;
  const env = (extra: Record<string, string> = {}): Record<string, string> => ({ CAIRN_PASSWORD: 'hook test passphrase', ...extra });

  before(async () => {
    work = await tempDir('hook');
    const script = join(work.path, 'xor-hook.cjs');
    await writeFile(script, XOR_HOOK);
    hookCmd = `${JSON.stringify(process.execPath)} ${JSON.stringify(script)}`;
    source = join(work.path, 'src');
    await makeRandomTree(source, 7, { files: 30, maxFileSize: 200_000 });
  });
  after(async () => {
    await work.remove();
  });

  it('round-trips a backup through an XOR hook, storing transformed objects and a plain config that names the hook', async () => {
    const repo = join(work.path, 'xor-repo');
    const plainRepo = join(work.path, 'plain-repo');
    const withHook = env({ CAIRN_STORAGE_HOOK: hookCmd });
    assert.equal((await runCli(['-r', repo, 'init', '--compression', 'none'], withHook)).code, 0);
    const config = JSON.parse(await readFile(join(repo, 'config'), 'utf8')) as Record<string, unknown>;
    assert.equal(config.transform, 'hook');
    const backup = await runCli(['-r', repo, 'backup', source], withHook);
    assert.equal(backup.code, 0, backup.stderr);
    assert.match(backup.stderr, /^storage-hook: xor write packs\//m, "the hook's stderr is forwarded, prefixed");

    // What a hookless repository stores: packs begin with the pack magic; behind the hook they are XORed.
    assert.equal((await runCli(['-r', plainRepo, 'init', '--compression', 'none'], env())).code, 0);
    assert.equal((await runCli(['-r', plainRepo, 'backup', source], env())).code, 0);
    const plainPack = await readFile((await packFiles(plainRepo))[0] as string);
    assert.ok(plainPack.subarray(0, 4).equals(PACK_MAGIC));
    const packs = await packFiles(repo);
    assert.ok(packs.length > 0);
    for (const pack of packs) {
      const stored = await readFile(pack);
      assert.ok(!stored.subarray(0, 4).equals(PACK_MAGIC), 'the stored pack is not what cairn wrote');
      assert.ok(xor(stored).subarray(0, 4).equals(PACK_MAGIC), "the stored pack is the hook's output");
    }
    const keyDir = join(repo, 'keys');
    const keyFile = await readFile(join(keyDir, (await readdir(keyDir))[0] as string));
    assert.throws(() => JSON.parse(keyFile.toString('utf8')) as unknown, 'key files pass through the hook too');
    assert.equal((JSON.parse(xor(keyFile).toString('utf8')) as { kdf?: unknown }) !== null, true);

    const target = join(work.path, 'xor-restored');
    const restore = await runCli(['-r', repo, 'restore', 'latest', '--target', target], withHook);
    assert.equal(restore.code, 0, restore.stderr);
    assert.deepEqual(await describeTree(target), await describeTree(source));
    const verify = await runCli(['-r', repo, 'verify', '--read-data'], withHook);
    assert.equal(verify.code, 0, verify.stderr);
    assert.equal(lastOfType(verify, 'verify')?.ok, true);
  });

  it('refuses a hooked repository without the hook, and a plain one with a hook', async () => {
    const repo = join(work.path, 'xor-repo');
    const without = await runCli(['-r', repo, 'snapshots'], env());
    assert.equal(without.code, 2);
    assert.match(without.stderr, /needs --storage-hook/);
    const plain = await runCli(['-r', join(work.path, 'plain-repo'), 'snapshots'], env({ CAIRN_STORAGE_HOOK: hookCmd }));
    assert.equal(plain.code, 2);
    assert.match(plain.stderr, /created without a storage hook/);
  });

  it("fails a backup whose hook exits non-zero, shows the hook's stderr, and commits no snapshot", async () => {
    const repo = join(work.path, 'xor-repo');
    const withHook = env({ CAIRN_STORAGE_HOOK: hookCmd });
    const before = lastOfType(await runCli(['-r', repo, 'snapshots'], withHook), 'snapshots')?.snapshots as unknown[];
    assert.equal(before.length, 1);
    await writeFile(join(source, 'new-file.bin'), Buffer.alloc(300_000, 1));
    const failed = await runCli(['-r', repo, 'backup', source], env({ CAIRN_STORAGE_HOOK: hookCmd, XOR_FAIL_WRITE: 'packs/' }));
    assert.equal(failed.code, 16, failed.stderr);
    const error = lastOfType(failed, 'error');
    assert.equal(error?.code, 'Cairn.Storage');
    assert.match(String(error?.message), /storage hook .*xor-hook\.cjs.* exited with code 3 on --operation write of packs\//);
    assert.match(String(error?.message), /vault says: quota exceeded/);
    assert.match(failed.stderr, /storage-hook: vault says: quota exceeded/);
    const after = lastOfType(await runCli(['-r', repo, 'snapshots'], withHook), 'snapshots')?.snapshots as unknown[];
    assert.equal(after.length, before.length, 'no snapshot was committed');
  });

  it('round-trips through an openssl encryption hook', async (t) => {
    if (spawnSync('openssl', ['version']).status !== 0) {
      t.skip('openssl is not installed (apt-get install openssl)');
      return;
    }
    const script = join(work.path, 'openssl-hook.sh');
    await writeFile(
      script,
      [
        '#!/bin/sh',
        'case "$2" in',
        '  write) exec openssl enc -aes-256-cbc -pbkdf2 -salt -pass env:HOOK_KEY ;;',
        '  read) exec openssl enc -d -aes-256-cbc -pbkdf2 -pass env:HOOK_KEY ;;',
        '  *) echo "unknown operation $2" >&2; exit 2 ;;',
        'esac',
        '',
      ].join('\n'),
    );
    await chmod(script, 0o755);
    const repo = join(work.path, 'openssl-repo');
    const withHook = env({ CAIRN_STORAGE_HOOK: script, HOOK_KEY: 'hook secret' });
    assert.equal((await runCli(['-r', repo, 'init'], withHook)).code, 0);
    const backup = await runCli(['-r', repo, 'backup', source], withHook);
    assert.equal(backup.code, 0, backup.stderr);
    for (const pack of await packFiles(repo)) assert.equal((await readFile(pack)).subarray(0, 8).toString('latin1'), 'Salted__');
    const target = join(work.path, 'openssl-restored');
    const restore = await runCli(['-r', repo, 'restore', 'latest', '--target', target], withHook);
    assert.equal(restore.code, 0, restore.stderr);
    assert.deepEqual(await describeTree(target), await describeTree(source));
    const wrongKey = await runCli(['-r', repo, 'snapshots'], { ...withHook, HOOK_KEY: 'not the key' });
    assert.notEqual(wrongKey.code, 0, 'a hook that cannot decrypt fails the command');
  });

  it('serves ranged reads of one object from one hook run, and stat gives the original size', async () => {
    const lines: string[] = [];
    const inner = new FileStorage(join(work.path, 'unit-repo'));
    const storage = new HookStorage(inner, { command: hookCmd, onStderr: (line) => lines.push(line) });
    const data = Buffer.from(Array.from({ length: 100_000 }, (_, i) => i % 251));
    await storage.put('packs/ab/abcdef', data);
    assert.ok(xor(await readFile(join(work.path, 'unit-repo', 'packs/ab/abcdef'))).equals(data));
    const reads = await Promise.all([0, 10, 5000, 99_990].map((offset) => storage.getRange('packs/ab/abcdef', offset, 10)));
    for (const [i, offset] of [0, 10, 5000, 99_990].entries()) assert.ok((reads[i] as Buffer).equals(data.subarray(offset, offset + 10)));
    assert.ok((await storage.getRange('packs/ab/abcdef', 50_000, 100)).equals(data.subarray(50_000, 50_100)));
    assert.equal(lines.filter((l) => l.startsWith('xor read')).length, 1, 'one hook run for five ranged reads');
    assert.equal((await storage.stat('packs/ab/abcdef'))?.size, 100_000);
    await assert.rejects(storage.getRange('packs/ab/abcdef', 99_995, 10), /short read/);
    assert.equal(await storage.stat('packs/ab/missing'), undefined);
  });

  it('bounds the cache: objects beyond its budget run the hook again', async () => {
    const lines: string[] = [];
    const storage = new HookStorage(new FileStorage(join(work.path, 'unit-repo-2')), {
      command: hookCmd,
      cacheBytes: 150_000,
      onStderr: (line) => lines.push(line),
    });
    for (const name of ['a', 'b', 'c']) await storage.put(`packs/00/${name}`, Buffer.alloc(60_000, name.charCodeAt(0)));
    for (const name of ['a', 'b', 'c']) await storage.getRange(`packs/00/${name}`, 0, 1);
    const before = lines.filter((l) => l.startsWith('xor read')).length;
    assert.equal(before, 3);
    assert.equal((await storage.getRange('packs/00/c', 1, 1))[0], 'c'.charCodeAt(0)); // still cached
    assert.equal(lines.filter((l) => l.startsWith('xor read')).length, 3);
    await storage.getRange('packs/00/a', 1, 1); // evicted: 3 × 60 kB do not fit 150 kB
    assert.equal(lines.filter((l) => l.startsWith('xor read')).length, 4);
  });
});
