import { run } from './run.ts';

let probe: Promise<boolean> | undefined;

/** Whether this host's setpriv takes --pdeathsig (util-linux 2.33 and later). Asked once per process. */
export function parentDeathSignalWorks(env: NodeJS.ProcessEnv): Promise<boolean> {
  probe ??= run(['setpriv', '--pdeathsig', 'KILL', '--', 'true'], { env }).then(
    () => true,
    () => false,
  );
  return probe;
}

/**
 * `argv`, run so that the kernel kills it the moment this process ends, however it ends (SIGKILL
 * included: `setpriv --pdeathsig KILL`, which survives the exec); unchanged where setpriv cannot.
 * For a child that would otherwise outlive cairn and go on working for no one.
 */
export async function diesWithThisProcess(argv: string[], env: NodeJS.ProcessEnv): Promise<string[]> {
  return (await parentDeathSignalWorks(env)) ? ['setpriv', '--pdeathsig', 'KILL', '--', ...argv] : argv;
}
