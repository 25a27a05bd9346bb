import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { zstdCompressSync } from 'node:zlib';
import fc from 'fast-check';
import { SALT_BYTES, deriveKey, seal } from '../../agent/core/crypto.ts';
import { EnvelopeKind, openObject, sealObject, type EnvelopeKindName } from '../../agent/core/envelope.ts';
import { newMasterKey } from '../../agent/core/keyfile.ts';
import { anyBytes, decodes, fuzz, mutatedBytes } from './fuzz.ts';

/**
 * Sealed objects (manifests, index files, locks, history, pins, logs): openObject
 * either returns the payload or throws Cairn.Damaged. Mutations of a valid object
 * must all fail authentication; and since a host holding the key can seal any
 * plaintext it likes, the layer under the seal (codec byte, zstd body) is fuzzed
 * with correctly sealed junk too.
 */
const master = newMasterKey();
const kinds = Object.keys(EnvelopeKind) as EnvelopeKindName[];
const kind = fc.constantFrom(...kinds);
const name = fc.constantFrom('snapshots/00', 'index/ab', 'locks/0123456789abcdef-00000001', 'history/x');
const payload = fc.oneof(
  anyBytes(600),
  fc.string({ maxLength: 600 }).map((s) => Buffer.from(s.repeat(3))),
);

describe('fuzz: sealed objects (envelope)', () => {
  it('arbitrary bytes and byte mutations of a valid object never open, and fail only as Cairn.Damaged', () => {
    const input = fc.record({
      kind,
      name,
      data: fc.oneof(
        anyBytes(256),
        anyBytes(200).map((b) => Buffer.concat([Buffer.from('CRN\x01\x01', 'latin1'), b])),
        { weight: 4, arbitrary: mutatedBytes(fc.tuple(kind, name, payload).map(([k, n, p]) => sealObject(master, k, n, p))) },
      ),
    });
    fuzz(
      'envelope/bytes',
      input,
      ({ kind, name, data }) => {
        decodes(
          () => openObject(master, kind, name, data),
          ['Cairn.Damaged'],
          (out) => {
            // Only an unmodified valid object may open; a mutation that opens would be a forgery.
            assert.ok(Buffer.isBuffer(out));
            assert.fail(`a mutated or random object opened as ${kind} ${name}`);
          },
        );
      },
      1500,
    );
  });

  it('a valid object opens under its own kind and name only, to its payload', () => {
    fuzz(
      'envelope/roundtrip',
      fc.tuple(kind, kind, name, name, payload),
      ([k1, k2, n1, n2, p]) => {
        const sealed = sealObject(master, k1, n1, p);
        decodes(
          () => openObject(master, k2, n2, sealed),
          ['Cairn.Damaged'],
          (out) => {
            assert.ok(k1 === k2 && n1 === n2, 'opened under another kind or name');
            assert.deepEqual(out, p);
          },
        );
      },
      300,
    );
  });

  it('correctly sealed junk under the seal (codec byte, zstd body) fails only as Cairn.Damaged', () => {
    const plain = fc.oneof(
      anyBytes(300),
      mutatedBytes(payload.map((p) => Buffer.concat([Buffer.from([1]), zstdCompressSync(p)]))),
      mutatedBytes(payload.map((p) => Buffer.concat([Buffer.from([0]), p]))),
    );
    fuzz(
      'envelope/sealed-junk',
      fc.tuple(kind, plain),
      ([k, body]) => {
        const sealed = sealWithPlaintext(k, body);
        decodes(
          () => openObject(master, k, 'x', sealed),
          ['Cairn.Damaged'],
          (out) => assert.ok(Buffer.isBuffer(out)),
        );
      },
      1000,
    );
  });
});

/**
 * Seals `plaintext` as the envelope's inner bytes (codec byte first), as a hostile host with the key could:
 * the documented format (docs/repository-format.md) built with the code's own key derivation and AEAD.
 */
function sealWithPlaintext(kind: EnvelopeKindName, plaintext: Buffer): Buffer {
  const header = Buffer.concat([Buffer.from('CRN\x01', 'latin1'), Buffer.from([EnvelopeKind[kind]]), randomBytes(SALT_BYTES)]);
  const key = deriveKey(master, 'cairn/v1/object', header.subarray(5));
  return Buffer.concat([header, seal(key, plaintext, Buffer.concat([header, Buffer.from('x', 'utf8')]))]);
}
