import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import type { Repository } from '../../../agent/core/repository.ts';
import { runCli } from '../../helpers/cli.ts';
import { tempDir, initSmallRepo, fileRepo, restoreTo, PASSPHRASE } from '../../helpers/repo.ts';
import { craftSnapshot, CONTENT, META } from './craft.ts';

describe('restore --ignore-errors past a file whose directory cannot be created', () => {
  let work: Awaited<ReturnType<typeof tempDir>>;
  let repo: Repository;
  before(async () => {
    work = await tempDir('ignore-errors');
    repo = await initSmallRepo(fileRepo(join(work.path, 'repo')));
  });
  after(async () => {
    await work.remove();
  });

  it('a restore that fails after writing part of the snapshot says so, and how to go on', async () => {
    const id = await craftSnapshot(repo, async (t, f) => [
      { ...META, name: 'a-first', type: 'dir', subtree: await t([f]) },
      { ...META, name: 'd'.repeat(256), type: 'dir', subtree: await t([{ ...f, name: 'inside' }]) },
    ]);
    const target = join(work.path, 'target-partial');
    const env = { CAIRN_REPOSITORY: join(work.path, 'repo'), CAIRN_PASSWORD: PASSPHRASE };
    const failed = await runCli(['restore', id, '--target', target], env);
    assert.notEqual(failed.code, 0);
    assert.match(failed.stderr, /name too long/);
    assert.match(
      failed.stderr,
      /now holds part of the snapshot, restored before the failure: once the cause is fixed, run the restore again with --force/,
    );
    assert.deepEqual(await readdir(target), ['a-first'], 'the directory made before the failure is there');
  });

  it('skips the file (larger than the read-ahead) and restores the rest, instead of waiting forever for memory it never frees', async () => {
    // 40 MiB of content from one 4 MiB piece: more than the restore's read-ahead (3 × 8 MiB in the test helper).
    const big = randomBytes(4 << 20);
    const id = await craftSnapshot(repo, async (t, f, _as, addData) => {
      const piece = await addData(big);
      const large = { ...META, name: 'large', type: 'file' as const, size: big.length * 10, content: new Array<string>(10).fill(piece) };
      // A directory name no Linux filesystem takes (256 bytes): its mkdir fails, as a vfat target fails on 'a:b'.
      return [
        { ...META, name: 'd'.repeat(256), type: 'dir', subtree: await t([large]) },
        { ...f, name: 'z-after' },
      ];
    });
    const target = join(work.path, 'target');
    const { result } = await restoreTo(repo, id, target, { ignoreErrors: true });
    assert.ok(result.errors.length >= 1);
    assert.ok(
      result.errors.every((e) => /name too long/.test(e.error)),
      JSON.stringify(result.errors),
    );
    assert.deepEqual(await readFile(join(target, 'z-after')), CONTENT);
  });

  it('a hard-link group whose first member cannot be written comes back through its next member', async () => {
    const id = await craftSnapshot(repo, async (t, f) => [
      { ...META, name: 'd'.repeat(256), type: 'dir', subtree: await t([{ ...f, name: 'first', hardlink: '1:2' }]) },
      {
        ...META,
        name: 'ok',
        type: 'dir',
        subtree: await t([
          { ...f, name: 'second', hardlink: '1:2' },
          { ...f, name: 'third', hardlink: '1:2' },
        ]),
      },
    ]);
    const target = join(work.path, 'target-links');
    const { result } = await restoreTo(repo, id, target, { ignoreErrors: true });
    assert.equal(result.errors.length, 2, JSON.stringify(result.errors)); // the directory and its one member
    assert.deepEqual(await readFile(join(target, 'ok', 'second')), CONTENT);
    assert.deepEqual(await readFile(join(target, 'ok', 'third')), CONTENT);
  });

  it(
    'a hard-link group whose small first member has a missing piece fails its other members instead of leaving them waiting',
    { timeout: 60_000 },
    async () => {
      const id = await craftSnapshot(repo, async (t, f) => [
        { ...META, name: 'a', type: 'dir', subtree: await t([{ ...f, name: 'first', hardlink: '7:8', content: ['ab'.repeat(32)] }]) },
        {
          ...META,
          name: 'b',
          type: 'dir',
          subtree: await t([
            { ...f, name: 'second', hardlink: '7:8' },
            { ...f, name: 'third', hardlink: '7:8' },
            { ...f, name: 'other' },
          ]),
        },
      ]);
      const target = join(work.path, 'target-missing-first');
      const { result } = await restoreTo(repo, id, target, { ignoreErrors: true });
      assert.deepEqual(result.errors.map((e) => e.path).sort(), ['a/first', 'b/second', 'b/third'], JSON.stringify(result.errors));
      assert.deepEqual(await readFile(join(target, 'b', 'other')), CONTENT);
    },
  );

  it(
    'a hard-link group whose large first member fails partway leaves no member behind, empty or cut short',
    { timeout: 60_000 },
    async () => {
      // Larger than the small-file size: written here through an open file, its first piece before the missing one.
      const head = randomBytes(300 << 10);
      const id = await craftSnapshot(repo, async (t, f, _as, addData) => {
        const piece = await addData(head);
        const first = { ...f, name: 'first', hardlink: '9:9', size: head.length + 64, content: [piece, 'cd'.repeat(32)] };
        return [
          { ...META, name: 'a', type: 'dir', subtree: await t([first]) },
          {
            ...META,
            name: 'b',
            type: 'dir',
            subtree: await t([
              { ...f, name: 'second', hardlink: '9:9' },
              { ...f, name: 'third', hardlink: '9:9' },
              { ...f, name: 'other' },
            ]),
          },
        ];
      });
      const target = join(work.path, 'target-large-first');
      const { result } = await restoreTo(repo, id, target, { ignoreErrors: true });
      assert.deepEqual(result.errors.map((e) => e.path).sort(), ['a/first', 'b/second', 'b/third'], JSON.stringify(result.errors));
      assert.deepEqual((await readdir(join(target, 'b'))).sort(), ['other']);
      assert.deepEqual(await readdir(join(target, 'a')), []);
      assert.deepEqual(await readFile(join(target, 'b', 'other')), CONTENT);
      // The summary counts what was restored: not the 300 KiB written of the first member before it failed.
      assert.deepEqual({ files: result.files, bytes: result.bytes }, { files: 1, bytes: CONTENT.length });
    },
  );
});
