import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { crc32 } from 'node:zlib';
import { splitXbstream } from '../../agent/engines/xbstream.ts';
import { anyBytes, assertClean, decodesAsync, fuzzAsync, mutatedBytes } from './fuzz.ts';
import { CollectingSink, chunked } from './sink.ts';

/**
 * xbstream (mariabackup's output, split into files): splitXbstream returns the
 * number of files it stored, each stream to its end, or throws Cairn.Failure.
 * Inputs are delivered in random chunks, as a pipe would.
 */
function chunk(type: 'P' | 'E', path: string, offset = 0, payload = Buffer.alloc(0)): Buffer {
  const name = Buffer.from(path, 'utf8');
  const head = Buffer.alloc(14);
  head.write('XBSTCK01', 0, 'latin1');
  head.writeUInt8(0, 8);
  head.write(type, 9, 'latin1');
  head.writeUInt32LE(name.length, 10);
  if (type === 'E') return Buffer.concat([head, name]);
  const meta = Buffer.alloc(20);
  meta.writeBigUInt64LE(BigInt(payload.length), 0);
  meta.writeBigUInt64LE(BigInt(offset), 8);
  meta.writeUInt32LE(crc32(payload), 16); // a valid chunk carries its payload's CRC-32, so valid streams split
  return Buffer.concat([head, name, meta, payload]);
}

/** A valid stream: files cut into chunks, interleaved, each ended. */
const validStream = fc
  .array(
    fc.tuple(
      fc.constantFrom('ibdata1', 'db/t.ibd', 'xtrabackup_checkpoints', 'ib_logfile0'),
      fc.array(fc.uint8Array({ maxLength: 64 }), { maxLength: 3 }),
    ),
    { minLength: 1, maxLength: 3 },
  )
  .map((files) => {
    const parts: Buffer[] = [];
    const seen = new Set<string>();
    for (const [path, pieces] of files) {
      if (seen.has(path)) continue;
      seen.add(path);
      let offset = 0;
      for (const piece of pieces) {
        parts.push(chunk('P', path, offset, Buffer.from(piece)));
        offset += piece.length;
      }
      if (pieces.length === 0) parts.push(chunk('P', path));
      parts.push(chunk('E', path));
    }
    return Buffer.concat(parts);
  });

async function* source(chunks: Buffer[]): AsyncIterable<Buffer> {
  for (const c of chunks) {
    await Promise.resolve();
    yield c;
  }
}

describe('fuzz: xbstream', () => {
  // Found by the fuzzer (seeds 883207645, 756205742): a stream ending inside a chunk after a clean chunk boundary.
  it('a P chunk cut right after its path, or an empty path at the end, fails as Cairn.Failure', async () => {
    const whole = chunk('P', 'ibdata1', 0, Buffer.from('abc'));
    const cuts = [
      whole.subarray(0, 14 + 'ibdata1'.length),
      Buffer.concat([whole, chunk('E', 'ibdata1'), chunk('P', '').subarray(0, 14)]),
      whole.subarray(0, 14 + 'ibdata1'.length + 20 + 1),
    ];
    for (const data of cuts) {
      await assert.rejects(splitXbstream(source([data]), new CollectingSink()), (error: unknown) => {
        assertClean(error, ['Cairn.Failure']);
        return true;
      });
    }
  });

  it('arbitrary bytes and mutations of valid streams split into files or fail as Cairn.Failure', async () => {
    const input = fc.tuple(
      fc.oneof(anyBytes(300), { weight: 4, arbitrary: mutatedBytes(validStream) }, validStream),
      fc.array(fc.nat(), { maxLength: 6 }),
    );
    await fuzzAsync(
      'xbstream/split',
      input,
      async ([data, cuts]) => {
        const sink = new CollectingSink();
        await decodesAsync(
          () => splitXbstream(source(chunked(data, cuts)), sink),
          ['Cairn.Failure'],
          (files) => {
            assert.equal(files, sink.files.size);
          },
        );
      },
      1000,
    );
  });
});
