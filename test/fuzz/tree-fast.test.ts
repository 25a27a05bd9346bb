import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { treeSchema, validTree as fastTree } from '../../agent/core/tree.ts';
import { fuzz, jsonValues } from './fuzz.ts';
import { validPageTree, validTree } from './records.ts';

/**
 * decodeTree's fast path (validTree in core/tree.ts) stands in for treeSchema on the trees an
 * unchanged re-backup reads by the thousand. It must never accept what the schema refuses, and
 * what it returns must be what the schema returns, byte for byte once encoded (copy and repair
 * re-encode decoded trees, and a tree's id is the hash of its bytes).
 */
function agrees(value: unknown): 'fast' | 'schema' | 'refused' {
  const fast = fastTree(value);
  const parsed = treeSchema.safeParse(value);
  if (fast === undefined) return parsed.success ? 'schema' : 'refused';
  assert.ok(parsed.success, `the fast path accepted what the schema refuses: ${JSON.stringify(value)}`);
  assert.equal(JSON.stringify(fast), JSON.stringify(parsed.data));
  assert.deepEqual(fast, parsed.data);
  return 'fast';
}

describe('fuzz: the fast tree decoder agrees with the tree schema', () => {
  it('valid trees, version 1 and 2, take the fast path and decode as the schema decodes them', () => {
    for (const tree of [...fc.sample(validTree, 300), ...fc.sample(validPageTree, 300)]) {
      // Trees the generator makes invalid (two of content, contentLists, extentLists) are the schema's to refuse.
      const outcome = agrees(JSON.parse(JSON.stringify(tree)));
      assert.notEqual(outcome, 'schema', `a valid tree missed the fast path: ${JSON.stringify(tree)}`);
    }
  });

  it('mutated trees (fields replaced, dropped, added, retyped): the fast path accepts only what the schema accepts, with the same result', () => {
    const seen = { fast: 0, schema: 0, refused: 0 };
    for (const arbitrary of [jsonValues(validTree), jsonValues(validPageTree)]) {
      fuzz(
        'tree/fast-path',
        arbitrary,
        (value) => {
          seen[agrees(value)]++;
        },
        1500,
      );
    }
    // The inputs reach all three outcomes, so the agreement was tested where it matters.
    assert.ok(seen.fast > 0 && seen.schema > 0 && seen.refused > 0, JSON.stringify(seen));
  });

  it('edge values the schema draws a line at', () => {
    const entry = { name: 'a', type: 'file', mode: 0o644, uid: 0, gid: 0, mtimeNs: '1' };
    const cases: unknown[] = [
      { version: 1, entries: [{ ...entry, uid: 2 ** 53 }] },
      { version: 1, entries: [{ ...entry, uid: -1 }] },
      { version: 1, entries: [{ ...entry, mode: 0o10000 }] },
      { version: 1, entries: [{ ...entry, mode: 1.5 }] },
      { version: 1, entries: [{ ...entry, name: '' }] },
      { version: 1, entries: [{ ...entry, mtimeNs: '1'.repeat(31) }] },
      { version: 1, entries: [{ ...entry, mtimeNs: '1\n' }] },
      { version: 1, entries: [{ ...entry, pageSize: 511 }] },
      { version: 2, entries: [{ ...entry, pageSize: 65536, extentLists: [] }] },
      { version: 2, entries: [{ ...entry, content: [], extentLists: ['a'.repeat(64)] }] },
      { version: 1, entries: [{ ...entry, pageHashes: [] }] },
      { version: 1, entries: [{ ...entry, nameBytes: 'YQ' }] },
      { version: 1, entries: [{ ...entry, subtree: 'A'.repeat(64) }] },
      { version: 1, entries: [{ ...entry, size: null }] },
      { version: 1, entries: [{ ...entry, extra: 1 }] },
      { version: 1, entries: [entry], extra: 1 },
      { version: 3, entries: [] },
      { version: 1, entries: {} },
      JSON.parse('{"version":1,"entries":[{"name":"a","type":"file","mode":1,"uid":0,"gid":0,"mtimeNs":"1","__proto__":{"x":1}}]}'),
    ];
    for (const value of cases) assert.notEqual(agrees(value), 'fast', JSON.stringify(value));
    assert.equal(
      agrees({ version: 2, entries: [{ ...entry, mode: 0o7777, uid: 2 ** 53 - 1, pageSize: 512, extentLists: ['a'.repeat(64)] }] }),
      'fast',
    );
  });
});
