import { CairnError } from '../core/errors.ts';
import type { RecoveryTarget } from '../core/log-chain.ts';

/** restore's point-in-time flags. */
export interface RecoveryTargetFlags {
  toTime?: string;
  toLsn?: string;
  toXid?: string;
  toGtid?: string;
  toPosition?: string;
}

/** The point-in-time target of restore's --to-* flags, if any (at most one). */
export function recoveryTargetFrom(opts: RecoveryTargetFlags): RecoveryTarget | undefined {
  const given = [opts.toTime, opts.toLsn, opts.toXid, opts.toGtid, opts.toPosition].filter((v) => v !== undefined);
  if (given.length === 0) return undefined;
  if (given.length > 1)
    throw new CairnError('Cairn.Usage', 'give one recovery target', {
      hint: 'use one of --to-time, --to-lsn, --to-xid, --to-gtid, --to-position',
    });
  if (opts.toTime !== undefined) {
    const ms = Date.parse(opts.toTime);
    if (Number.isNaN(ms))
      throw new CairnError('Cairn.Usage', `invalid --to-time ${JSON.stringify(opts.toTime)}`, {
        hint: 'give an ISO-8601 time, e.g. 2026-11-23T10:15:00Z (without a zone it is local time)',
      });
    return { time: new Date(ms).toISOString() };
  }
  if (opts.toLsn !== undefined) return { lsn: opts.toLsn };
  if (opts.toXid !== undefined) {
    if (!/^\d+$/.test(opts.toXid))
      throw new CairnError('Cairn.Usage', `invalid --to-xid ${JSON.stringify(opts.toXid)}`, {
        hint: 'a transaction id is a number (txid_current())',
      });
    return { xid: opts.toXid };
  }
  if (opts.toGtid !== undefined) return { gtid: opts.toGtid };
  return { position: opts.toPosition as string };
}
