import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { decodeTree, encodeTree, treeSchema, type Tree } from '../../agent/core/tree.ts';
import { decodes, fuzz, jsonDocumentBytes } from './fuzz.ts';
import { validPageTree, validTree } from './records.ts';

/**
 * A decoded tree is one its own schema accepts, and encoding it again decodes to the same tree:
 * same entries, and the version its entries need (encodeTree writes 2 when one holds extent lists
 * or page hashes, else 1; a version-2 tree without them re-encodes as version 1).
 */
function checkTree(tree: Tree): void {
  assert.ok(treeSchema.safeParse(tree).success);
  if (tree.version === 1) assert.ok(tree.entries.every((e) => e.extentLists === undefined && e.pageHashes === undefined));
  const again = decodeTree(encodeTree(tree), 'again');
  assert.deepEqual(again.entries, tree.entries);
  assert.equal(again.version, tree.entries.some((e) => e.extentLists !== undefined || e.pageHashes !== undefined) ? 2 : 1);
}

/** Trees (directory pieces, JSON): decodeTree returns a tree its own schema accepts, or throws Cairn.Damaged. */
describe('fuzz: trees', () => {
  it('arbitrary bytes, arbitrary JSON and mutations of valid trees decode to schema-valid trees or fail as Cairn.Damaged', () => {
    fuzz(
      'tree/decode',
      jsonDocumentBytes(validTree),
      (data) => decodes(() => decodeTree(data, 'fuzz'), ['Cairn.Damaged'], checkTree),
      1500,
    );
  });

  it('mutations of version-2 trees with page files (page size, extent lists, page hashes) decode the same way', () => {
    fuzz(
      'tree/decode-pages',
      jsonDocumentBytes(validPageTree),
      (data) => decodes(() => decodeTree(data, 'fuzz'), ['Cairn.Damaged'], checkTree),
      1500,
    );
  });
});
