import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdir, readdir, readFile, readlink } from 'node:fs/promises';
import { join } from 'node:path';
import type { Repository } from '../../../agent/core/repository.ts';
import fc from 'fast-check';
import { entryProblem, nameFields, nameProblem, targetFields, type TreeEntry } from '../../../agent/core/tree.ts';
import { tempDir, initSmallRepo, fileRepo, restoreTo } from '../../helpers/repo.ts';
import { craftSnapshot, CONTENT, META, type AddTree } from './craft.ts';

const b64 = (bytes: Buffer | string): string => Buffer.from(bytes).toString('base64');
const FF = Buffer.from([0xff]);

/** A crafted tree (written with the repository key) whose names, as bytes, a restore must refuse. */
describe('crafted byte names: a restore refuses what the name rule refuses, by the bytes', () => {
  let work: Awaited<ReturnType<typeof tempDir>>;
  let repo: Repository;
  let outside: string;
  before(async () => {
    work = await tempDir('hostile-names');
    repo = await initSmallRepo(fileRepo(join(work.path, 'repo')));
    outside = join(work.path, 'outside');
    await mkdir(outside);
  });
  after(async () => {
    await work.remove();
  });

  let n = 0;
  const target = (): string => join(work.path, `target-${++n}`);

  const refused: Array<[string, (t: AddTree, f: TreeEntry) => Promise<TreeEntry[]>]> = [
    ['nameBytes decoding to ".."', async (_t, f) => [{ ...f, name: '\ufffd', nameBytes: b64('..') }]],
    [
      'nameBytes decoding to "." (a directory)',
      async (t, f) => [{ ...META, name: 'd', nameBytes: b64('.'), type: 'dir', subtree: await t([f]) }],
    ],
    [
      'nameBytes holding a "/"',
      async (_t, f) => [{ ...f, name: '\ufffd/escape', nameBytes: b64(Buffer.concat([FF, Buffer.from('/../escape')])) }],
    ],
    ['nameBytes holding a NUL', async (_t, f) => [{ ...f, name: '\ufffd\0', nameBytes: b64(Buffer.from([0xff, 0])) }]],
    ['empty nameBytes', async (_t, f) => [{ ...f, name: 'x', nameBytes: '' }]],
    [
      'a name that disagrees with its nameBytes',
      async (_t, f) => [{ ...f, name: '../outside/escape', nameBytes: b64(Buffer.from([0x61, 0xff])) }],
    ],
    [
      'nameBytes that are valid UTF-8 (the name must then be the name itself)',
      async (_t, f) => [{ ...f, name: 'other', nameBytes: b64('a') }],
    ],
    [
      'two entries whose bytes are equal though their names differ',
      async (_t, f) => [
        { ...f, name: '\ufffd', nameBytes: b64(FF) },
        { ...f, name: 'different display', nameBytes: b64(FF) },
      ],
    ],
    [
      'two entries with equal bytes and equal display names',
      async (_t, f) => [
        { ...f, name: '\ufffd', nameBytes: b64(FF) },
        { ...f, name: '\ufffd', nameBytes: b64(FF) },
      ],
    ],
    [
      'a plain name and a redundant nameBytes for the same bytes',
      async (_t, f) => [
        { ...f, name: 'same' },
        { ...META, name: 'same', nameBytes: b64('same'), type: 'symlink', target: outside },
      ],
    ],
    [
      'a symlink target that disagrees with its targetBytes',
      async () => [
        { ...META, name: 'link', type: 'symlink', target: 'harmless', targetBytes: b64(Buffer.concat([Buffer.from(outside), FF])) },
      ],
    ],
  ];

  for (const [label, build] of refused) {
    it(`refuses ${label}, and --ignore-errors writes nothing for it`, async () => {
      const id = await craftSnapshot(repo, build);
      await assert.rejects(restoreTo(repo, id, target()), /refusing to write it/);
      const into = target();
      const { result } = await restoreTo(repo, id, into, { ignoreErrors: true });
      assert.ok(result.errors.length >= 1, 'the refusal is reported');
      assert.deepEqual(await readdir(outside), [], 'nothing appeared outside the target');
      for (const name of await readdir(into, { encoding: 'buffer' })) assert.ok(!name.includes(0x2f));
    });
  }

  it('keeps two entries whose display names are equal but whose bytes differ (both are real names)', async () => {
    const id = await craftSnapshot(repo, async (_t, f) => [
      { ...f, name: '\ufffd', nameBytes: b64(Buffer.from([0xfe])) },
      { ...f, name: '\ufffd', nameBytes: b64(FF) },
    ]);
    const into = target();
    await restoreTo(repo, id, into);
    const names = (await readdir(into, { encoding: 'buffer' })).map((x) => x.toString('hex')).sort();
    assert.deepEqual(names, ['fe', 'ff']);
  });

  it('restores a targetBytes symlink pointing outside as a link with exactly those bytes, never following it', async () => {
    const pointing = Buffer.concat([Buffer.from(`${outside}/`), FF]);
    const id = await craftSnapshot(repo, async () => [
      { ...META, name: 'link', type: 'symlink', target: pointing.toString('utf8'), targetBytes: b64(pointing) },
    ]);
    const into = target();
    const { result } = await restoreTo(repo, id, into);
    assert.equal(result.symlinks, 1);
    assert.deepEqual(await readlink(Buffer.from(join(into, 'link')), { encoding: 'buffer' }), pointing);
    assert.deepEqual(await readdir(outside), []);
  });

  it('restores a 255-byte name; a crafted 256-byte name (which no filesystem gave) is a clean, named error', async () => {
    const long255 = Buffer.concat([Buffer.alloc(254, 0x61), FF]);
    const long256 = Buffer.concat([Buffer.alloc(255, 0x62), FF]);
    const id = await craftSnapshot(repo, async (t, f) => [
      { ...f, name: long255.toString('utf8'), nameBytes: b64(long255) },
      { ...f, name: long256.toString('utf8'), nameBytes: b64(long256) },
      { ...META, name: 'd'.repeat(256), type: 'dir', subtree: await t([{ ...f, name: 'inside' }]) },
    ]);
    await assert.rejects(restoreTo(repo, id, target()), (error: Error & { code?: string }) => {
      assert.match(error.message, /cannot restore [bd]{20}.*name too long/s);
      assert.equal(error.code, 'Cairn.Failure');
      return true;
    });
    const into = target();
    const { result } = await restoreTo(repo, id, into, { ignoreErrors: true });
    // The long directory, the file inside it (its parent cannot exist) and the long file.
    assert.equal(result.errors.length, 3, JSON.stringify(result.errors));
    assert.ok(result.errors.every((e) => /name too long/.test(e.error)));
    assert.deepEqual(await readFile(Buffer.concat([Buffer.from(`${into}/`), long255])), CONTENT);
  });

  it('refuses a crafted loop of trees (a pack claiming a tree id for bytes that name it), even with --ignore-errors', async () => {
    const id = await craftSnapshot(repo, async (_t, f, addTreeAs) => {
      const loop = randomBytes(32);
      await addTreeAs(loop, [{ ...META, name: 'loop', type: 'dir', subtree: loop.toString('hex') }, f]);
      return [{ ...META, name: 'loop', type: 'dir', subtree: loop.toString('hex') }];
    });
    await assert.rejects(restoreTo(repo, id, target()), /holds itself|are not that piece/);
    const into = target();
    const { result } = await restoreTo(repo, id, into, { ignoreErrors: true });
    assert.equal(result.errors.length, 1, JSON.stringify(result.errors));
    // The crafted tree's bytes are not the piece its id names (a loop needs a tree holding its own
    // keyed id, which no content has): the reader refuses it whole, so nothing below it is written.
    await assert.rejects(readFile(join(into, 'loop', 'x')), { code: 'ENOENT' });
  });

  it('every entry the encoder writes passes the restore check exactly when its name passes the rule (property)', () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 0, maxLength: 40 }), fc.uint8Array({ minLength: 1, maxLength: 40 }), (name, target) => {
        const bytes = Buffer.from(name);
        const entry: TreeEntry = { ...META, ...nameFields(bytes), ...targetFields(Buffer.from(target)), type: 'symlink' };
        assert.equal(entryProblem(entry), nameProblem(bytes));
      }),
      { numRuns: 2000 },
    );
  });
});
