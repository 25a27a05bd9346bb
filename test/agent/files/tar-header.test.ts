import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { extract, type Header } from 'tar-stream';
import { TAR_BLOCK, tarHeader, type TarEntry } from '../../../agent/files/tar-header.ts';

/**
 * The headers `cairn dump` writes, read back by a second implementation (tar-stream's
 * extract, which Cairn uses to read archives) for what a backup rarely holds but a
 * header must carry: sizes past ustar's 8 GiB, ids past its 7 octal digits, long
 * names, times before 1970 or with nanoseconds. GNU tar reads the same headers in
 * test/agent/cli/dump-tar.test.ts.
 */

/** The first entry's header as tar-stream parses it (the content need not follow). */
function parse(block: Buffer): Promise<Header> {
  return new Promise((resolve, reject) => {
    const reader = extract();
    reader.on('entry', (header) => {
      resolve(header);
      reader.destroy();
    });
    reader.on('error', reject);
    reader.end(block);
  });
}

/** The pax records tar-stream applied (its type leaves them untyped). */
const pax = (h: Header): Record<string, string | undefined> => (h.pax ?? {}) as Record<string, string | undefined>;

const BASE: TarEntry = {
  path: Buffer.from('f'),
  type: 'file',
  mode: 0o640,
  uid: 1000,
  gid: 1000,
  mtimeNs: 1_700_000_000_000_000_000n,
  size: 5,
};

describe('tar headers', () => {
  it('a plain entry is one ustar block with its fields in octal', async () => {
    const block = tarHeader(BASE);
    assert.equal(block.length, TAR_BLOCK, 'no pax header for what ustar holds');
    const h = await parse(block);
    assert.deepEqual(
      { name: h.name, mode: h.mode, uid: h.uid, gid: h.gid, size: h.size, mtime: h.mtime?.getTime(), type: h.type },
      { name: 'f', mode: 0o640, uid: 1000, gid: 1000, size: 5, mtime: 1_700_000_000_000, type: 'file' },
    );
  });

  it('a size past 8 GiB, ids past 2^21 and a long UTF-8 path go into a pax header', async () => {
    const path = Buffer.from(`dir/${'é'.repeat(80)}/file`);
    const size = 9 * 2 ** 30 + 7;
    const block = tarHeader({ ...BASE, path, size, uid: 3_000_000, gid: 4_000_000 });
    assert.ok(block.length > TAR_BLOCK);
    const h = await parse(block);
    assert.deepEqual(
      { name: h.name, size: h.size, uid: pax(h).uid, gid: pax(h).gid },
      { name: path.toString(), size, uid: '3000000', gid: '4000000' },
    );
    // The ustar fields agree for a reader that ignores pax (base-256, GNU's extension).
    assert.deepEqual([h.uid, h.gid], [3_000_000, 4_000_000]);
  });

  it('mtimes keep their nanoseconds, and one before 1970 is exact in pax', async () => {
    const fraction = await parse(tarHeader({ ...BASE, mtimeNs: 1_700_000_000_123_456_789n }));
    assert.equal(pax(fraction).mtime, '1700000000.123456789');
    const before = await parse(tarHeader({ ...BASE, mtimeNs: -1_500_000_000n }));
    assert.equal(pax(before).mtime, '-1.5');
  });

  it('a directory gets its trailing slash, a symlink and a hard link their targets', async () => {
    assert.equal((await parse(tarHeader({ ...BASE, path: Buffer.from('d'), type: 'dir', size: 0 }))).name, 'd/');
    const target = Buffer.from(`../${'t'.repeat(150)}`);
    const symlink = await parse(tarHeader({ ...BASE, type: 'symlink', size: 0, linkTarget: target }));
    assert.deepEqual([symlink.type, symlink.linkname, symlink.size], ['symlink', target.toString(), 0]);
    const link = await parse(tarHeader({ ...BASE, type: 'link', size: 0, linkTarget: Buffer.from('first') }));
    assert.deepEqual([link.type, link.linkname], ['link', 'first']);
  });

  it('a name that is not UTF-8 is written as its bytes, in the ustar field and in pax', () => {
    const short = Buffer.from([0x6e, 0xfe, 0xff]);
    assert.ok(
      tarHeader({ ...BASE, path: short })
        .subarray(0, short.length)
        .equals(short),
    );
    const long = Buffer.concat([Buffer.from('x'.repeat(120)), short]);
    const block = tarHeader({ ...BASE, path: long });
    assert.ok(block.includes(Buffer.concat([Buffer.from(' path='), long, Buffer.from('\n')])), 'the pax record holds the exact bytes');
  });
});
