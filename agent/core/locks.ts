import { randomBytes } from 'node:crypto';
import { z } from 'zod';
import { CairnError, errorMessage } from './errors.ts';
import { LOCKS_PREFIX } from './layout.ts';
import type { Repository, Who } from './repository.ts';
import { mapLimit } from './concurrency.ts';

/**
 * Lease locks (docs/locks-and-gc.md). A holder never updates an object: each
 * lease period is a new record `locks/<holder>-<seq>`, a refresh writes the
 * next one, and a release writes a final record with `released: true`. A
 * holder's latest record says whether it is active. Readers cap every lease at
 * MAX_LEASE from the record's own time, so a forged or buggy never-expiring
 * record cannot block the repository for longer than that.
 */
export const lockRecordSchema = z.object({
  holder: z.string().regex(/^[0-9a-f]{16}$/),
  seq: z.number().int().min(0),
  operation: z.string(),
  exclusive: z.boolean(),
  host: z.string(),
  user: z.string(),
  pid: z.number().int(),
  started: z.string(),
  time: z.string(),
  expires: z.string(),
  released: z.boolean(),
  /** Set when another operation closed this lease after it expired (its holder was presumed dead). */
  releasedBy: z.string().optional(),
});
export type LockRecord = z.infer<typeof lockRecordSchema>;

export const DEFAULT_LEASE_MS = 5 * 60_000;
export const MAX_LEASE_MS = 30 * 60_000;

export interface LockState {
  record: LockRecord;
  /** Active (not released, not expired), expired (holder presumably dead) or released. */
  state: 'active' | 'expired' | 'released';
  effectiveExpiry: number;
  /** Every object of this holder, for cleanup. */
  keys: string[];
}

export async function readLocks(repo: Repository, now = Date.now()): Promise<LockState[]> {
  const keys: string[] = [];
  for await (const object of repo.storage.list(LOCKS_PREFIX)) keys.push(object.key);
  const byHolder = new Map<string, string[]>();
  for (const key of keys) {
    const match = /^locks\/([0-9a-f]{16})-(\d{8})$/.exec(key);
    if (!match) continue;
    const list = byHolder.get(match[1] as string) ?? [];
    list.push(key);
    byHolder.set(match[1] as string, list);
  }
  const states: LockState[] = [];
  await mapLimit(byHolder.values(), 16, async (holderKeys) => {
    holderKeys.sort();
    const latest = holderKeys[holderKeys.length - 1] as string;
    let record: LockRecord;
    try {
      record = lockRecordSchema.parse(JSON.parse(repo.unseal('lock', latest, await repo.storage.get(latest)).toString('utf8')));
    } catch (error) {
      if (error instanceof CairnError && error.code === 'Cairn.NotFound') return; // cleared while we listed
      throw new CairnError('Cairn.Damaged', `lock record ${latest} cannot be read: ${errorMessage(error)}`, {
        hint: 'remove it with `cairn unlock --all`',
        cause: error,
      });
    }
    const effectiveExpiry = Math.min(Date.parse(record.expires), Date.parse(record.time) + MAX_LEASE_MS);
    const state = record.released ? 'released' : effectiveExpiry <= now ? 'expired' : 'active';
    states.push({ record, state, effectiveExpiry, keys: holderKeys });
  });
  return states.sort((a, b) => a.record.started.localeCompare(b.record.started));
}

export interface AcquireOptions {
  operation: string;
  exclusive: boolean;
  who: Who;
  leaseMs?: number;
  /** Keep trying this long while the repository is locked. */
  waitMs?: number;
  /** Told about each stale lock (a dead holder) that this acquisition ignores. */
  onTakeover?: (stale: LockRecord) => void | Promise<void>;
  /**
   * The time in milliseconds since the epoch (Date.now by default). Every lease
   * decision reads it (record times, expiry of other holders, the wait deadline),
   * so a test can advance time past a lease instead of waiting it out.
   */
  now?: (() => number) | undefined;
}

/** A held lock; refreshed in the background until released. */
export class Lease {
  readonly holder: string;
  private readonly repo: Repository;
  private readonly options: AcquireOptions;
  private readonly leaseMs: number;
  private readonly now: () => number;
  private readonly started: string;
  private seq = 0;
  private expires = 0;
  private timer: NodeJS.Timeout | undefined;
  private refreshing: Promise<void> | undefined;
  private lostError: unknown;
  private released = false;

  private constructor(repo: Repository, options: AcquireOptions) {
    this.repo = repo;
    this.options = options;
    this.leaseMs = options.leaseMs ?? DEFAULT_LEASE_MS;
    this.now = options.now ?? ((): number => Date.now());
    this.holder = randomBytes(8).toString('hex');
    this.started = new Date(this.now()).toISOString();
  }

