import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { historyEventSchema, readHistory, recordEvent } from '../../agent/core/history.ts';
import { Repository } from '../../agent/core/repository.ts';
import { MemoryStorage } from '../helpers/memory-storage.ts';
import { fuzzAsync, jsonDocumentBytes, mutatedBytes } from './fuzz.ts';

/**
 * History records (history/…), read by readHistory in a real repository. Its
 * contract is stronger than "clean error": an unreadable record is reported in
 * place as an `unreadable` event, so reading history never fails on content; every
 * event it returns passes the event schema.
 */
const validEvent = fc.record({
  time: fc.date({ noInvalidDate: true }).map((d) => d.toISOString()),
  event: fc.constantFrom('backup', 'forget', 'prune', 'key-add'),
  host: fc.string({ maxLength: 10 }),
  user: fc.string({ maxLength: 10 }),
  tool: fc.constant('cairn 0.1.0'),
  snapshot: fc.string({ maxLength: 64 }),
});

describe('fuzz: history records', () => {
  it('readHistory never throws on a record’s content and returns schema-valid events', async () => {
    const storage = new MemoryStorage();
    const repo = await Repository.init(storage, 'fuzz passphrase', { host: 'fuzz', user: 'fuzz' });
    await recordEvent(repo, { host: 'fuzz', user: 'fuzz' }, 'cairn test', 'init');
    const real = [...storage.objects.keys()].find((k) => k.startsWith('history/')) as string;
    const name = `${real.slice(0, -6)}999999`;
    const input = fc.oneof(
      { weight: 3, arbitrary: jsonDocumentBytes(validEvent).map((plain) => repo.seal('history', name, plain)) },
      mutatedBytes(validEvent.map((e) => repo.seal('history', name, Buffer.from(JSON.stringify(e))))),
    );
    await fuzzAsync(
      'history/read',
      input,
      async (sealed) => {
        await storage.put(name, sealed);
        try {
          const events = await readHistory(repo);
          assert.equal(events.length, 2);
          for (const e of events) assert.ok(historyEventSchema.safeParse(e).success, JSON.stringify(e));
        } finally {
          await storage.delete(name);
        }
      },
      300,
    );
  });
});
