// One unit: the lock record's format, how readers judge a record by the storage's clock, and how a holder writes,
// refreshes and releases its records are one protocol; apart, one side could stop matching the other unseen.
import { randomBytes } from 'node:crypto';
import { z } from 'zod';
import { AlreadyExistsError, CairnError, errorMessage } from './errors.ts';
import { LOCKS_PREFIX, lockKey } from './layout.ts';
import type { Repository, Who } from './repository.ts';
import type { ObjectInfo } from './storage.ts';
import { mapLimit } from './concurrency.ts';

/**
 * Lease locks (docs/locks-and-gc.md). A holder never updates an object: each
 * lease period is a new record `locks/<holder>-<seq>`, a refresh writes the
 * next one, and a release writes a final record with `released: true`. A
 * holder's latest readable record says whether it is active.
 *
 * A lease's age is judged by the storage's clock alone: storage-now minus the
 * `modified` time the storage gave the holder's latest record. Storage-now is
 * the `modified` of an object the reader itself has just written (its own
 * lock record, or a clock probe), so neither the writer's timestamps nor the
 * reader's clock can make a live lease look expired or a dead one look live.
 * The record's own `time`/`expires` say only how long the lease is, capped at
 * MAX_LEASE_MS.
 */
const isoTime = z.string().refine((s) => Number.isFinite(Date.parse(s)), 'not a time');

