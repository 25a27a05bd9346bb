import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdir, readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { PieceType } from '../../../agent/core/pack.ts';
import type { Repository } from '../../../agent/core/repository.ts';
import { encodeTree, type TreeEntry } from '../../../agent/core/tree.ts';
import { PackWriter } from '../../../agent/pipeline/pack-writer.ts';
import { TOOL } from '../../../agent/core/version.ts';
import { tempDir, initSmallRepo, fileRepo, restoreTo } from '../../helpers/repo.ts';

const meta = { mode: 0o644, uid: 0, gid: 0, mtimeNs: '1600000000000000000' };

/** Writes trees exactly as given — bypassing the archiver — and commits a snapshot of them, as an attacker with the key could. */
async function craft(
  repo: Repository,
  build: (addTree: (entries: TreeEntry[]) => Promise<string>, file: TreeEntry) => Promise<TreeEntry[]>,
): Promise<string> {
  const index = await repo.loadIndex();
  const writer = new PackWriter(repo, index, { compression: { codec: 'none' }, concurrency: 1 });
  const data = Buffer.from('attacker controlled bytes\n');
  const dataId = repo.pieceId(data);
  await writer.add(dataId, PieceType.data, data);
  const addTree = async (entries: TreeEntry[]): Promise<string> => {
    const bytes = encodeTree({ version: 1, entries });
    const id = repo.pieceId(bytes);
    await writer.add(id, PieceType.tree, bytes);
    return id.toString('hex');
  };
  const file: TreeEntry = { ...meta, name: 'x', type: 'file', size: data.length, content: [dataId.toString('hex')] };
  const root = await addTree(await build(addTree, file));
  await writer.flush();
  const id = randomBytes(32).toString('hex');
  const now = new Date().toISOString();
  await repo.saveSnapshot({
    version: 1,
    id,
    time: now,
    endTime: now,
    host: 'attacker',
    user: 'x',
    paths: ['/'],
    tags: [],
    engine: 'files',
    engineMetadata: {},
    tree: root,
    summary: {
      filesNew: 0,
      filesChanged: 0,
      filesUnchanged: 0,
      dirs: 0,
      bytesNew: 0,
      bytesChanged: 0,
      bytesUnchanged: 0,
      totalFiles: 0,
      totalBytes: 0,
      bytesRead: 0,
      piecesAdded: 0,
      rawBytesAdded: 0,
      bytesAdded: 0,
      durationMs: 0,
      errors: 0,
    },
    tool: TOOL,
  });
  return id;
}

describe('a crafted manifest cannot write outside the restore target', () => {
  let work: Awaited<ReturnType<typeof tempDir>>;
  let repo: Repository;
  let outside: string;
  before(async () => {
    work = await tempDir('crafted');
    repo = await initSmallRepo(fileRepo(join(work.path, 'repo')));
    outside = join(work.path, 'outside');
    await mkdir(outside);
  });
  after(async () => {
    await work.remove();
  });

  const cases: Array<[string, Parameters<typeof craft>[1]]> = [
    ['a file named ".."', async (_t, f) => [{ ...f, name: '..' }]],
    ['a file named "../escape"', async (_t, f) => [{ ...f, name: '../outside/escape' }]],
    ['an absolute name', async (_t, f) => [{ ...f, name: '/tmp/absolute-escape' }]],
    ['a "." directory', async (t, f) => [{ ...meta, name: '.', type: 'dir', subtree: await t([f]) }]],
    [
      '".." inside a subdirectory',
      async (t, f) => [
        {
          ...meta,
          name: 'deep',
          type: 'dir',
          subtree: await t([
            {
              ...meta,
              name: '..',
              type: 'dir',
              subtree: await t([{ ...meta, name: '..', type: 'dir', subtree: await t([{ ...f, name: 'escape' }]) }]),
            },
          ]),
        },
      ],
    ],
    [
      'a symlink to outside, then a directory of the same name',
      async (t, f) => [
        { ...meta, name: 'sub', type: 'symlink', target: outside },
        { ...meta, name: 'sub', type: 'dir', subtree: await t([{ ...f, name: 'pwned' }]) },
      ],
    ],
    [
      'a symlink to outside, then a file of the same name',
      async (_t, f) => [
        { ...meta, name: 'link', type: 'symlink', target: join(outside, 'pwned') },
        { ...f, name: 'link' },
      ],
    ],
    ['a name with a NUL byte', async (_t, f) => [{ ...f, name: 'a\0b' }]],
  ];

  for (const [label, build] of cases) {
    it(`refuses ${label}`, async () => {
      const id = await craft(repo, build);
      const target = join(work.path, `target-${Math.random().toString(16).slice(2)}`);
      await assert.rejects(restoreTo(repo, id, target), /refusing to write it/);
      await restoreTo(repo, id, `${target}-ignoring`, { ignoreErrors: true });
      assert.deepEqual(await readdir(outside), [], 'nothing appeared outside the target');
      await assert.rejects(stat('/tmp/absolute-escape'));
      await assert.rejects(stat(join(work.path, 'escape')));
    });
  }

  it('restores a symlink pointing outside as a link, without following it', async () => {
    const id = await craft(repo, async (_t, f) => [
      { ...meta, name: 'link', type: 'symlink', target: '../../../../etc/passwd' },
      { ...f, name: 'plain' },
    ]);
    const target = join(work.path, 'target-link');
    const { result } = await restoreTo(repo, id, target);
    assert.equal(result.symlinks, 1);
    assert.deepEqual((await readdir(target)).sort(), ['link', 'plain']);
  });
});
