import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import fc from 'fast-check';
import { SALT_BYTES, deriveKey, seal } from '../../agent/core/crypto.ts';
import { damageMarkerSchema, openMarker, readDamage, sealMarker, type DamageMarker } from '../../agent/core/damage.ts';
import { listGenerations, newGenerationName, openGeneration, sealGeneration } from '../../agent/core/gc-generation.ts';
import { authenticatesAnchor, sealKeyCheck } from '../../agent/core/key-check.ts';
import { damageKey, gcGenerationKey, gcSweptKey } from '../../agent/core/layout.ts';
import { Repository } from '../../agent/core/repository.ts';
import { MemoryStorage } from '../helpers/memory-storage.ts';
import { anyBytes, decodes, decodesAsync, fuzz, fuzzAsync, jsonDocumentBytes, mutatedBytes } from './fuzz.ts';

/**
 * The repository records added with two-phase GC, damage markers and key anchors
 * (docs/reliability.md, "Fuzzing"):
 *
 * - GC generation records (gc/<generation>, gc/<generation>.swept): `openGeneration`
 *   (clean: Cairn.Damaged) and `listGenerations` in a real repository, which must
 *   skip an unreadable record with a warning and return only well-formed generations;
 * - damage markers (damage/<id>): `openMarker` (clean: Cairn.Damaged; a marker that
 *   opens passes its schema and is named for its id) and `readDamage`, which reports
 *   an unreadable marker in place and never throws on content;
 * - the key-check object: `authenticatesAnchor` answers true or false, never throws,
 *   and true only for a record sealed under the key that names this repository.
 *
 * Inputs: arbitrary bytes, mutated sealed records, and junk or mutated JSON sealed
 * correctly under the real key (a host with the key can seal anything).
 */
const hex64 = fc.uint8Array({ minLength: 32, maxLength: 32 }).map((a) => Buffer.from(a).toString('hex'));
const GENERATION = newGenerationName(new Date('2026-12-04T12:00:00Z'));
const GENERATION_NAME = /^[0-9]{8}T[0-9]{6}Z-[0-9a-f]{16}$/;

const validGeneration = fc.record({
  version: fc.constant(1),
  generation: fc.constant(GENERATION),
  created: fc.date({ noInvalidDate: true }).map((d) => d.toISOString()),
  by: fc.record({ host: fc.string({ maxLength: 10 }), user: fc.string({ maxLength: 10 }), operation: fc.constant('prune') }),
  seen: fc.array(hex64, { maxLength: 3 }),
  packs: fc.array(hex64, { maxLength: 3 }),
  pieces: fc.array(fc.uint8Array({ minLength: 32, maxLength: 32 }), { maxLength: 4 }).map((ids) => Buffer.concat(ids).toString('base64')),
});

const MARKER_ID = randomBytes(32).toString('hex');
const validMarker: fc.Arbitrary<DamageMarker> = fc.record({
  version: fc.constant(1 as const),
  id: fc.constant(MARKER_ID),
  time: fc.date({ noInvalidDate: true }).map((d) => d.toISOString()),
  by: fc.record({ host: fc.string({ maxLength: 10 }), user: fc.string({ maxLength: 10 }) }),
  tool: fc.constant('cairn 0.1.0'),
  source: fc.constantFrom('verify', 'drill'),
  packs: fc.array(fc.record({ pack: hex64, pieces: fc.array(hex64, { maxLength: 3 }), problem: fc.string({ maxLength: 20 }) }), {
    maxLength: 3,
  }),
  snapshots: fc.array(hex64, { maxLength: 3 }),
});

/** Seals any plaintext as a damage marker (the format of sealMarker, which only takes a valid marker). */
function sealMarkerBytes(master: Buffer, repositoryId: string, name: string, plain: Buffer): Buffer {
  const salt = randomBytes(SALT_BYTES);
  const body = seal(deriveKey(master, 'cairn/v1/damage', salt), plain, Buffer.from(`cairn/v1/damage|${repositoryId}|${name}`, 'utf8'));
  return Buffer.concat([Buffer.from('CDM\x01', 'latin1'), salt, body]);
}

async function setup(): Promise<{ storage: MemoryStorage; repo: Repository }> {
  const storage = new MemoryStorage();
  const repo = await Repository.init(storage, 'fuzz passphrase', { host: 'fuzz', user: 'fuzz' });
  return { storage, repo };
}

function generationInputs(repo: Repository, name: string): fc.Arbitrary<Buffer> {
  return fc.oneof(
    anyBytes(512),
    { weight: 3, arbitrary: jsonDocumentBytes(validGeneration).map((plain) => sealGeneration(repo, name, plain)) },
    { weight: 2, arbitrary: mutatedBytes(validGeneration.map((g) => sealGeneration(repo, name, Buffer.from(JSON.stringify(g))))) },
  );
}

