import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, open, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { Repository } from '../../../agent/core/repository.ts';
import { PieceReader } from '../../../agent/core/piece-reader.ts';
import { decodeTree, encodeTree, type TreeEntry } from '../../../agent/core/tree.ts';
import { FileStorage } from '../../../agent/storage/file.ts';
import { runCli } from '../../helpers/cli.ts';
import { PASSPHRASE, tempDir } from '../../helpers/repo.ts';

const PAGE = 8192;
const PAGES = 160;

/** One PostgreSQL-style page: a header the page-file detector knows, then random bytes. */
function page(): Buffer {
  const p = randomBytes(PAGE);
  p.writeUInt16LE(64, 12);
  p.writeUInt16LE(4096, 14);
  p.writeUInt16LE(PAGE, 16);
  p.writeUInt16LE(PAGE | 4, 18);
  return p;
}

async function editPages(path: string, indexes: number[]): Promise<void> {
  const file = await open(path, 'r+');
  try {
    for (const i of indexes) await file.write(page(), 0, PAGE, i * PAGE);
  } finally {
    await file.close();
  }
}

/** The root tree's entry for `name` in each snapshot, oldest first, with the tree's version. */
async function entries(repoPath: string, name: string): Promise<Array<{ version: number; entry: TreeEntry }>> {
  const repo = await Repository.open(new FileStorage(repoPath), PASSPHRASE);
  const reader = new PieceReader(repo, await repo.loadIndex());
  const { snapshots } = await repo.listSnapshots();
  const out = [];
  for (const s of [...snapshots].sort((a, b) => a.time.localeCompare(b.time))) {
    const tree = decodeTree(await reader.read(Buffer.from(s.tree, 'hex')), s.tree);
    const entry = tree.entries.find((e) => e.name === name);
    assert.ok(entry, `${name} is in snapshot ${s.id}`);
    out.push({ version: tree.version, entry });
  }
  return out;
}

describe('repository format versions (issue 21: page files are format 2)', () => {
  it('a format-1 repository is backed up in its own layout: a database file stays ordinary content, and both snapshots restore exactly', async () => {
    const work = await tempDir('format-1');
    try {
      const repoPath = join(work.path, 'repo');
      await Repository.init(new FileStorage(repoPath), PASSPHRASE, { host: 'h', user: 'u' }, { formatVersion: 1 });
      const env = { CAIRN_REPOSITORY: repoPath, CAIRN_PASSWORD: PASSPHRASE };
      const src = join(work.path, 'src');
      await mkdir(src);
      const rel = join(src, 'rel');
      await writeFile(rel, Buffer.concat(Array.from({ length: PAGES }, page)));
      const first = await readFile(rel);
      assert.equal((await runCli(['backup', src], env)).code, 0);
      await editPages(rel, [3, 77, 140]);
      const second = await readFile(rel);
      const again = await runCli(['backup', src], env);
      assert.equal(again.code, 0, again.stderr);

      const found = await entries(repoPath, 'rel');
      assert.equal(found.length, 2);
      for (const { version, entry } of found) {
        assert.equal(version, 1, 'a format-1 repository gets version-1 trees');
        assert.equal(entry.extentLists, undefined, 'no page file in a format-1 repository');
        assert.ok(entry.content ?? entry.contentLists);
      }
      const config = JSON.parse(await readFile(join(repoPath, 'config'), 'utf8')) as { version: number };
      assert.equal(config.version, 1, 'the backup left the format as it was');

      const { snapshots } = await runCli(['snapshots'], env).then(
        (r) => r.lines.find((l) => l.type === 'snapshots') as { snapshots: Array<{ id: string; time: string }> },
      );
      const ordered = [...snapshots].sort((a, b) => a.time.localeCompare(b.time));
      for (const [i, expected] of [first, second].entries()) {
        const target = join(work.path, `restored-${i}`);
        const restored = await runCli(['restore', (ordered[i] as { id: string }).id, '--target', target], env);
        assert.equal(restored.code, 0, restored.stderr);
        assert.ok((await readFile(join(target, 'rel'))).equals(expected), `snapshot ${i + 1} restores byte for byte`);
      }
    } finally {
      await work.remove();
    }
  });

  it('init creates format 2, where a database file becomes a page file in a version-2 tree after the first backup', async () => {
    const work = await tempDir('format-2');
    try {
      const repoPath = join(work.path, 'repo');
      const env = { CAIRN_REPOSITORY: repoPath, CAIRN_PASSWORD: PASSPHRASE };
      assert.equal((await runCli(['init'], env)).code, 0);
      const config = JSON.parse(await readFile(join(repoPath, 'config'), 'utf8')) as { version: number };
      assert.equal(config.version, 2);
      const src = join(work.path, 'src');
      await mkdir(src);
      await writeFile(join(src, 'rel'), Buffer.concat(Array.from({ length: PAGES }, page)));
      await writeFile(join(src, 'notes.txt'), randomBytes(300_000));
      assert.equal((await runCli(['backup', src], env)).code, 0);
      const [rel] = await entries(repoPath, 'rel');
      assert.equal(rel?.version, 2);
      assert.equal(rel?.entry.pageSize, PAGE);
      assert.ok(rel?.entry.extentLists && rel.entry.pageHashes, 'a page file: extents and page hashes');
      const [notes] = await entries(repoPath, 'notes.txt');
      assert.equal(notes?.entry.extentLists, undefined, 'a file without a page header stays ordinary content');
    } finally {
      await work.remove();
    }
  });

  it('a config of a newer format is refused before anything is read, naming the versions', async () => {
    const work = await tempDir('format-3');
    try {
      const repoPath = join(work.path, 'repo');
      const env = { CAIRN_REPOSITORY: repoPath, CAIRN_PASSWORD: PASSPHRASE };
      assert.equal((await runCli(['init'], env)).code, 0);
      const configPath = join(repoPath, 'config');
      const config = JSON.parse(await readFile(configPath, 'utf8')) as { version: number };
      await writeFile(configPath, JSON.stringify({ ...config, version: 3 }));
      const refused = await runCli(['snapshots'], env);
      assert.notEqual(refused.code, 0);
      assert.match(refused.stderr, /format version 3; this cairn reads up to version 2/);
    } finally {
      await work.remove();
    }
  });
  it('a tree with any page-file field encodes as version 2 and decodes again; a version-1 tree may hold none', () => {
    const id = 'ab'.repeat(32);
    const base = { name: 'f', type: 'file' as const, mode: 0o644, uid: 0, gid: 0, mtimeNs: '1767225600000000000', size: 3 };
    const shapes: TreeEntry[] = [
      { ...base, extentLists: [id], pageSize: PAGE, pageHashes: [id] },
      { ...base, extentLists: [id], pageSize: PAGE },
      // Written by no cairn (verify reports it as damage), but re-encoding it must not make a tree decodeTree refuses.
      { ...base, content: [id], pageSize: PAGE, pageHashes: [id] },
    ];
    for (const entry of shapes) {
      const again = decodeTree(encodeTree({ version: 1, entries: [entry] }), 'shape');
      assert.equal(again.version, 2, JSON.stringify(entry));
      assert.deepEqual(again.entries, [entry]);
    }
    assert.equal(decodeTree(encodeTree({ version: 2, entries: [{ ...base, content: [id] }] }), 'plain').version, 1);
    assert.throws(
      () => decodeTree(Buffer.from(JSON.stringify({ version: 1, entries: [{ ...base, content: [id], pageHashes: [id] }] })), 'v1'),
      { code: 'Cairn.Damaged' },
    );
  });
});
