import type { Dirent } from 'node:fs';
import { mkdir, readFile, readdir, readlink, realpath } from 'node:fs/promises';
import { dirname, isAbsolute, join, relative, resolve, sep } from 'node:path';
import { CairnError } from '../core/errors.ts';
import { ProcessError, run } from '../process/run.ts';
import { drillEnvironment, requireTool, skippedCheck, timedCheck, type CheckOutcome } from './drill-tools.ts';
import type { DrillCheck, DrillContext, DrillTool, SnapshotSource } from './engine.ts';
import { MARIADB_CHECK, MARIADB_CLIENT, MARIADBD, startPrivateMariadb, type PrivateMariadb } from './private-mariadb.ts';

/**
 * The physical MariaDB drill: the snapshot restored into the drill's scratch
 * directory and prepared (`mariabackup --prepare`, the redo log applied),
 * started as a private mariadbd (private-mariadb.ts: socket only, no binary
 * log, no replication or events, grant tables skipped since production's
 * passwords are not the drill's), then:
 *
 * - mariadb-check --all-databases (CHECK TABLE of every table: InnoDB walks
 *   every index's B-tree and validates its pages), --extended under --thorough;
 * - binlog position: the position and GTID the backup recorded, read back from
 *   the restored data directory (the binlog info mariabackup wrote into the
 *   stream at the consistency point, and the last binlog position InnoDB
 *   recorded for its commits, which the private server reports as it starts).
 *
 * Nothing in the restored files may lead the tools outside the scratch
 * directory: before `--prepare`, an InnoDB link file (`db/t.isl`, the path of a
 * table created with DATA DIRECTORY) or a symbolic link that leads outside it
 * refuses the drill (confineDatadir), since prepare and mariadbd would open
 * and write the file it names, which is production's. `--prepare` runs with
 * `--no-defaults` first, so neither /etc/mysql/my.cnf nor ~/.my.cnf (which may
 * name production's paths) is read.
 */
export const mariadbDrillTools: readonly DrillTool[] = [
  { names: ['mariabackup', 'xtrabackup'], dirs: ['/usr/bin'], package: 'mariadb-backup' },
  MARIADBD,
  MARIADB_CLIENT,
  MARIADB_CHECK,
];

export async function drillMariadb(source: SnapshotSource, ctx: DrillContext): Promise<DrillCheck[]> {
  const metadata = source.metadata;
  const env = drillEnvironment(ctx.env);
  const datadir = join(ctx.tempDir, 'data');
  const checks: DrillCheck[] = [];
  const later = ['start', 'mariadb-check', 'binlog position'];

  const restore = await timedCheck('restore', 'restore', ctx.signal, async () => {
    await mkdir(datadir, { mode: 0o700 });
    await source.restoreTo(datadir);
    return { ok: true, found: "the snapshot's files were written into a scratch datadir" };
  });
  checks.push(restore);
  if (!restore.ok)
    return [
      ...checks,
      skippedCheck('prepare', 'restore', 'nothing to prepare'),
      ...later.map((n) => skipped(n, 'the snapshot could not be restored')),
    ];

  let prepareLog = '';
  const prepare = await timedCheck('prepare', 'restore', ctx.signal, async () => {
    const tool = await requireTool(mariadbDrillTools[0] as DrillTool, env);
    await confineDatadir(datadir, ctx.tempDir);
    const done = await run(prepareArgv(tool, datadir), { env, signal: ctx.signal });
    prepareLog = done.stderr;
    return { ok: true, found: `${tool.split('/').at(-1) ?? tool} --prepare applied the redo log copied with the backup` };
  });
  checks.push(prepare);
  if (!prepare.ok) return [...checks, ...later.map((n) => skipped(n, 'the restored datadir could not be prepared'))];

  let server: PrivateMariadb | undefined;
  const start = await timedCheck('start', 'check', ctx.signal, async () => {
    server = await startPrivateMariadb({
      datadir,
      initialize: false,
      runDir: join(ctx.tempDir, 'run'),
      skipGrantTables: true,
      env,
      signal: ctx.signal,
    });
    return {
      ok: true,
      found: `a private mariadbd started on the restored datadir (socket only${server.isolated ? ', no network' : ''}, no binary log)`,
    };
  });
  checks.push(start);
  if (!server) return [...checks, ...later.slice(1).map((n) => skipped(n, 'the restored datadir did not start'))];
  const running: PrivateMariadb = server;
  try {
    checks.push(await timedCheck('mariadb-check', 'check', ctx.signal, () => checkTables(running, ctx.thorough, env)));
    checks.push(
      await timedCheck('binlog position', 'check', ctx.signal, () => binlogPosition(datadir, metadata, `${prepareLog}\n${running.log()}`)),
    );
  } finally {
    await running.stop();
  }
  return checks;
}

