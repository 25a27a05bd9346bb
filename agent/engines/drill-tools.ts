import { access, constants, readdir } from 'node:fs/promises';
import { delimiter, join } from 'node:path';
import { CairnError, errorMessage } from '../core/errors.ts';
import { run } from '../process/run.ts';
import type { DrillCheck, DrillTool } from './engine.ts';

/**
 * What every engine's drill shares: finding its programs (and refusing to start
 * when one is missing, naming the package), the environment its private
 * servers and their clients run with, and timing a check into a DrillCheck.
 */

/**
 * The variables that point a database client or server at a server or a
 * configuration: libpq's PG* (PGHOST, PGPORT, PGSERVICE, PGSERVICEFILE,
 * PGDATA…), MariaDB's MYSQL_* / MARIADB_* (MYSQL_HOST, MYSQL_TCP_PORT,
 * MYSQL_UNIX_PORT, MYSQL_HOME) and etcd's ETCD_* / ETCDCTL_*. A drill's
 * children never see them, so a client started without an explicit socket
 * still cannot find production.
 */
const POINTS_AT_A_SERVER = /^(PG[A-Z]|MYSQL_|MARIADB_|ETCD_|ETCDCTL_)/i;

/** The environment of a drill's private servers and their clients: the caller's, without what points at a server. */
export function drillEnvironment(base: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  return {
    ...Object.fromEntries(Object.entries(base).filter(([name]) => !POINTS_AT_A_SERVER.test(name))),
    // libpq also reads ~/.pgpass and the service files (~/.pg_service.conf, PGSYSCONFDIR's): they may
    // name the production server. The drill's clients read none of them.
    PGPASSFILE: '/dev/null',
    PGSERVICEFILE: '/dev/null',
    PGSYSCONFDIR: '/nonexistent',
  };
}

async function executable(path: string): Promise<boolean> {
  return access(path, constants.X_OK).then(
    () => true,
    () => false,
  );
}

/** `dir` with a `*` component expanded, newest version first (/usr/lib/postgresql/17/bin before 15/bin). */
async function expand(dir: string): Promise<string[]> {
  const star = dir.indexOf('*');
  if (star < 0) return [dir];
  const parent = dir.slice(0, star);
  const rest = dir.slice(star + 1);
  const names = await readdir(parent).catch(() => [] as string[]);
  names.sort((a, b) => Number(b) - Number(a) || b.localeCompare(a));
  return names.map((name) => `${parent}${name}${rest}`);
}

/** The absolute path of the first of `tool.names` on PATH or in `tool.dirs`, or undefined. */
export async function locateTool(
  tool: Pick<DrillTool, 'names' | 'dirs'>,
  env: NodeJS.ProcessEnv = process.env,
): Promise<string | undefined> {
  const path = (env.PATH ?? '').split(delimiter).filter(Boolean);
  const dirs = [...path];
  for (const dir of tool.dirs ?? []) dirs.push(...(await expand(dir)));
  for (const name of tool.names) {
    for (const dir of dirs) {
      const candidate = join(dir, name);
      if (await executable(candidate)) return candidate;
    }
  }
  return undefined;
}

/** Like locateTool, but a missing program is a Cairn.Usage error naming the package that has it. */
export async function requireTool(tool: DrillTool, env: NodeJS.ProcessEnv = process.env): Promise<string> {
  const found = await locateTool(tool, env);
  if (found) return found;
  throw new CairnError('Cairn.Usage', `the drill needs ${tool.names.join(' or ')}, which is not installed on this host`, {
    hint: `install it (Debian: apt-get install ${tool.package}), or run the drill on a host that has it`,
  });
}

