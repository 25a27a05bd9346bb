import { CairnError } from '../core/errors.ts';
import { advance, formatGtidState, stateOf, type BinlogInfo, type BinlogTransaction } from './binlog-parser.ts';

/**
 * Where a binlog replay stops: the file and position a recovery target (a
 * time, a GTID, a file and position) falls at, from the parsed files' transactions. Pure.
 */

/** Where to stop replaying: at a time, after a GTID, or at FILE:POS. */
export type StopTarget = { time: string } | { gtid: string } | { file: string; position: number };

export interface ReplayFile {
  name: string;
  info: BinlogInfo;
}

export interface ReplayStop {
  /** Replay files[0..fileIndex], stopping before byte `position` of the last one (mariadb-binlog --stop-position). */
  fileIndex: number;
  position: number;
  /** The transactions replayed and the GTID state after them. */
  transactions: number;
  endGtid: string;
  /** The last transaction replayed, when any. */
  last?: BinlogTransaction;
}

/** The GTID state at a position of a file: its start state advanced by every transaction that starts before the position. */
export function gtidStateAt(info: BinlogInfo, position: number): string {
  const state = stateOf(info.startGtid);
  for (const tx of info.transactions) if (tx.position < position) advance(state, tx);
  return formatGtidState(state);
}

/**
 * Where a replay of `files` (starting at `startPosition` of the first) stops
 * for a target: before the first transaction that committed after the time
 * (transactions of T's own second are replayed: the binlog keeps whole
 * seconds), just after the transaction with the GTID, or before the first
 * transaction that starts at or after FILE:POS (a transaction is never cut in
 * two). Without a stop inside the files, the replay runs to their end.
 */
export function findStop(files: readonly ReplayFile[], startPosition: number, target: StopTarget): ReplayStop {
  if (files.length === 0) throw new CairnError('Cairn.NotFound', 'no binlog file to replay');
  const time = 'time' in target ? Date.parse(target.time) : undefined;
  if (time !== undefined && Number.isNaN(time))
    throw new CairnError('Cairn.Usage', `invalid time ${JSON.stringify('time' in target ? target.time : '')}`, {
      hint: 'give an ISO-8601 time, e.g. 2026-11-23T10:15:00Z',
    });
  const goal = 'gtid' in target ? oneGtid(target.gtid) : undefined;
  if ('file' in target && !files.some((f) => f.name === target.file)) {
    throw new CairnError(
      'Cairn.NotFound',
      `binlog ${target.file} is not among the files to replay (${files.map((f) => f.name).join(', ')})`,
      { hint: 'give a position in a file the recovery window covers (cairn pitr status)' },
    );
  }
  let count = 0;
  let last: BinlogTransaction | undefined;
  const stopAt = (fileIndex: number, position: number): ReplayStop => {
    const info = (files[fileIndex] as ReplayFile).info;
    return {
      fileIndex,
      position,
      transactions: count,
      endGtid: gtidStateAt(info, Math.max(position, fileIndex === 0 ? startPosition : 0)),
      ...(last ? { last } : {}),
    };
  };
  for (let i = 0; i < files.length; i++) {
    const { name, info } = files[i] as ReplayFile;
    for (const tx of info.transactions) {
      if (i === 0 && tx.position < startPosition) continue;
      if (time !== undefined && Date.parse(tx.time) > time) return stopAt(i, tx.position);
      if ('file' in target && name === target.file && tx.position >= target.position) return stopAt(i, tx.position);
      if (goal && tx.domain === goal.domain && tx.seq > goal.seq) {
        throw new CairnError(
          'Cairn.NotFound',
          `GTID ${goal.text} is not in the archived binlogs: domain ${goal.domain} goes on to ${tx.gtid} in ${name} without it`,
          {
            hint: 'give a GTID the server wrote (mariadb-binlog lists them), or use --to-time',
          },
        );
      }
      count++;
      last = tx;
      if (goal && tx.domain === goal.domain && tx.seq === goal.seq) return stopAt(i, tx.end);
    }
    if ('file' in target && name === target.file) return stopAt(i, info.endPosition);
  }
  if (goal) {
    throw new CairnError(
      'Cairn.NotFound',
      `GTID ${goal.text} is not in the archived binlogs to replay (they end at ${files.at(-1)?.info.endGtid || 'no GTID'})`,
      {
        hint: 'wait for binlog-push to archive the file that holds it, or give an earlier target',
      },
    );
  }
  const lastIndex = files.length - 1;
  return stopAt(lastIndex, (files[lastIndex] as ReplayFile).info.endPosition);
}

/** A byte position stops one log; a GTID target is therefore one GTID (several domains would each need their own stop). */
function oneGtid(text: string): { domain: number; server: number; seq: number; text: string } {
  const state = [...stateOf(text).values()];
  if (state.length !== 1)
    throw new CairnError('Cairn.Usage', `a binlog replay stops at one GTID, got ${JSON.stringify(text)}`, {
      hint: 'give one domain-server-sequence, e.g. 0-1-1234',
    });
  const g = state[0] as { domain: number; server: number; seq: number };
  return { ...g, text: `${g.domain}-${g.server}-${g.seq}` };
}
