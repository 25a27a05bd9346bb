import { appendFile, chmod, mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { CairnError } from '../core/errors.ts';
import type { RecoveryTarget } from '../core/log-chain.ts';
import { ownerSpec } from '../process/owner.ts';
import { run } from '../process/run.ts';
import type { ReplayContext, ReplayResult } from './replay.ts';
import { newStageName } from './wal-stage.ts';

/**
 * PostgreSQL replays WAL itself: after the base snapshot is restored, this
 * writes recovery.signal and the recovery settings, and the server, once
 * started, fetches each segment through `cairn wal-fetch` (restore_command),
 * stops at the target and promotes. Nothing is fetched here.
 *
 * The fast path (docs/pitr.md): restore_command first looks in this
 * restore's staging directory, which the WAL daemon fills ahead, and takes
 * the segment with `mv`; only when it is not there does it start cairn.
 *
 * recovery_target_timeline = 'current' keeps replay on the base backup's
 * timeline: the archive may hold later timelines of the same cluster (an
 * earlier point-in-time recovery that went on archiving), and the plan was
 * made for the base's line.
 */
export async function replayPostgres(ctx: ReplayContext): Promise<ReplayResult> {
  const { plan } = ctx;
  // PostgreSQL expands %f, %p, %r and %% in restore_command: a literal % in cairn's own words must be doubled.
  const cairn = ctx.cairnArgv.map((word) => shellQuote(word).replace(/%/g, '%%')).join(' ');
  // Inside the data directory, which PostgreSQL insists is its user's alone (0700 or 0750): no other user can
  // reach it, and it is the file system of %p unless pg_wal is a link elsewhere (then mv copies, then exits).
  const stage = newStageName();
  const stageDir = join(ctx.directory, stage);
  await mkdir(stageDir, { mode: 0o700 });
  await chmod(stageDir, 0o700);
  const restoreCommand = restoreCommandFor(cairn, plan.stream, stage);
  const settings: Array<[string, string]> = [
    ['restore_command', restoreCommand],
    // The staging directory goes when replay is over (the daemon removes what it staged later on when it stops).
    ['recovery_end_command', `rm -rf -- ${shellQuote(stage)}`],
    ...targetSettings(plan.target),
    ['recovery_target_action', 'promote'],
    ['recovery_target_timeline', 'current'],
  ];
  const autoConf = join(ctx.directory, 'postgresql.auto.conf');
  const signal = join(ctx.directory, 'recovery.signal');
  // Appended, as pg_basebackup -R does: later lines win over the restored ones, and ALTER SYSTEM rewrites the file later anyway.
  await appendFile(
    autoConf,
    `\n# point-in-time recovery, written by cairn restore (${new Date().toISOString()})\n${settings.map(([k, v]) => `${k} = ${confQuote(v)}`).join('\n')}\n`,
    { mode: 0o600 },
  );
  await writeFile(signal, '', { mode: 0o600 });
  if (ctx.owner)
    await run(['chown', await ownerSpec(ctx.owner, ctx.env), autoConf, signal, stageDir], {
      env: ctx.env,
      hint: `check that the user ${ctx.owner} exists`,
    });
  const files = plan.files.length;
  const bytes = plan.bytes;
  return {
    summary: `recovery.signal and the recovery settings (postgresql.auto.conf) are written: start the server on ${ctx.directory}${ctx.owner ? ` as ${ctx.owner}` : ''}, and it replays ${files} archived WAL file${files === 1 ? '' : 's'} through \`cairn wal-fetch\` to ${plan.describe}, then promotes. Its environment needs the repository's passphrase (CAIRN_PASSWORD or a --password-file in restore_command) or KMS access.`,
    files,
    bytes,
  };
}

/**
 * The first half of restore_command: when the staging directory (relative to
 * the data directory, restore_command's working directory) holds %f as a
 * regular file of ours, move it to %p and exit 0. Owned by the server's user,
 * not links: the checks refuse what anyone else could have put there. The
 * daemon writes each staged file under a temporary name and renames it when
 * whole, so %f is never a partial write. Anything else, or a failed mv, falls
 * through to wal-fetch. %f is a WAL file name (hex digits, .history,
 * .partial): no quoting needed.
 */
export function stageTaking(stage: string): string {
  const file = '"$s/%f"';
  return `s=${shellQuote(stage)}; if [ -O "$s" ] && [ ! -h "$s" ] && [ -f ${file} ] && [ ! -h ${file} ] && [ -O ${file} ] && mv -f ${file} "%p" 2>/dev/null; then exit 0; fi;`;
}

/** The status wal-fetch gives restore_command's snippet for a file never archived (neither Node nor cairn exits 99 on a failure). */
const WAL_FETCH_MISSING_IN_SNIPPET = 99;

/**
 * restore_command: the staged file, else wal-fetch. PostgreSQL takes an exit status from 1 to 125 as
 * "not archived" and goes on without the file, and stops on one above 125. wal-fetch exits 200 on a
 * failure, but a cairn that cannot even start (Node cannot read the program as the server's user, a
 * wrong Node version) exits 1 or 2, which would read as "not archived". So wal-fetch is asked to say
 * "not archived" with 99 (CAIRN_WAL_FETCH_MISSING_EXIT), and only that becomes 1: everything else but
 * success becomes 200.
 */
export function restoreCommandFor(cairn: string, stream: string, stage: string): string {
  const fetch = `CAIRN_WAL_FETCH_MISSING_EXIT=${WAL_FETCH_MISSING_IN_SNIPPET} ${cairn} wal-fetch --stream ${shellQuote(stream)} --stage-dir "$s" %f "%p"`;
  return `${stageTaking(stage)} ${fetch}; c=$?; [ $c -eq 0 ] && exit 0; [ $c -eq ${WAL_FETCH_MISSING_IN_SNIPPET} ] && exit 1; exit 200`;
}

/** The recovery_target_* setting for the plan's target. */
export function targetSettings(target: RecoveryTarget): Array<[string, string]> {
  if (target.time) return [['recovery_target_time', postgresTime(target.time)]];
  if (target.lsn) return [['recovery_target_lsn', target.lsn]];
  if (target.xid) {
    if (!/^\d+$/.test(target.xid))
      throw new CairnError('Cairn.Usage', `invalid transaction id ${JSON.stringify(target.xid)}`, {
        hint: 'a PostgreSQL transaction id is a whole number (see txid_current())',
      });
    return [['recovery_target_xid', target.xid]];
  }
  throw new CairnError('Cairn.Usage', 'PostgreSQL recovers to a time, an LSN or a transaction id', {
    hint: 'use --to-time, --to-lsn or --to-xid',
  });
}

/**
 * An ISO time with its zone, as PostgreSQL reads it. The operator's own digits
 * are kept (microseconds included: a JavaScript Date would cut them to
 * milliseconds and move the target); a time without a zone is refused, since
 * the server would read it in its own time zone.
 */
export function postgresTime(text: string): string {
  const m = /^(\d{4}-\d\d-\d\d)[T ](\d\d:\d\d(?::\d\d(?:\.\d{1,6})?)?)\s*(Z|[+-]\d\d(?::?\d\d)?)$/i.exec(text.trim());
  if (m) return `${m[1]} ${m[2]}${(m[3] as string).toUpperCase() === 'Z' ? '+00' : m[3]}`;
  const date = new Date(text);
  if (Number.isNaN(date.getTime()) || !/(Z|[+-]\d\d:?\d\d|UTC|GMT)/i.test(text)) {
    throw new CairnError('Cairn.Usage', `invalid recovery time ${JSON.stringify(text)}`, {
      hint: 'give an ISO time with its zone, e.g. 2026-11-23T17:05:00Z or 2026-11-23 18:05:00+01',
    });
  }
  return date.toISOString().replace('T', ' ').replace('Z', '+00');
}

/** A word for /bin/sh, which PostgreSQL runs restore_command with. */
export function shellQuote(word: string): string {
  return /^[A-Za-z0-9_@+=:,./-]+$/.test(word) ? word : `'${word.replace(/'/g, `'\\''`)}'`;
}

/** A string value in postgresql.conf syntax. */
function confQuote(value: string): string {
  // A raw line break cannot stand inside a quoted value of postgresql.conf; PostgreSQL reads \n and \r back.
  return `'${value.replace(/\\/g, '\\\\').replace(/'/g, "''").replace(/\n/g, '\\n').replace(/\r/g, '\\r')}'`;
}
