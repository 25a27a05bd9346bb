import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { decodeTree, encodeTree, treeSchema } from '../../agent/core/tree.ts';
import { decodes, fuzz, jsonDocumentBytes } from './fuzz.ts';
import { validTree } from './records.ts';

/** Trees (directory pieces, JSON): decodeTree returns a tree its own schema accepts, or throws Cairn.Damaged. */
describe('fuzz: trees', () => {
  it('arbitrary bytes, arbitrary JSON and mutations of valid trees decode to schema-valid trees or fail as Cairn.Damaged', () => {
    fuzz(
      'tree/decode',
      jsonDocumentBytes(validTree),
      (data) => {
        decodes(
          () => decodeTree(data, 'fuzz'),
          ['Cairn.Damaged'],
          (tree) => {
            assert.ok(treeSchema.safeParse(tree).success);
            assert.deepEqual(decodeTree(encodeTree(tree), 'again'), tree);
          },
        );
      },
      1500,
    );
  });
});
