import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { lockKey } from '../../agent/core/layout.ts';
import { MAX_LEASE_MS, lockRecordSchema, readLocks } from '../../agent/core/locks.ts';
import { Repository } from '../../agent/core/repository.ts';
import { MemoryStorage } from '../helpers/memory-storage.ts';
import { decodesAsync, fuzzAsync, jsonDocumentBytes, mutatedBytes } from './fuzz.ts';
import { holder, validLockRecord } from './records.ts';

/**
 * Lock records (locks/<holder>-<seq>), read by readLocks in a real repository: a
 * holder's latest record sealed around junk, mutated JSON or mutated sealed bytes.
 * Clean means Cairn.Damaged (a record that cannot be read); a record that reads
 * passes the schema and yields a lease state.
 */
async function setup(): Promise<{ storage: MemoryStorage; repo: Repository; name: string }> {
  const storage = new MemoryStorage();
  const repo = await Repository.init(storage, 'fuzz passphrase', { host: 'fuzz', user: 'fuzz' });
  return { storage, repo, name: lockKey(holder, 7) };
}

function inputs(repo: Repository, name: string): fc.Arbitrary<Buffer> {
  return fc.oneof(
    { weight: 3, arbitrary: jsonDocumentBytes(validLockRecord).map((plain) => repo.seal('lock', name, plain)) },
    mutatedBytes(validLockRecord.map((r) => repo.seal('lock', name, Buffer.from(JSON.stringify(r))))),
  );
}

describe('fuzz: lock records', () => {
  it('readLocks gives schema-valid lease states or fails as Cairn.Damaged', async () => {
    const { storage, repo, name } = await setup();
    await fuzzAsync(
      'locks/read',
      inputs(repo, name),
      async (sealed) => {
        await storage.put(name, sealed);
        try {
          await decodesAsync(
            () => readLocks(repo),
            ['Cairn.Damaged'],
            (states) => {
              assert.equal(states.length, 1);
              for (const s of states) {
                assert.ok(lockRecordSchema.safeParse(s.record).success);
                assert.ok(['active', 'expired', 'released'].includes(s.state));
              }
            },
          );
        } finally {
          await storage.delete(name);
        }
      },
      300,
    );
  });

  it('a lock record that reads has a lease that ends (never later than its storage time plus the maximum lease)', async () => {
    const { storage, repo, name } = await setup();
    await fuzzAsync(
      'locks/expiry',
      inputs(repo, name),
      async (sealed) => {
        await storage.put(name, sealed);
        try {
          await decodesAsync(
            () => readLocks(repo),
            ['Cairn.Damaged'],
            (states) => {
              for (const s of states) {
                assert.ok(Number.isFinite(s.effectiveExpiry), `lease of ${JSON.stringify(s.record)} never ends`);
                assert.ok(s.effectiveExpiry <= s.modified + MAX_LEASE_MS);
              }
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