  static async acquire(repo: Repository, options: AcquireOptions): Promise<Lease> {
    const now = options.now ?? ((): number => Date.now());
    const deadline = now() + (options.waitMs ?? 0);
    for (;;) {
      const lease = new Lease(repo, options);
      await lease.write(false);
      const conflict = await lease.findConflict();
      if (!conflict) {
        lease.timer = setInterval(() => void lease.refresh(), Math.max(250, Math.floor(lease.leaseMs / 3)));
        lease.timer.unref();
        return lease;
      }
      await lease.release();
      if (now() >= deadline) {
        const c = conflict.record;
        throw new CairnError(
          'Cairn.Locked',
          `the repository is locked: ${c.exclusive ? 'exclusive' : 'shared'} lock for ${c.operation} by ${c.user}@${c.host} pid ${c.pid} since ${c.started}`,
          {
            hint: `wait until it ends (its lease runs out at ${new Date(conflict.effectiveExpiry).toISOString()} if that process is gone), pass --lock-wait, or remove a lock you know is dead with \`cairn unlock\``,
          },
        );
      }
      await new Promise((resolve) => setTimeout(resolve, Math.min(1000, Math.max(50, deadline - now()))));
    }
  }

  /** Throws if the lease could not be kept: the caller must not commit anything after losing it. */
  assertHeld(marginMs = 0): void {
    if (this.lostError !== undefined) {
      throw new CairnError('Cairn.Locked', `lost the repository lock: ${errorMessage(this.lostError)}; nothing was committed`, {
        cause: this.lostError,
      });
    }
    if (this.now() + marginMs >= this.expires) {
      throw new CairnError(
        'Cairn.Locked',
        'the repository lock expired before the operation could commit (the process was stalled); nothing was committed',
        {
          hint: 'run the operation again',
        },
      );
    }
  }

  async refresh(): Promise<void> {
    if (this.released || this.refreshing) return;
    this.refreshing = this.write(false)
      .catch((error: unknown) => {
        this.lostError ??= error;
      })
      .finally(() => {
        this.refreshing = undefined;
      });
    await this.refreshing;
  }

  async release(): Promise<void> {
    if (this.released) return;
    this.released = true;
    if (this.timer) clearInterval(this.timer);
    await this.refreshing;
    await this.write(true);
  }

  private async write(released: boolean): Promise<void> {
    const now = this.now();
    const record: LockRecord = {
      holder: this.holder,
      seq: this.seq,
      operation: this.options.operation,
      exclusive: this.options.exclusive,
      host: this.options.who.host,
      user: this.options.who.user,
      pid: process.pid,
      started: this.started,
      time: new Date(now).toISOString(),
      expires: new Date(now + this.leaseMs).toISOString(),
      released,
    };
    const name = `${LOCKS_PREFIX}${this.holder}-${String(this.seq).padStart(8, '0')}`;
    this.seq++;
    await this.repo.storage.put(name, this.repo.seal('lock', name, Buffer.from(JSON.stringify(record))), { ifAbsent: true });
    if (!released) this.expires = now + this.leaseMs;
  }

  /**
   * Closes a dead holder's lease with the next record in its own sequence, so
   * later operations see it released. If the holder was only stalled, its next
   * refresh finds that name taken and it stops before committing anything.
   */
  private async closeStale(stale: LockRecord): Promise<void> {
    const name = `${LOCKS_PREFIX}${stale.holder}-${String(stale.seq + 1).padStart(8, '0')}`;
    const record: LockRecord = {
      ...stale,
      seq: stale.seq + 1,
      time: new Date(this.now()).toISOString(),
      released: true,
      releasedBy: this.holder,
    };
    try {
      await this.repo.storage.put(name, this.repo.seal('lock', name, Buffer.from(JSON.stringify(record))), { ifAbsent: true });
    } catch (error) {
      if (error instanceof CairnError && error.code === 'Cairn.AlreadyExists') return; // it refreshed or someone else closed it
      throw error;
    }
    await this.options.onTakeover?.(stale);
  }

  private async findConflict(): Promise<LockState | undefined> {
    const states = await readLocks(this.repo, this.now());
    let conflict: LockState | undefined;
    for (const s of states) {
      if (s.record.holder === this.holder) continue;
      if (s.state === 'expired') {
        await this.closeStale(s.record);
        continue;
      }
      if (s.state === 'active' && (this.options.exclusive || s.record.exclusive)) conflict ??= s;
    }
    return conflict;
  }
}