export const lockRecordSchema = z.object({
  holder: z.string().regex(/^[0-9a-f]{16}$/),
  seq: z.number().int().min(0),
  operation: z.string(),
  exclusive: z.boolean(),
  host: z.string(),
  user: z.string(),
  pid: z.number().int(),
  started: isoTime,
  time: isoTime,
  expires: isoTime,
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
  /** When the lease runs out, by the storage's clock: its latest record's `modified` plus its lease length. */
  effectiveExpiry: number;
  /** When the storage stored the record that decides (its `modified`). */
  modified: number;
  /** Every object of this holder, for cleanup (unreadable ones included). */
  keys: string[];
}

/** A lock record that cannot be read (junk, truncated, sealed under another key): it blocks no one. */
export interface UnreadableLock {
  key: string;
  /** Its modification time by the storage's clock. */
  modified: number;
  error: string;
  /** One maximum lease of storage time has passed since it was stored: `unlock` removes it. */
  expired: boolean;
}

export interface LockTable {
  /** One per holder with a readable record, ordered by start. */
  states: LockState[];
  unreadable: UnreadableLock[];
  /** The storage's current time the states were judged by. */
  storageNow: number;
  /** Every object the listing found under `locks/`, by key (names that are no lock record's included). */
  objects: ReadonlyMap<string, ObjectInfo>;
}

export interface ReadLocksOptions {
  /**
   * The storage's current time (epoch ms), or the key of an object the reader
   * has just written, whose listed `modified` is then taken as storage-now.
   * Without either, the newest `modified` among the lock objects (a time no
   * later than storage-now: leases can then only look younger than they are).
   */
  storageNow?: number | undefined;
  clockKey?: string | undefined;
}

const LOCK_NAME = /^locks\/([0-9a-f]{16})-(\d{8})$/;

/** Whether `key` is named like a lock record (`locks/<16 hex>-<8 digits>`). */
export function isLockRecordName(key: string): boolean {
  return LOCK_NAME.test(key);
}

/** Every lock, judged by the storage's clock; unreadable records are returned beside them, never thrown. */
export async function readLockTable(repo: Repository, options: ReadLocksOptions = {}): Promise<LockTable> {
  const objects = new Map<string, ObjectInfo>();
  for await (const object of repo.storage.list(LOCKS_PREFIX)) objects.set(object.key, object);
  let storageNow = options.storageNow;
  if (storageNow === undefined && options.clockKey !== undefined) {
    const own = objects.get(options.clockKey) ?? (await repo.storage.stat(options.clockKey));
    if (!own)
      throw new CairnError('Cairn.Storage', `${repo.storage.location}: the lock record ${options.clockKey} just written is missing`);
    storageNow = own.modified;
  }
  storageNow ??= Math.max(0, ...[...objects.values()].map((o) => o.modified));
  const now = storageNow;
  const byHolder = new Map<string, string[]>();
  for (const key of objects.keys()) {
    const match = LOCK_NAME.exec(key);
    if (!match) continue;
    const list = byHolder.get(match[1] as string) ?? [];
    list.push(key);
    byHolder.set(match[1] as string, list);
  }
  const states: LockState[] = [];
  const unreadable: UnreadableLock[] = [];
  await mapLimit(byHolder.values(), 16, async (holderKeys) => {
    holderKeys.sort();
    // The latest record that reads decides: junk written above a live holder's records cannot hide its lease.
    for (let i = holderKeys.length - 1; i >= 0; i--) {
      const key = holderKeys[i] as string;
      const modified = (objects.get(key) as ObjectInfo).modified;
      let record: LockRecord;
      try {
        record = lockRecordSchema.parse(JSON.parse(repo.unseal('lock', key, await repo.storage.get(key)).toString('utf8')));
      } catch (error) {
        if (error instanceof CairnError && error.code === 'Cairn.NotFound') return; // cleared while we listed
        // A storage failure or a cancellation says nothing about the record: only its bytes make it unreadable.
        if (error instanceof CairnError && error.code !== 'Cairn.Damaged') throw error;
        unreadable.push({ key, modified, error: errorMessage(error), expired: now - modified >= MAX_LEASE_MS });
        continue;
      }
      const effectiveExpiry = modified + leaseLength(record);
      const state = record.released ? 'released' : effectiveExpiry <= now ? 'expired' : 'active';
      states.push({ record, state, effectiveExpiry, modified, keys: holderKeys });
      return;
    }
  });
  states.sort((a, b) => a.record.started.localeCompare(b.record.started));
  unreadable.sort((a, b) => a.key.localeCompare(b.key));
  return { states, unreadable, storageNow: now, objects };
}

/** How long a record's lease runs: what it declares, never less than 0 nor more than MAX_LEASE_MS. */
export function leaseLength(record: LockRecord): number {
  const declared = Date.parse(record.expires) - Date.parse(record.time);
  return Number.isFinite(declared) ? Math.min(MAX_LEASE_MS, Math.max(0, declared)) : MAX_LEASE_MS;
}

/**
 * The readable locks, failing as Cairn.Damaged if any record cannot be read
 * (for inspection; acquiring and `unlock` use readLockTable, which skips them).
 */
export async function readLocks(repo: Repository, options: ReadLocksOptions = {}): Promise<LockState[]> {
  const table = await readLockTable(repo, options);
  const bad = table.unreadable[0];
  if (bad) {
    throw new CairnError('Cairn.Damaged', `lock record ${bad.key} cannot be read: ${bad.error}`, {
      hint: 'it blocks no one; `cairn unlock` removes it once a lease has passed, `cairn unlock --all` at once',
    });
  }
  return table.states;
}

/**
 * The storage's current time: writes a released lock record for a new holder
 * (a create, allowed to hosts; `unlock` removes it with the other released
 * ones) and returns its `modified` with its key.
 */
export async function probeStorageClock(repo: Repository, who: Who): Promise<{ key: string; storageNow: number }> {
  const holder = randomBytes(8).toString('hex');
  const key = lockKey(holder, 0);
  const time = new Date().toISOString();
  const record: LockRecord = {
    holder,
    seq: 0,
    operation: 'clock',
    exclusive: false,
    host: who.host,
    user: who.user,
    pid: process.pid,
    started: time,
    time,
    expires: time,
    released: true,
  };
  await repo.storage.put(key, repo.seal('lock', key, Buffer.from(JSON.stringify(record))), { ifAbsent: true });
  const info = await repo.storage.stat(key);
  if (!info) throw new CairnError('Cairn.Storage', `${repo.storage.location}: the clock probe ${key} just written is missing`);
  return { key, storageNow: info.modified };
}

export interface AcquireOptions {
  operation: string;
  exclusive: boolean;
  who: Who;
  leaseMs?: number;
  /** Keep trying this long while the repository is locked. */
  waitMs?: number;
  /** Told about each stale lock (a dead holder) that this acquisition ignores. */
  onTakeover?: (stale: LockRecord, state: LockState) => void | Promise<void>;
  /** Told about each lock record that cannot be read and is skipped (stderr `warning:` lines unless given). */
  onWarning?: (message: string) => void;
  /**
   * The time in milliseconds since the epoch (Date.now by default), for the
   * holder's own timing: record times, when its lease runs out for itself, the
   * wait deadline. Other holders' leases are judged by the storage's clock.
   */
  now?: (() => number) | undefined;
}

function takenOver(holder: string, operation: string, cause?: unknown): CairnError {
  return new CairnError(
    'Cairn.Locked',
    `the repository lock of this ${operation} (holder ${holder}) was taken over by another operation: its lease looked expired by the storage's clock (the process was stalled or cut off from the storage); nothing it writes from then on is protected`,
    { hint: 'run the operation again; if it had committed, run `cairn check` to confirm the repository', cause },
  );
}

/**
 * How long a waiting acquisition (`--lock-wait`) sleeps after its `attempt`-th conflict: a random
 * time ("full jitter") under a ceiling that doubles from 200 ms to 2 s. Never a fixed interval:
 * contenders that met once and all slept the same second met again at every retry, each seeing the
 * others' records and withdrawing, until the deadline (three operations started together in one
 * process went 40 s and 115 attempts without any of them getting the lock). Random sleeps part them
 * within a few attempts, and the short first ceilings let a waiter in soon after a brief holder.
 */
export function retryDelayMs(attempt: number, random: () => number = Math.random): number {
  return 50 + Math.floor(random() * Math.min(2000, 200 * 2 ** Math.min(attempt, 4)));
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
    this.leaseMs = Math.min(options.leaseMs ?? DEFAULT_LEASE_MS, MAX_LEASE_MS);
    this.now = options.now ?? ((): number => Date.now());
    this.holder = randomBytes(8).toString('hex');
    this.started = new Date(this.now()).toISOString();
  }

  static async acquire(repo: Repository, options: AcquireOptions): Promise<Lease> {
    const now = options.now ?? ((): number => Date.now());
    const deadline = now() + (options.waitMs ?? 0);
    for (let attempt = 0; ; attempt++) {
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
            hint: `wait until it ends (its lease runs out at ${new Date(conflict.effectiveExpiry).toISOString()} by the storage's clock if that process is gone), pass --lock-wait, or remove a lock you know is dead with \`cairn unlock\``,
          },
        );
      }
      await new Promise((resolve) => setTimeout(resolve, Math.max(50, Math.min(retryDelayMs(attempt), deadline - now()))));
    }
  }

  /** Throws if the lease could not be kept: the caller must not commit anything after losing it. */
  assertHeld(marginMs = 0): void {
    if (this.lostError !== undefined) {
      throw new CairnError('Cairn.Locked', `lost the repository lock: ${errorMessage(this.lostError)}; nothing was committed`, {
        cause: this.lostError,
      });
    }
    // Measured on our own clock from before our latest record was stored: never later than others see it run out.
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

  /**
   * Asks the storage whether another operation has closed this lease (the
   * name of our next record is taken), then assertHeld: what a commit checks
   * just before writing the object that commits.
   */
  async confirmHeld(marginMs = 0): Promise<void> {
    await this.refreshing;
    if (await this.repo.storage.stat(lockKey(this.holder, this.seq))) this.lostError ??= takenOver(this.holder, this.options.operation);
    this.assertHeld(marginMs);
  }

  async refresh(): Promise<void> {
    if (this.released || this.refreshing) return;
    // Stalled far past its lease by our own clock: its records may be gone since (`cairn unlock`, or the
    // control plane clearing ended locks a day later: core/lock-cleanup.ts), so a takeover could no longer
    // be seen as a taken name. Writing the next record would revive a lease others may have ignored.
    const lapsed = this.now() - this.expires;
    if (lapsed >= MAX_LEASE_MS) {
      this.lostError ??= new CairnError(
        'Cairn.Locked',
        `the repository lock of this ${this.options.operation} (holder ${this.holder}) ran out ${Math.round(lapsed / 60_000)} minutes ago by this host's clock before it could be refreshed (the process was stalled); nothing it writes from then on is protected`,
        { hint: 'run the operation again; if it had committed, run `cairn check` to confirm the repository' },
      );
      return;
    }
    this.refreshing = this.write(false)
      .catch((error: unknown) => {
        this.lostError ??= error instanceof AlreadyExistsError ? takenOver(this.holder, this.options.operation, error) : error;
      })
      .finally(() => {
        this.refreshing = undefined;
      });
    await this.refreshing;
  }

  /**
   * Writes the final record. Fails with Cairn.Locked if another operation took
   * the lease over meanwhile (found on a refresh or now): what ran under it
   * was not protected, and the caller must not report success.
   */
  async release(): Promise<void> {
    if (this.released) return;
    this.released = true;
    if (this.timer) clearInterval(this.timer);
    await this.refreshing;
    try {
      await this.write(true);
    } catch (error) {
      if (error instanceof AlreadyExistsError) throw takenOver(this.holder, this.options.operation, error);
      throw error;
    }
    if (this.lostError !== undefined) {
      throw this.lostError instanceof CairnError && this.lostError.code === 'Cairn.Locked'
        ? this.lostError
        : new CairnError('Cairn.Locked', `lost the repository lock while it ran: ${errorMessage(this.lostError)}`, {
            cause: this.lostError,
          });
    }
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
    const name = lockKey(this.holder, this.seq);
    this.seq++;
    await this.repo.storage.put(name, this.repo.seal('lock', name, Buffer.from(JSON.stringify(record))), { ifAbsent: true });
    if (!released) this.expires = now + this.leaseMs;
  }

  /**
   * Closes a dead holder's lease with the next record in its own sequence, so
   * later operations see it released. If the holder was only stalled, its next
   * refresh (or its release) finds that name taken and fails.
   */
  private async closeStale(stale: LockState): Promise<void> {
    const name = lockKey(stale.record.holder, stale.record.seq + 1);
    const record: LockRecord = {
      ...stale.record,
      seq: stale.record.seq + 1,
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
    await this.options.onTakeover?.(stale.record, stale);
  }

  private async findConflict(): Promise<LockState | undefined> {
    // Our own record, just stored, dates the storage's now.
    const table = await readLockTable(this.repo, { clockKey: lockKey(this.holder, 0) });
    const warn = this.options.onWarning ?? ((message: string): void => void process.stderr.write(`warning: ${message}\n`));
    for (const bad of table.unreadable) {
      warn(`skipped the lock record ${bad.key}, which cannot be read (${bad.error}); \`cairn unlock\` removes it`);
    }
    let conflict: LockState | undefined;
    for (const s of table.states) {
      if (s.record.holder === this.holder) continue;
      if (s.state === 'expired') {
        await this.closeStale(s);
        continue;
      }
      if (s.state === 'active' && (this.options.exclusive || s.record.exclusive)) conflict ??= s;
    }
    return conflict;
  }
}
