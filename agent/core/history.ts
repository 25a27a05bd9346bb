import { randomBytes } from 'node:crypto';
import { z } from 'zod';
import { mapLimit } from './concurrency.ts';
import { errorMessage } from './errors.ts';
import { HISTORY_PREFIX, historyKey } from './layout.ts';
import type { Repository, Who } from './repository.ts';

/**
 * The audit trail: one small encrypted object per event under history/, never
 * rewritten. Names start with the time, so a listing sorts into order; a
 * per-process sequence number keeps a command's own events in order within
 * one millisecond.
 */
export const historyEventSchema = z
  .object({
    time: z.string(),
    event: z.string(),
    host: z.string(),
    user: z.string(),
    tool: z.string(),
  })
  .loose();
export type HistoryEvent = z.infer<typeof historyEventSchema>;

const run = randomBytes(4).toString('hex');
let sequence = 0;

export async function recordEvent(
  repo: Repository,
  who: Who,
  tool: string,
  event: string,
  details: Record<string, unknown> = {},
): Promise<void> {
  const time = new Date();
  const stamp = time.toISOString().replace(/[-:]/g, '').replace('.', '');
  const name = historyKey(stamp, run, sequence++);
  const record: HistoryEvent = { time: time.toISOString(), event, host: who.host, user: who.user, tool, ...details };
  await repo.storage.put(name, repo.seal('history', name, Buffer.from(JSON.stringify(record))), { ifAbsent: true });
}

/** Every event, oldest first; unreadable records are reported in place, not skipped silently. */
export async function readHistory(repo: Repository, concurrency = 16): Promise<HistoryEvent[]> {
  const names: string[] = [];
  for await (const object of repo.storage.list(HISTORY_PREFIX)) names.push(object.key);
  names.sort();
  const events = new Array<HistoryEvent>(names.length);
  await mapLimit(names.keys(), concurrency, async (i) => {
    const name = names[i] as string;
    try {
      events[i] = historyEventSchema.parse(JSON.parse(repo.unseal('history', name, await repo.storage.get(name)).toString('utf8')));
    } catch (error) {
      events[i] = { time: '', event: 'unreadable', host: '', user: '', tool: '', object: name, error: errorMessage(error) };
    }
  });
  return events;
}
