import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import fc from 'fast-check';
import { hmacSeal, readLease, runKey, runLeaseSchema } from '../../agent/core/run-lease.ts';
import { MemoryStorage } from '../helpers/memory-storage.ts';
import { anyBytes, decodesAsync, fuzzAsync, jsonDocumentBytes, mutatedBytes } from './fuzz.ts';

/**
 * The control plane's sealed records (run leases, agent/core/run-lease.ts): the seal
 * in hex, a newline, the JSON it seals. `readLease` is the decoder; its contract is
 * stronger than a clean error: a record that is absent, unsealed, sealed by another
 * key, sealed around junk or not a lease reads as undefined (never trusted, never
 * thrown), and one that reads passes the lease schema and is exactly what was sealed.
 *
 * Inputs: arbitrary bytes, junk and mutated JSON sealed correctly (as the control
 * plane's key would), the same under another key, and valid records mutated byte-wise.
 */
const iso = fc.date({ noInvalidDate: true }).map((d) => d.toISOString());
const validLease = fc.record(
  {
    planId: fc.string({ maxLength: 12 }),
    executionId: fc.string({ maxLength: 40 }),
    runId: fc.string({ maxLength: 20 }),
    scheduledTime: iso,
    acquired: iso,
    expires: iso,
  },
  { requiredKeys: ['planId', 'executionId', 'runId', 'acquired', 'expires'] },
);

describe('fuzz: sealed control records', () => {
  it('readLease gives a schema-valid lease exactly as sealed, or undefined; it never throws on content', async () => {
    const storage = new MemoryStorage();
    const key = runKey('2026-12-04T12:00:00Z');
    const seal = hmacSeal(randomBytes(32));
    const other = hmacSeal(randomBytes(32));
    const signed = (by: typeof seal, json: Buffer): Buffer =>
      Buffer.from(`${by.sign(key, json.toString('utf8'))}\n${json.toString('utf8')}`);
    const input = fc.oneof(
      anyBytes(512),
      { weight: 3, arbitrary: jsonDocumentBytes(validLease).map((json) => signed(seal, json)) },
      jsonDocumentBytes(validLease).map((json) => signed(other, json)),
      { weight: 2, arbitrary: mutatedBytes(validLease.map((l) => signed(seal, Buffer.from(JSON.stringify(l))))) },
    );
    await fuzzAsync(
      'run-lease/read',
      input,
      async (data) => {
        await storage.put(key, data);
        try {
          await decodesAsync(
            () => readLease(storage, key, seal),
            [],
            (lease) => {
              if (lease === undefined) return;
              assert.ok(runLeaseSchema.safeParse(lease).success);
              // Only what the key sealed is trusted: the JSON after the first newline, verified.
              const text = data.toString('utf8');
              const json = text.slice(text.indexOf('\n') + 1);
              assert.ok(seal.verify(key, json, text.slice(0, text.indexOf('\n'))), 'a lease read that the key did not seal');
            },
          );
        } finally {
          await storage.delete(key);
        }
      },
      1000,
    );
  });
});
