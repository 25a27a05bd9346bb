import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { link, mkdir, symlink, utimes, writeFile, chmod } from 'node:fs/promises';
import { join } from 'node:path';
import fc from 'fast-check';
import { PieceReader } from '../../../agent/core/piece-reader.ts';
import type { Repository } from '../../../agent/core/repository.ts';
import { decodeTree, encodeTree, entryName, nameFields, nameProblem, type TreeEntry } from '../../../agent/core/tree.ts';
import { tempDir, initSmallRepo, fileRepo, backupDir, restoreTo } from '../../helpers/repo.ts';
import { walkBytes } from './tree-compare.ts';

const b = (text: string): Buffer => Buffer.from(text, 'utf8');
const under = (dir: Buffer, name: Buffer): Buffer => Buffer.concat([dir, b('/'), name]);
const OLD = new Date(Date.UTC(2003, 4, 5, 6, 7, 8, 900));

/** Names a Linux filesystem allows that are awkward for a tool: none of them may be lost or refused. */
const AWKWARD: Buffer[] = [
  b('a\\b'),
  b('\\'),
  b('line\nbreak'),
  b('tab\there'),
  b('with space'),
  b(' leading and trailing '),
  b('-leading-dash'),
  b('--'),
  b('...'),
  b('.hidden'),
  b('ünïcødé ✓'),
  Buffer.from([0x66, 0xff, 0xfe, 0x2e, 0x74]), // not UTF-8
  Buffer.from([0xc3, 0x28]), // a broken two-byte sequence
  Buffer.from('caf\xe9', 'latin1'), // Latin-1 é
  Buffer.from([0xed, 0xa0, 0x80]), // a UTF-16 surrogate encoded as UTF-8: not valid UTF-8
  Buffer.from([0xef, 0xbf, 0xbd]), // U+FFFD itself, valid UTF-8 — must not collide with the display form of the names above
  b('x'.repeat(255)),
  Buffer.concat([Buffer.alloc(250, 0x61), Buffer.from([0x80, 0x81, 0x82, 0x83, 0xff])]), // 255 bytes, not UTF-8
  b('é'.repeat(127) + 'z'), // 255 bytes of UTF-8
];

async function rootTree(repo: Repository, treeId: string): Promise<TreeEntry[]> {
  const index = await repo.loadIndex();
  const reader = new PieceReader(repo, index);
  return decodeTree(await reader.read(Buffer.from(treeId, 'hex')), treeId).entries;
}

describe('names are bytes: whatever Linux allows backs up and restores exactly', () => {
  let work: Awaited<ReturnType<typeof tempDir>>;
  let repo: Repository;
  before(async () => {
    work = await tempDir('names');
    repo = await initSmallRepo(fileRepo(join(work.path, 'repo')));
  });
  after(async () => {
    await work.remove();
  });

  it('restores a tree of awkward names identical (names as bytes, content, modes, owners, times, link targets)', async () => {
    const src = b(join(work.path, 'src'));
    await mkdir(src);
    for (const [i, name] of AWKWARD.entries()) {
      await writeFile(under(src, name), `file ${i}: ${name.toString('hex')}\n`);
      await chmod(under(src, name), i % 2 ? 0o640 : 0o604);
      await utimes(under(src, name), OLD, OLD);
    }
    // Directories with such names, holding such names; links with such targets.
    const weirdDir = under(src, Buffer.from([0x64, 0x5c, 0xff]));
    await mkdir(weirdDir);
    await writeFile(under(weirdDir, Buffer.from([0xfe])), 'inside\n');
    await link(under(weirdDir, Buffer.from([0xfe])), under(weirdDir, b('-hard\\link')));
    await symlink(Buffer.from([0x2e, 0x2e, 0x2f, 0x66, 0xff, 0xfe, 0x2e, 0x74]), under(weirdDir, b('link\nto non-UTF-8')));
    await symlink(b('../a\\b'), under(weirdDir, Buffer.from([0xc3, 0x28, 0x6c])));
    const nested = under(src, b('-dir with\\ and\nnewline'));
    await mkdir(nested);
    await writeFile(under(nested, b('x'.repeat(255))), 'deep\n');
    for (const dir of [weirdDir, nested]) await utimes(dir, OLD, OLD);

    const snapshot = await backupDir(repo, src.toString());
    assert.equal(snapshot.summary.errors, 0, 'every name was backed up');
    const entries = await rootTree(repo, snapshot.tree);
    for (const entry of entries) {
      const bytes = entryName(entry);
      // Only names that are not UTF-8 carry their bytes separately.
      assert.equal(entry.nameBytes !== undefined, !Buffer.from(bytes.toString('utf8'), 'utf8').equals(bytes), entry.name);
    }
    assert.ok(entries.some((e) => e.name === 'a\\b' && e.nameBytes === undefined));

    const target = join(work.path, 'target');
    const { result } = await restoreTo(repo, snapshot.id, target);
    assert.deepEqual(result.errors, []);
    assert.deepEqual(await walkBytes(b(target)), await walkBytes(src));
  });

  it('every name the archiver would store is one the restorer accepts, and comes back byte for byte (property)', async () => {
    const nameArb = fc.uint8Array({ minLength: 0, maxLength: 300 }).map((a) => Buffer.from(a));
    // Through the tree's JSON: the stored form decodes to the same bytes, which pass the same rule.
    fc.assert(
      fc.property(nameArb, (name) => {
        const problem = nameProblem(name);
        const linuxAllows = name.length > 0 && !name.includes(0x2f) && !name.includes(0) && !['.', '..'].includes(name.toString('latin1'));
        assert.equal(problem === undefined, linuxAllows);
        if (problem) return;
        const entry: TreeEntry = { ...nameFields(name), type: 'file', mode: 0o644, uid: 0, gid: 0, mtimeNs: '0', size: 0, content: [] };
        const [decoded] = decodeTree(encodeTree({ version: 1, entries: [entry] }), 't').entries;
        assert.ok(decoded);
        assert.ok(entryName(decoded).equals(name));
        assert.equal(nameProblem(entryName(decoded)), undefined);
      }),
      { seed: 20, numRuns: 5000 },
    );
    // Through a real filesystem, backup and restore: random names (up to NAME_MAX) in one directory.
    const fsName = fc
      .uint8Array({ minLength: 1, maxLength: 255 })
      .map((a) => Buffer.from(a))
      .filter((n) => nameProblem(n) === undefined);
    const names = fc.sample(fc.uniqueArray(fsName, { minLength: 150, maxLength: 150, selector: (n) => n.toString('hex') }), {
      seed: 2026,
      numRuns: 1,
    })[0];
    assert.ok(names);
    const src = b(join(work.path, 'random-src'));
    await mkdir(src);
    for (const name of names) {
      await writeFile(under(src, name), name);
      await utimes(under(src, name), OLD, OLD);
    }
    const snapshot = await backupDir(repo, src.toString());
    assert.equal(snapshot.summary.errors, 0);
    assert.equal(snapshot.summary.totalFiles, names.length);
    const target = join(work.path, 'random-target');
    await restoreTo(repo, snapshot.id, target);
    assert.deepEqual(await walkBytes(b(target)), await walkBytes(src));
  });

  it('refuses to back up a path beside others whose name the rule refuses, before writing a snapshot', async () => {
    const one = join(work.path, 'one');
    await mkdir(one);
    await assert.rejects(backupDir(repo, one, { paths: ['/', one] }), /beside other paths/);
  });
});
