import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { Lease, retryDelayMs } from '../../../agent/core/locks.ts';
import { Repository } from '../../../agent/core/repository.ts';
import { fileRepo, PASSPHRASE, tempDir } from '../../helpers/repo.ts';

/**
 * Operations that wait for the lock (`--lock-wait`) and meet must not keep meeting. With a fixed
 * one-second retry, three of them started together in one process (a backup, a forget and a prune,
 * as the documented units and cron lines start them) wrote their records at the same moments on
 * every attempt, each saw the others and withdrew, for 40 s and 115 attempts in a measured run.
 */
describe('lock contention', () => {
  it('retries after a random time under a ceiling that grows from 200 ms to 2 s', () => {
    assert.equal(
      retryDelayMs(0, () => 0),
      50,
    );
    assert.equal(
      retryDelayMs(0, () => 0.999),
      50 + 199,
    );
    assert.equal(
      retryDelayMs(3, () => 0.999),
      50 + 1598,
    );
    assert.equal(
      retryDelayMs(4, () => 0.999),
      50 + 1998,
    );
    assert.equal(
      retryDelayMs(60, () => 0.999),
      50 + 1998,
      'the ceiling stays at 2 s',
    );
    const draws = new Set(Array.from({ length: 20 }, () => retryDelayMs(5)));
    assert.ok(draws.size > 10, `random sleeps, not one interval: ${[...draws].join(', ')}`);
  });

  let work: Awaited<ReturnType<typeof tempDir>>;
  before(async () => {
    work = await tempDir('lock-contention');
  });
  after(() => work.remove());

  it('three waiting operations started at the same moment all get the lock, round after round', async () => {
    const repo = await Repository.init(fileRepo(`${work.path}/repo`), PASSPHRASE, { host: 'h', user: 'u' });
    const who = { host: 'h', user: 'u' };
    const order: string[] = [];
    const take = async (operation: string, exclusive: boolean): Promise<void> => {
      const lease = await Lease.acquire(repo, { operation, exclusive, who, waitMs: 20_000 });
      order.push(operation);
      await lease.release();
    };
    for (let round = 0; round < 4; round++) {
      // On the file backend the three records are written and listed through the thread pool, so
      // all three attempts overlap and conflict; each then withdraws and waits to retry.
      await Promise.all([take('backup', false), take('forget', true), take('prune', true)]);
    }
    assert.equal(order.length, 12);
    for (const operation of ['backup', 'forget', 'prune']) assert.equal(order.filter((o) => o === operation).length, 4);
  });
});