describe('fuzz: GC generation records', () => {
  it('openGeneration opens only what was sealed under its name, or fails as Cairn.Damaged', async () => {
    const { repo } = await setup();
    const name = gcGenerationKey(GENERATION);
    const original = Buffer.from(JSON.stringify({ generation: GENERATION }));
    const sealedOnce = sealGeneration(repo, name, original);
    fuzz(
      'gc-generation/open',
      fc.oneof(anyBytes(256), { weight: 3, arbitrary: mutatedBytes(fc.constant(sealedOnce)) }),
      (data) => {
        decodes(
          () => openGeneration(repo, name, data),
          ['Cairn.Damaged'],
          (plain) => {
            // GCM: a mutation never authenticates, so only the untouched record opens, to its plaintext.
            assert.ok(data.equals(sealedOnce), 'a mutated generation record opened');
            assert.ok(plain.equals(original));
          },
        );
      },
      1000,
    );
  });

  it('listGenerations skips an unreadable record with a warning and returns only well-formed generations', async () => {
    const { storage, repo } = await setup();
    const name = gcGenerationKey(GENERATION);
    const sweptName = gcSweptKey(GENERATION);
    await fuzzAsync(
      'gc-generation/list',
      fc.tuple(generationInputs(repo, name), fc.oneof(fc.constant(undefined), anyBytes(64), generationInputs(repo, sweptName))),
      async ([mark, swept]) => {
        await storage.put(name, mark);
        if (swept) await storage.put(sweptName, swept);
        const warnings: string[] = [];
        try {
          await decodesAsync(
            () => listGenerations(repo, (w) => warnings.push(w)),
            [],
            (found) => {
              assert.ok(
                found.length + warnings.length === 1,
                `one record gives one generation or one warning: ${found.length}, ${warnings.length}`,
              );
              for (const g of found) {
                assert.equal(g.generation, GENERATION);
                assert.match(g.generation, GENERATION_NAME);
                for (const id of [...g.seen, ...g.packs]) assert.match(id, /^[0-9a-f]{64}$/);
                for (const piece of g.pieces) assert.equal(piece.length, 32);
                assert.equal(typeof g.created, 'string');
                assert.ok(Number.isFinite(g.marked));
              }
            },
          );
        } finally {
          await storage.delete(name);
          await storage.delete(sweptName);
        }
      },
      300,
    );
  });
});

describe('fuzz: damage markers', () => {
  it('openMarker returns a schema-valid marker named for its id, or fails as Cairn.Damaged', async () => {
    const { repo } = await setup();
    const master = repo.masterKey();
    const name = damageKey(MARKER_ID);
    const input = fc.oneof(
      anyBytes(512),
      { weight: 3, arbitrary: jsonDocumentBytes(validMarker).map((plain) => sealMarkerBytes(master, repo.id, name, plain)) },
      { weight: 2, arbitrary: mutatedBytes(validMarker.map((m) => sealMarker(master, repo.id, m))) },
    );
    fuzz(
      'damage/open',
      input,
      (data) => {
        decodes(
          () => openMarker(master, repo.id, name, data),
          ['Cairn.Damaged'],
          (marker) => {
            assert.ok(damageMarkerSchema.safeParse(marker).success);
            assert.equal(marker.id, MARKER_ID);
          },
        );
      },
      1000,
    );
  });

  it('readDamage never throws on a marker’s content: an unreadable one is reported in place', async () => {
    const { storage, repo } = await setup();
    const master = repo.masterKey();
    const name = damageKey(MARKER_ID);
    const input = fc.oneof(
      anyBytes(256),
      { weight: 3, arbitrary: jsonDocumentBytes(validMarker).map((plain) => sealMarkerBytes(master, repo.id, name, plain)) },
      mutatedBytes(validMarker.map((m) => sealMarker(master, repo.id, m))),
    );
    await fuzzAsync(
      'damage/read',
      input,
      async (data) => {
        await storage.put(name, data);
        const warnings: string[] = [];
        try {
          await decodesAsync(
            () => readDamage(repo, (w) => warnings.push(w)),
            [],
            (known) => {
              assert.equal(known.unreadable.length, warnings.length);
              assert.ok(known.unreadable.every((u) => u.name === name));
            },
          );
        } finally {
          await storage.delete(name);
        }
      },
      300,
    );
  });
});

describe('fuzz: the key-check object', () => {
  it('authenticatesAnchor answers, never throws, and is true only for this repository’s record under this key', async () => {
    const { repo } = await setup();
    const master = repo.masterKey();
    const other = randomBytes(32);
    const record = fc.record({
      version: fc.constant(1),
      repository: fc.constantFrom(repo.id, randomBytes(32).toString('hex')),
      created: fc.date({ noInvalidDate: true }).map((d) => d.toISOString()),
    });
    const keyCheckSeal = (key: Buffer, plain: Buffer): Buffer =>
      seal(deriveKey(key, 'cairn/v1/key-check'), plain, Buffer.from(`cairn/v1/key-check|${repo.id}`, 'utf8'));
    const input = fc.oneof(
      anyBytes(256).map((data) => ({ data, expect: false })),
      // Sealed correctly around junk or mutated JSON: true exactly when it parses to an object naming this repository.
      {
        weight: 3,
        arbitrary: jsonDocumentBytes(record).map((plain) => ({
          data: keyCheckSeal(master, plain),
          expect: namesRepository(plain, repo.id),
        })),
      },
      // Sealed under another key: never true.
      jsonDocumentBytes(record).map((plain) => ({ data: keyCheckSeal(other, plain), expect: false })),
      // A real record mutated: true only when the mutation left it as it was.
      {
        weight: 2,
        arbitrary: fc
          .constant(sealKeyCheck(master, repo.id, '2026-12-04T00:00:00.000Z'))
          .chain((real) => mutatedBytes(fc.constant(real)).map((data) => ({ data, expect: data.equals(real) }))),
      },
    );
    fuzz(
      'key-check/authenticate',
      input,
      ({ data, expect }) => {
        let answer: boolean;
        try {
          answer = authenticatesAnchor(master, { name: 'key-check', kind: 'key-check', data }, repo.id);
        } catch (error) {
          assert.fail(`authenticatesAnchor threw: ${String(error)}`);
        }
        assert.equal(answer, expect);
      },
      1000,
    );
  });
});

function namesRepository(plain: Buffer, id: string): boolean {
  try {
    const value = JSON.parse(plain.toString('utf8')) as unknown;
    return typeof value === 'object' && value !== null && (value as { repository?: unknown }).repository === id;
  } catch {
    return false;
  }
}
