import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Readable } from 'node:stream';
import fc from 'fast-check';
import { pack } from 'tar-stream';
import { CairnError } from '../../agent/core/errors.ts';
import { splitTar } from '../../agent/engines/postgres.ts';
import { anyBytes, fuzzAsync, mutatedBytes } from './fuzz.ts';
import { CollectingSink, chunked } from './sink.ts';

/**
 * The tar of pg_basebackup (agent/engines/postgres.ts splitTar: tar-stream's
 * extract, then each entry stored by type, global/pg_control peeked for the system
 * identifier). Clean means a CairnError: Cairn.Failure for a malformed or cut-off
 * archive (tar-stream's own validation errors, wrapped); never a TypeError or
 * RangeError, a plain error, a hang, a promise left pending or an error thrown after
 * splitTar settled. Inputs arrive in random chunks.
 */

async function tarOf(entries: Array<{ name: string; type: 'file' | 'directory' | 'symlink'; body: Uint8Array }>): Promise<Buffer> {
  const p = pack();
  for (const e of entries) {
    if (e.type === 'file') p.entry({ name: e.name, mode: 0o600 }, Buffer.from(e.body));
    else if (e.type === 'directory') p.entry({ name: e.name, type: 'directory', mode: 0o700 });
    else p.entry({ name: e.name, type: 'symlink', linkname: 'target' });
  }
  p.finalize();
  const chunks: Buffer[] = [];
  for await (const c of p as unknown as AsyncIterable<Buffer>) chunks.push(c);
  return Buffer.concat(chunks);
}

const entry = fc.record({
  name: fc.constantFrom('global/pg_control', 'base/1/1259', 'PG_VERSION', 'pg_wal/000000010000000000000001', 'base', 'global'),
  type: fc.constantFrom('file' as const, 'directory' as const, 'symlink' as const),
  body: fc.uint8Array({ maxLength: 700 }),
});

/** The first header of a tar re-typed and re-sized with its checksum fixed, then cut: reaches the entry handling past tar-stream's checks. */
function reheadered(tar: Buffer, type: number, size: number, cut: number): Buffer {
  const h = Buffer.from(tar);
  h[156] = type;
  h.write(`${size.toString(8).padStart(11, '0')}\0`, 124, 'latin1');
  h.fill(0x20, 148, 156);
  let sum = 0;
  for (const b of h.subarray(0, 512)) sum += b;
  h.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 'latin1');
  return h.subarray(0, 512 + (cut % (size + 1100)));
}

function isClean(error: unknown): boolean {
  return error instanceof CairnError;
}

describe('fuzz: pg_basebackup tar', () => {
  // Found by the fuzzer (seed 852998512): an entry whose body splitTar skips (a symlink, a hard link) cut off by the end of the
  // input threw an uncaught "Unexpected end of data" from the skipped body.
  it('an entry whose body is cut off rejects as Cairn.Failure, with nothing thrown afterwards', async (t) => {
    const uncaught: unknown[] = [];
    const onUncaught = (error: unknown): void => {
      uncaught.push(error);
    };
    process.on('uncaughtException', onUncaught);
    t.after(() => process.off('uncaughtException', onUncaught));
    const tar = await tarOf([{ name: 'base', type: 'file', body: new Uint8Array(3) }]);
    for (const type of [0x30, 0x31, 0x32, 0x33, 0x37]) {
      const data = reheadered(tar, type, 753, 91);
      await assert.rejects(
        splitTar(Readable.from([data]), new CollectingSink(), () => undefined),
        (error: unknown) => {
          assert.ok(error instanceof CairnError && error.code === 'Cairn.Failure', String(error));
          return true;
        },
      );
      await new Promise((resolve) => setTimeout(resolve, 5));
      assert.deepEqual(uncaught, [], `type ${String.fromCharCode(type)}`);
    }
  });

  it('arbitrary bytes and mutations of valid tars split into files or fail cleanly', async (t) => {
    const valid = await Promise.all(
      fc.sample(fc.array(entry, { minLength: 1, maxLength: 4 }), { numRuns: 40, seed: 1 }).map((entries) => tarOf(entries)),
    );
    const validTar = fc.nat().map((n) => valid[n % valid.length] as Buffer);
    const input = fc.tuple(
      fc.oneof(anyBytes(1500), { weight: 4, arbitrary: mutatedBytes(validTar, 6) }, validTar, {
        weight: 2,
        arbitrary: fc
          .tuple(validTar, fc.constantFrom(0x30, 0x32, 0x35, 0x31, 0x37), fc.nat(2000), fc.nat())
          .map(([t, type, size, cut]) => reheadered(t, type, size, cut)),
      }),
      fc.array(fc.nat(), { maxLength: 6 }),
    );
    // An error no one listens for (an entry's body failing after splitTar settled) would take the agent down.
    const uncaught: unknown[] = [];
    const onUncaught = (error: unknown): void => {
      uncaught.push(error);
    };
    process.on('uncaughtException', onUncaught);
    t.after(() => process.off('uncaughtException', onUncaught));
    await fuzzAsync(
      'tar/split',
      input,
      async ([data, cuts]) => {
        const sink = new CollectingSink();
        try {
          await splitTar(Readable.from(chunked(data, cuts)), sink, () => undefined);
        } catch (error) {
          assert.ok(
            isClean(error),
            `not a clean error: ${error instanceof Error ? `${error.name}: ${error.message}\n${error.stack}` : String(error)}`,
          );
        }
        await new Promise((resolve) => setImmediate(resolve));
        assert.equal(uncaught.length, 0, `uncaught after splitTar settled: ${uncaught.map(String).join('; ')}`);
      },
      500,
    );
  });
});
