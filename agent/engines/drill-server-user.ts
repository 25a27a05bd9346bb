import { userInfo } from 'node:os';
import { CairnError } from '../core/errors.ts';
import { parentDeathSignalWorks } from '../process/death-signal.ts';
import { ProcessError, run } from '../process/run.ts';

/**
 * The OS user a drill's private PostgreSQL server runs as. Not `postgres`: on a
 * database host that user owns production's data directory, so anything the
 * restored data gets the private server to run (a crafted dump's
 * `COPY … TO PROGRAM`, a function stored in a crafted catalog) would run as
 * production's owner. Under root the server runs as `cairn-drill`, a system
 * user that owns nothing and has no login shell, created on first use
 * (`useradd --system`: initdb needs a passwd entry for its user, so a bare
 * unused uid does not do). Not under root, the drill cannot switch users: it
 * runs the server as itself, and refuses to when it is `postgres`.
 */
export const DRILL_USER = 'cairn-drill';

async function known(user: string, env: NodeJS.ProcessEnv): Promise<boolean> {
  try {
    await run(['id', '-u', user], { env });
    return true;
  } catch (error) {
    if (error instanceof ProcessError && error.kind === 'exit') return false;
    throw error;
  }
}

/**
 * The user to switch to (`setpriv --reuid`), or undefined to run as the drill's own user.
 * Creates `cairn-drill` when root and it is missing.
 */
export async function drillServerUser(env: NodeJS.ProcessEnv): Promise<string | undefined> {
  if (process.getuid?.() !== 0) {
    if (userInfo().username === 'postgres')
      throw new CairnError(
        'Cairn.Usage',
        "the drill runs as the `postgres` user, which owns this host's PostgreSQL data: its private server would run as production's owner",
        { hint: 'run the drill as root (its server then runs as the unprivileged cairn-drill user) or as a user that owns no database' },
      );
    return undefined;
  }
  if (await known(DRILL_USER, env)) return DRILL_USER;
  try {
    await run(
      ['useradd', '--system', '--user-group', '--no-create-home', '--home-dir', '/nonexistent', '--shell', '/usr/sbin/nologin', DRILL_USER],
      { env },
    );
  } catch (error) {
    // Another drill may have created it meanwhile.
    if (await known(DRILL_USER, env)) return DRILL_USER;
    throw new CairnError(
      'Cairn.Usage',
      `the drill needs a system user ${DRILL_USER} to run its private server as, and could not create it: ${error instanceof Error ? error.message : String(error)}`,
      { hint: `create it (useradd --system --user-group --no-create-home --shell /usr/sbin/nologin ${DRILL_USER}); it must own nothing` },
    );
  }
  return DRILL_USER;
}

/** The prefix that runs a program as `user` (exec, so signals reach the program itself), with no way back to more privileges. */
export function asUser(user: string | undefined): string[] {
  return user ? ['setpriv', `--reuid=${user}`, `--regid=${user}`, '--init-groups', '--no-new-privs', '--'] : [];
}

/** Whether this host's setpriv takes --pdeathsig (process/death-signal.ts). */
export function diesWithDrill(env: NodeJS.ProcessEnv): Promise<boolean> {
  return parentDeathSignalWorks(env);
}

/**
 * The prefix that runs a private server as `user` (asUser) and has the kernel kill it the moment
 * the drill's process ends, however it ends (`setpriv --pdeathsig KILL`); only where diesWithDrill.
 *
 * Why: a drill stops its server itself when it returns, throws or is cancelled, but a SIGKILL (the
 * OOM killer, `kill -9`, a host agent timing out) ends the drill with no chance to: the server, a
 * copy of production's data, went on running with its buffer pool on the production host until
 * someone found it. The death signal is set last, after the user switch (the kernel clears it when
 * credentials change; so mariadbd is not given `--user` then, which switches by itself), and
 * survives the exec of the server (none of them is set-user-ID). A postmaster's backends end when
 * it does. Without a setpriv that knows the option, servers start as they did before it (mariadbd
 * with `--user`, PostgreSQL through asUser), and the next drill removes what a killed one left on
 * disk (commands/drill-scratch.ts).
 */
export function deathSignalPrefix(user: string | undefined): string[] {
  const as = user ? [`--reuid=${user}`, `--regid=${user}`, '--init-groups', '--no-new-privs'] : [];
  return ['setpriv', ...as, '--pdeathsig', 'KILL', '--'];
}

/** deathSignalPrefix where the host has it, else asUser: for a server that cannot switch users by itself. */
export async function privateServerPrefix(user: string | undefined, env: NodeJS.ProcessEnv): Promise<string[]> {
  return (await diesWithDrill(env)) ? deathSignalPrefix(user) : asUser(user);
}
