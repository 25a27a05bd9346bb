import { run } from './run.ts';

/**
 * What `chown` is given for --owner: the user and its login group. `USER:` lets chown look the
 * group up, which GNU chown cannot do for a numeric id ("invalid spec: '101:'"), so a number's
 * group is asked of `id` (which also fails for an id no account has).
 */
export async function ownerSpec(owner: string, env: NodeJS.ProcessEnv): Promise<string> {
  if (!/^\d+$/.test(owner)) return `${owner}:`;
  const { stdout } = await run(['id', '-g', '--', owner], { env, hint: `check that the user ${owner} exists` });
  return `${owner}:${stdout.trim()}`;
}
