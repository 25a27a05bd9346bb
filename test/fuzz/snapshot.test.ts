import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { snapshotKey } from '../../agent/core/layout.ts';
import { Repository } from '../../agent/core/repository.ts';
import { decodeSnapshot, snapshotSchema } from '../../agent/core/snapshot.ts';
import { MemoryStorage } from '../helpers/memory-storage.ts';
import { assertClean, decodes, decodesAsync, fuzz, fuzzAsync, jsonDocumentBytes, mutatedBytes } from './fuzz.ts';
import { validSnapshot } from './records.ts';

/**
 * Manifests (snapshots/<id>): decodeSnapshot on plaintext, and Repository.readSnapshot
 * on sealed manifests in a real repository (the path every command takes). Clean
 * means Cairn.Damaged; a manifest that reads passes its schema and carries the id it
 * was asked for.
 */
describe('fuzz: manifests', () => {
  it('plaintext: arbitrary bytes, JSON and mutations of valid manifests decode to schema-valid manifests or fail as Cairn.Damaged', () => {
    fuzz(
      'snapshot/decode',
      jsonDocumentBytes(validSnapshot),
      (data) => {
        decodes(
          () => decodeSnapshot(data, 'fuzz'),
          ['Cairn.Damaged'],
          (snapshot) => assert.ok(snapshotSchema.safeParse(snapshot).success),
        );
      },
      1500,
    );
  });

  it('sealed in a repository: readSnapshot returns the manifest asked for or fails as Cairn.Damaged', async () => {
    const storage = new MemoryStorage();
    const repo = await Repository.init(storage, 'fuzz passphrase', { host: 'fuzz', user: 'fuzz' });
    const id = 'ab'.repeat(32);
    const name = snapshotKey(id);
    const input = fc.oneof(
      {
        weight: 3,
        arbitrary: jsonDocumentBytes(validSnapshot.map((s) => ({ ...s, id }))).map((plain) => repo.seal('snapshot', name, plain)),
      },
      mutatedBytes(validSnapshot.map((s) => repo.seal('snapshot', name, Buffer.from(JSON.stringify({ ...s, id }))))),
    );
    await fuzzAsync(
      'snapshot/read-sealed',
      input,
      async (sealed) => {
        await storage.put(name, sealed);
        try {
          await decodesAsync(
            () => repo.readSnapshot(id),
            ['Cairn.Damaged'],
            (snapshot) => {
              assert.ok(snapshotSchema.safeParse(snapshot).success);
              assert.equal(snapshot.id, id);
            },
          );
        } finally {
          await storage.delete(name);
        }
      },
      300,
    );
  });

  it('a manifest whose time or endTime is not a UTC ISO time is Cairn.Damaged', () => {
    const valid = fc.sample(validSnapshot, { numRuns: 1, seed: 3 })[0];
    assert.ok(valid);
    assert.doesNotThrow(() => decodeSnapshot(Buffer.from(JSON.stringify(valid)), 'valid'));
    for (const field of ['time', 'endTime']) {
      for (const bad of ['', 'yesterday', '2026-02-30T00:00:00.000Z', '2026-01-01T00:00:00+01:00', '2026-01-01', 1767225600000]) {
        assert.throws(
          () => decodeSnapshot(Buffer.from(JSON.stringify({ ...valid, [field]: bad })), 'bad time'),
          (error: unknown) => {
            assertClean(error, ['Cairn.Damaged']);
            return true;
          },
        );
      }
    }
  });

  it('a manifest that decodes has start and end times retention can order by', () => {
    fuzz(
      'snapshot/times',
      jsonDocumentBytes(validSnapshot),
      (data) => {
        decodes(
          () => decodeSnapshot(data, 'fuzz'),
          ['Cairn.Damaged'],
          (snapshot) => {
            assert.ok(Number.isFinite(Date.parse(snapshot.time)), `time ${JSON.stringify(snapshot.time)} is not a date`);
            assert.ok(Number.isFinite(Date.parse(snapshot.endTime)), `endTime ${JSON.stringify(snapshot.endTime)} is not a date`);
          },
        );
      },
      1500,
    );
  });
});
