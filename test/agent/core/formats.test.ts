import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { DamagedError, CairnError } from '../../../agent/core/errors.ts';
import { openObject, sealObject } from '../../../agent/core/envelope.ts';
import {
  Codec,
  PieceType,
  decodeFrame,
  decodeIndexEntries,
  decodeTrailer,
  encodeFrame,
  encodeIndexEntries,
  encodeTrailer,
  newPackHeader,
  packDataKey,
  type IndexEntry,
} from '../../../agent/core/pack.ts';
import { PieceIndex } from '../../../agent/core/piece-index.ts';
import { decodeTree } from '../../../agent/core/tree.ts';
import { decodeSnapshot } from '../../../agent/core/snapshot.ts';
import { parseRepositoryConfig, parseCompression } from '../../../agent/core/config.ts';
import { parseKeyFile, unwrapMasterKey, wrapMasterKey } from '../../../agent/core/keyfile.ts';
import { PathMatcher } from '../../../agent/files/glob.ts';
import { Random } from '../../helpers/tree.ts';

const master = randomBytes(32);

function entry(i: number, packId: string): IndexEntry {
  return { id: randomBytes(32), packId, type: PieceType.data, frameOffset: i * 100, frameLength: 100, offsetInFrame: 0, length: i };
}

/**
 * Random inputs, truncations and single-byte mutations of a valid input: a decoder
 * must return or throw a CairnError, never crash; an authenticated one must reject every mutation.
 */
function fuzz(
  valid: Buffer,
  decode: (data: Buffer) => unknown,
  options: { authenticated: boolean; rounds?: number } = { authenticated: true },
): void {
  const rounds = options.rounds ?? 300;
  const rnd = new Random(valid.length);
  for (let i = 0; i < rounds; i++) {
    const data = Buffer.from(valid);
    if (i % 3 === 0) {
      const at = rnd.int(data.length);
      data[at] = (data[at] as number) ^ (1 + rnd.int(255));
    }
    const input = i % 3 === 1 ? data.subarray(0, rnd.int(data.length)) : i % 3 === 2 ? rnd.bytes(rnd.int(200), false) : data;
    try {
      decode(input);
    } catch (error) {
      assert.ok(error instanceof CairnError, `decoder threw ${String(error)}`);
      continue;
    }
    if (i % 3 === 0 && options.authenticated) assert.fail('a mutated input was accepted');
  }
}