/** The programs of `tools` this host lacks, as one error naming every package to install; nothing when all are there. */
export async function missingDrillTools(engine: string, tools: readonly DrillTool[], env: NodeJS.ProcessEnv = process.env): Promise<void> {
  const missing: DrillTool[] = [];
  for (const tool of tools) if (!(await locateTool(tool, env))) missing.push(tool);
  if (missing.length === 0) return;
  const packages = [...new Set(missing.map((t) => t.package))];
  throw new CairnError(
    'Cairn.Usage',
    `a drill of a ${engine} snapshot needs ${missing.map((t) => t.names.join(' or ')).join(', ')}, not installed on this host; nothing was restored`,
    { hint: `install ${packages.join(' ')} (Debian: apt-get install ${packages.join(' ')}), or run the drill on a host that has them` },
  );
}

/**
 * Why a check failed: `data` when it proved the snapshot's data bad (a check
 * that ran and found corruption or a mismatch, a Cairn.Damaged read), `host`
 * when this host kept it from proving anything (a tool missing or failing, a
 * server that would not start, a timeout, a full disk). Only `data` makes the
 * drill mark the snapshot damaged (commands/drill.ts).
 */
export type DrillFailure = 'data' | 'host';

/** What a check function returns; timedCheck adds the name, phase, `ran` and the duration. */
export interface CheckOutcome {
  ok: boolean;
  found: string;
  details?: Record<string, unknown> | undefined;
  /** For a failed outcome: `data` unless the check says the host caused it. */
  failure?: DrillFailure | undefined;
}

/** The failure of a check timedCheck ran (undefined for a check that passed or did not run; `data` for one from elsewhere). */
export function failureOf(check: DrillCheck): DrillFailure | undefined {
  if (check.ok || !check.ran) return undefined;
  return (check as DrillCheck & { failure?: DrillFailure }).failure ?? 'data';
}

/**
 * Runs one check and times it. A CairnError thrown by `body` (a tool that
 * reported damage, a load that failed) is the check's failure, reported with
 * its message; a cancel is rethrown, since a cancelled drill proves nothing.
 */
export async function timedCheck(
  name: string,
  phase: DrillCheck['phase'],
  signal: AbortSignal | undefined,
  body: () => Promise<CheckOutcome>,
): Promise<DrillCheck> {
  const started = Date.now();
  try {
    const { failure, ...outcome } = await body();
    return {
      name,
      phase,
      ran: true,
      ...outcome,
      ...(outcome.ok ? {} : { failure: failure ?? 'data' }),
      durationMs: Date.now() - started,
    };
  } catch (error) {
    if (signal?.aborted || (error instanceof CairnError && error.code === 'Cairn.Cancelled')) throw error;
    // Only a Cairn.Damaged error proves the data bad; anything else thrown (a tool, a server, the disk) is the host's.
    const failure: DrillFailure = error instanceof CairnError && error.code === 'Cairn.Damaged' ? 'data' : 'host';
    return { name, phase, ran: true, ok: false, found: errorMessage(error), failure, durationMs: Date.now() - started } as DrillCheck;
  }
}

/** A check that did not run because an earlier one failed (ok: false: the drill did not prove it). */
export function skippedCheck(name: string, phase: DrillCheck['phase'], why: string): DrillCheck {
  return { name, phase, ran: false, ok: false, found: why, durationMs: 0 };
}

/**
 * The prefix that runs a private server in a network namespace of its own
 * (`unshare --net`): it keeps its Unix socket (a path in the file system) but
 * has no network at all, so nothing in the restored data (a FEDERATED or
 * CONNECT table, a dblink or postgres_fdw call in a materialized view) can
 * reach another host or a port on this one. Needs root (or unprivileged user
 * namespaces); empty when the host does not allow it, and the server then
 * relies on its own settings (no listening socket, no replication).
 */
export async function networkIsolation(env: NodeJS.ProcessEnv): Promise<string[]> {
  const unshare = await locateTool({ names: ['unshare'], dirs: ['/usr/bin', '/bin'] }, env);
  if (!unshare) return [];
  const prefix = process.getuid?.() === 0 ? [unshare, '--net', '--'] : [unshare, '--net', '--map-current-user', '--'];
  try {
    await run([...prefix, 'true'], { env });
    return prefix;
  } catch {
    return [];
  }
}
