import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Readable } from 'node:stream';
import type { Tree } from '../../../agent/core/tree.ts';
import { TreeSink } from '../../../agent/engines/sink.ts';

/** A tree store that keeps trees in memory: the sink's own logic is under test, not the repository. */
function memorySink(): { sink: TreeSink; trees: Map<string, Tree> } {
  const trees = new Map<string, Tree>();
  const sink = new TreeSink({
    storeStream: async (data) => {
      let size = 0;
      for await (const chunk of data) size += (chunk as Buffer).length;
      return { size, content: [] };
    },
    storeTree: async (tree) => {
      const id = trees.size.toString(16).padStart(64, '0');
      trees.set(id, tree);
      return id;
    },
  });
  return { sink, trees };
}

const bytes = (text: string): Readable => Readable.from([Buffer.from(text)]);

describe('an engine sink never drops an entry silently', () => {
  it('a file, then a file below the same path: refused, naming the path', async () => {
    const { sink } = memorySink();
    await sink.addStream('x', bytes('a'));
    await assert.rejects(sink.addStream('x/y', bytes('b')), /both a directory and a file or symlink at "x"/);
  });

  it('a symlink, then a file below it: refused', async () => {
    const { sink } = memorySink();
    await sink.addSymlink('l', '/etc');
    await assert.rejects(sink.addStream('l/z', bytes('c')), /at "l"/);
  });

  it('a directory (explicit or implied), then a file or symlink at its path: refused', async () => {
    const { sink } = memorySink();
    await sink.addStream('d/inner', bytes('x'));
    await assert.rejects(sink.addStream('d', bytes('y')), /at "d"/);
    await sink.addDirectory('e');
    await assert.rejects(sink.addSymlink('e', 'elsewhere'), /at "e"/);
  });

  it('the same file twice keeps the later one, as a tar extraction does', async () => {
    const { sink, trees } = memorySink();
    await sink.addStream('f', bytes('first'));
    await sink.addStream('f', bytes('second!'));
    const root = trees.get(await sink.finish());
    assert.deepEqual(
      root?.entries.map((e) => [e.name, e.size]),
      [['f', 7]],
    );
  });
});