describe('repository formats', () => {
  it('sealed objects round-trip and are bound to their kind and name', () => {
    const payload = Buffer.from(JSON.stringify({ hello: 'world'.repeat(100) }));
    const sealed = sealObject(master, 'snapshot', 'snapshots/abc', payload);
    assert.deepEqual(openObject(master, 'snapshot', 'snapshots/abc', sealed), payload);
    assert.throws(() => openObject(master, 'snapshot', 'snapshots/other', sealed), DamagedError);
    assert.throws(() => openObject(master, 'index', 'snapshots/abc', sealed), DamagedError);
    assert.throws(() => openObject(randomBytes(32), 'snapshot', 'snapshots/abc', sealed), DamagedError);
    fuzz(sealed, (d) => openObject(master, 'snapshot', 'snapshots/abc', d));
  });

  it('frames authenticate their header, ids and payload', () => {
    const { salt } = newPackHeader();
    const key = packDataKey(master, salt);
    const ids = [randomBytes(32), randomBytes(32)];
    const frame = encodeFrame(key, Codec.none, ids, [3, 4], Buffer.from('abcdefg'));
    const decoded = decodeFrame(key, frame, 'test');
    assert.deepEqual(decoded.ids, ids);
    assert.deepEqual(decoded.lengths, [3, 4]);
    assert.equal(decoded.payload.toString(), 'abcdefg');
    const recoded = Buffer.from(frame);
    recoded[1] = Codec.zstd; // claim another codec
    assert.throws(() => decodeFrame(key, recoded, 'test'), DamagedError);
    fuzz(frame, (d) => decodeFrame(key, d, 'test'));
  });

  it('index entries and pack trailers round-trip and reject malformed input', () => {
    const packA = randomBytes(32).toString('hex');
    const packB = randomBytes(32).toString('hex');
    const entries = [entry(1, packA), entry(2, packB), entry(3, packA)];
    const decoded = decodeIndexEntries(encodeIndexEntries(entries), 'test');
    assert.deepEqual(decoded.map((e) => e.id.toString('hex')).sort(), entries.map((e) => e.id.toString('hex')).sort());
    assert.deepEqual(
      decoded.find((e) => e.id.equals(entries[1]!.id)),
      entries[1],
    );
    const { header, salt } = newPackHeader();
    const key = packDataKey(master, salt);
    const trailer = encodeTrailer(key, entries);
    assert.equal(decodeTrailer(key, Buffer.concat([header, trailer]), packA).length, 3);
    fuzz(encodeIndexEntries(entries), (d) => decodeIndexEntries(d, 'test'), { authenticated: false });
    fuzz(trailer, (d) => decodeTrailer(key, Buffer.concat([header, d]), packA));
  });

  it('the piece index finds every piece among many and keeps every location of a duplicate, the first first', () => {
    const index = new PieceIndex();
    const packs = Array.from({ length: 7 }, () => randomBytes(32).toString('hex'));
    const all: IndexEntry[] = [];
    for (let i = 0; i < 50_000; i++) all.push(entry(i % 1000, packs[i % 7] as string));
    for (const e of all) index.add(e);
    assert.equal(index.size, all.length);
    for (const e of all.slice(0, 2000)) {
      const { id, ...location } = e;
      assert.deepEqual(index.get(id), location);
    }
    assert.equal(index.has(randomBytes(32)), false);
    index.add({ ...all[0]!, frameOffset: 999_999 });
    assert.equal(index.get(all[0]!.id)?.frameOffset, all[0]!.frameOffset);
    assert.deepEqual(
      index.locations(all[0]!.id).map((l) => l.frameOffset),
      [all[0]!.frameOffset, 999_999],
      'a second location of a piece is kept (readers try them all; GC keeps every pack one names)',
    );
    assert.equal(index.size, all.length, 'pieces, not locations');
    assert.equal([...index.entries()].length, all.length + 1);
  });

  it('trees, snapshots, configs and key files reject malformed JSON with a damage error', () => {
    const tree = Buffer.from(
      JSON.stringify({ version: 1, entries: [{ name: 'a', type: 'file', mode: 420, uid: 0, gid: 0, mtimeNs: '1', size: 0, content: [] }] }),
    );
    assert.equal(decodeTree(tree, 't').entries.length, 1);
    fuzz(tree, (d) => decodeTree(d, 't'), { authenticated: false, rounds: 200 });
    assert.throws(() => decodeTree(Buffer.from('{"version":1,"entries":[{"name":"a","type":"device"}]}'), 't'), DamagedError);
    assert.throws(() => decodeSnapshot(Buffer.from('{"version":1}'), 's'), DamagedError);
    assert.throws(() => parseRepositoryConfig(Buffer.from('{"format":"cairn","version":1}'), 'here'), /config at here is invalid/);
    assert.throws(() => parseRepositoryConfig(Buffer.from('{"format":"cairn","version":7}'), 'here'), /format version 7/);
    assert.throws(() => parseKeyFile(Buffer.from('not json'), 'keys/x'), /not valid JSON/);
  });

  it('a key file opens with its passphrase only, and only for its repository', async () => {
    const repoId = randomBytes(32).toString('hex');
    const keyFile = await wrapMasterKey(master, 'right', repoId, { host: 'h', user: 'u' }, { N: 1024, r: 8, p: 1 });
    const parsed = parseKeyFile(Buffer.from(JSON.stringify(keyFile)), 'keys/x');
    assert.deepEqual(await unwrapMasterKey(parsed, 'right', repoId), master);
    assert.equal(await unwrapMasterKey(parsed, 'wrong', repoId), undefined);
    assert.equal(await unwrapMasterKey(parsed, 'right', randomBytes(32).toString('hex')), undefined);
  });

  it('compression specs parse, and bad ones say what is accepted', () => {
    assert.deepEqual(parseCompression('none'), { codec: 'none' });
    assert.deepEqual(parseCompression('zstd:7'), { codec: 'zstd', level: 7 });
    assert.throws(
      () => parseCompression('gzip'),
      (e: CairnError) => /use none, zstd or zstd:LEVEL/.test(e.hint ?? ''),
    );
    assert.throws(() => parseCompression('zstd:99'), /level/);
  });

  it('path patterns match names, anchored paths and subtrees', () => {
    const m = new PathMatcher(['*.log', '/cache', 'data/**/tmp', 'x?.bin']);
    assert.ok(m.matches('a/b/server.log'));
    assert.ok(m.matches('cache'));
    assert.ok(!m.matches('sub/cache'));
    assert.ok(m.matches('data/tmp') && m.matches('data/a/b/tmp'));
    assert.ok(m.matches('x1.bin') && !m.matches('x12.bin'));
    assert.ok(new PathMatcher(['etc']).matchesSelfOrAncestor('etc/passwd'));
    assert.ok(!new PathMatcher(['etc']).matchesSelfOrAncestor('var/etc2'));
  });
});