/** `mariabackup --prepare`: `--no-defaults` first (MariaDB tools honour it only there), so no defaults file of the host is read. */
export function prepareArgv(tool: string, datadir: string): string[] {
  return [tool, '--no-defaults', '--prepare', `--target-dir=${datadir}`];
}

function inside(path: string, root: string): boolean {
  const rel = relative(root, path);
  return rel === '' || (rel !== '..' && !rel.startsWith(`..${sep}`) && !isAbsolute(rel));
}

/** Where `path` really leads: the real path of its nearest existing ancestor plus the missing rest (a server creates that part). */
async function leadsTo(path: string): Promise<string> {
  const missing: string[] = [];
  for (let at = path; ; at = dirname(at)) {
    try {
      return join(await realpath(at), ...missing.reverse());
    } catch {
      if (dirname(at) === at) return path;
      missing.push(at.slice(dirname(at).length).replace(/^\//, ''));
    }
  }
}

/**
 * Refuses a restored datadir holding an InnoDB link file (`.isl`: the path of a
 * remote tablespace, which prepare and mariadbd open and write in place of
 * `db/t.ibd`) or a symbolic link that leads outside the drill's scratch
 * directory, naming each. A snapshot of a server with DATA DIRECTORY tables
 * holds such files honestly; a crafted one aims them at production's files.
 * Either way the drill cannot prove it without reaching outside, so it stops
 * (Cairn.Usage: a refusal, not proof that the data is bad) before any tool runs.
 */
export async function confineDatadir(datadir: string, scratch: string): Promise<void> {
  const root = await realpath(scratch);
  const entries: Dirent[] = await readdir(datadir, { withFileTypes: true, recursive: true });
  const outside: string[] = [];
  for (const entry of entries) {
    const path = join(entry.parentPath, entry.name);
    const shown = relative(datadir, path);
    let target: string | undefined;
    if (entry.isSymbolicLink()) target = resolve(dirname(path), await readlink(path));
    // mariadbd resolves a relative .isl path against its datadir (its working directory).
    else if (entry.isFile() && entry.name.endsWith('.isl'))
      target = resolve(datadir, (await readFile(path, 'utf8')).split('\n')[0]?.trim() ?? '');
    if (target === undefined) continue;
    const to = await leadsTo(target);
    if (!inside(to, root)) outside.push(`${shown} -> ${to}`);
  }
  if (outside.length > 0)
    throw new CairnError(
      'Cairn.Usage',
      `the restored datadir holds ${outside.length === 1 ? 'a link' : `${outside.length} links`} leading outside the drill's scratch directory: ${outside.slice(0, 5).join(', ')}${outside.length > 5 ? ', …' : ''}; mariabackup --prepare and mariadbd would open and write those files (production's), so the drill refuses to run them`,
      {
        hint: 'a snapshot of tables created with DATA DIRECTORY (.isl files) cannot be drilled; restore it by hand on a scratch host. A snapshot whose links you did not create was crafted: do not restore it onto a host whose files it names',
      },
    );
}

function skipped(name: string, why: string): DrillCheck {
  return skippedCheck(name, 'check', why);
}

async function checkTables(server: PrivateMariadb, thorough: boolean, env: NodeJS.ProcessEnv): Promise<CheckOutcome> {
  const tool = await requireTool(MARIADB_CHECK, env);
  let output: string;
  try {
    output = (await run([tool, ...server.clientArgs, '--all-databases', ...(thorough ? ['--extended'] : [])], { env })).stdout;
  } catch (error) {
    // mariadb-check exits non-zero when a table is corrupt; its report is then in the error's output.
    if (!(error instanceof ProcessError) || error.kind !== 'exit') throw error;
    output = error.stderr;
  }
  const { checked, damaged } = parseCheckOutput(output);
  const names = Object.keys(damaged);
  if (names.length > 0)
    return {
      ok: false,
      found: names.map((t) => `table ${t}: ${damaged[t]?.join('; ') ?? 'corrupt'}`).join(', '),
      details: { tables: checked, damaged },
    };
  // No report at all is mariadb-check failing to run (a connection, a crash), not a finding about the data.
  if (checked === 0)
    return { ok: false, found: `mariadb-check checked no table: ${output.split('\n').slice(0, 3).join(' | ')}`, failure: 'host' };
  return { ok: true, found: `${checked} tables OK${thorough ? ' (--extended)' : ''}`, details: { tables: checked } };
}

/**
 * mariadb-check's report: `db.table   OK` for a good table; otherwise the table's name on a line
 * of its own followed by `Error    : …`, `error    : Corrupt`, `warning  : …` or `note     : …` lines.
 */
export function parseCheckOutput(output: string): { checked: number; damaged: Record<string, string[]> } {
  let checked = 0;
  let current: string | undefined;
  const messages = new Map<string, string[]>();
  const failed = new Set<string>();
  for (const raw of output.split('\n')) {
    const line = raw.trimEnd();
    if (!line) continue;
    const status = /^(error|warning|note|status|info)\s*:\s*(.*)$/i.exec(line);
    if (status) {
      const kind = status[1]?.toLowerCase();
      if (!current || (kind !== 'error' && kind !== 'warning')) continue;
      messages.set(current, [...(messages.get(current) ?? []), (status[2] ?? '').trim()]);
      // Only an error marks the table damaged: a warning alone (an old format to upgrade) does not.
      if (kind === 'error') failed.add(current);
      continue;
    }
    if (/^(\S+)\s+OK$/.test(line)) {
      checked++;
      current = undefined;
      continue;
    }
    const table = /^(\S+\.\S+)$/.exec(line);
    if (table) {
      checked++;
      current = table[1];
    }
  }
  return { checked, damaged: Object.fromEntries([...failed].map((t) => [t, messages.get(t) ?? []])) };
}

async function binlogPosition(
  datadir: string,
  metadata: Record<string, unknown>,
  serverLog: string,
): Promise<{ ok: boolean; found: string; details?: Record<string, unknown> }> {
  const recorded = { file: metadata.binlogFile, position: metadata.binlogPosition, gtid: metadata.gtid };
  if (typeof recorded.file !== 'string' || typeof recorded.position !== 'number')
    return { ok: true, found: 'the backup recorded no binlog position (binary logging was off on the server)' };
  // mariabackup writes the consistency point into the backup itself (the name changed in 10.x).
  let info = '';
  for (const name of ['mariadb_backup_binlog_info', 'xtrabackup_binlog_info']) {
    info = await readFile(join(datadir, name), 'utf8').catch(() => '');
    if (info) break;
  }
  const [file, position, gtid] = info.trim().split('\t');
  const problems: string[] = [];
  if (!info) problems.push('the restored datadir has no binlog info from mariabackup');
  else {
    if (file !== recorded.file || Number(position) !== recorded.position)
      problems.push(
        `the restored datadir is at ${file ?? '?'}:${position ?? '?'}; the backup recorded ${recorded.file}:${recorded.position}`,
      );
    if (typeof recorded.gtid === 'string' && (gtid ?? '') !== recorded.gtid)
      problems.push(`its GTID position is ${gtid ?? 'none'}; the backup recorded ${recorded.gtid}`);
  }
  // InnoDB's own record of the last committed transaction's binlog position: never past the consistency point.
  const innodb = [...serverLog.matchAll(/Last binlog file '(?:\.\/)?([^']+)', position (\d+)/g)].at(-1);
  if (innodb) {
    const [, innodbFile = '', innodbPosition = '0'] = innodb;
    if (innodbFile > recorded.file || (innodbFile === recorded.file && Number(innodbPosition) > recorded.position))
      problems.push(
        `InnoDB's last committed transaction is at ${innodbFile}:${innodbPosition}, past the recorded ${recorded.file}:${recorded.position}`,
      );
  }
  const details = {
    recorded,
    restored: { file, position: Number(position), gtid },
    innodb: innodb ? `${innodb[1]}:${innodb[2]}` : undefined,
  };
  return problems.length
    ? { ok: false, found: problems.join('; '), details }
    : {
        ok: true,
        found: `${recorded.file}:${recorded.position}${typeof recorded.gtid === 'string' ? `, GTID ${recorded.gtid}` : ''}, as recorded${innodb ? ` (InnoDB's last commit at ${innodb[1]}:${innodb[2]})` : ''}`,
        details,
      };
}
