import { readdir } from 'node:fs/promises';
import { z } from 'zod';
import { CairnError } from '../core/errors.ts';
import { run } from '../process/run.ts';

/** Validates an engine's options with its schema; the error names the engine and the field. */
export function parseEngineOptions<S extends z.ZodType>(engine: string, schema: S, raw: unknown): z.infer<S> {
  const parsed = schema.safeParse(raw);
  if (!parsed.success) throw new CairnError('Cairn.Usage', `invalid ${engine} options: ${z.prettifyError(parsed.error)}`);
  return parsed.data;
}

/** Physical restores write a whole data directory: it must be new or empty, and nothing is written otherwise. */
export async function requireEmptyTarget(target: string | undefined, what: string): Promise<string> {
  if (!target) throw new CairnError('Cairn.Usage', `restoring needs --target DIR, ${what}`);
  if ((await readdir(target).catch(() => [] as string[])).length > 0) {
    throw new CairnError('Cairn.TargetNotEmpty', `${target} is not empty; nothing was written`, {
      hint: `give a new, empty directory for ${what}`,
    });
  }
  return target;
}

/** Gives a restored data directory to the user its server runs as (e.g. mysql, postgres). */
export async function giveTo(target: string, owner: string | undefined, env: NodeJS.ProcessEnv): Promise<void> {
  if (owner) await run(['chown', '-R', `${owner}:`, target], { env, hint: `check that the user ${owner} exists` });
}
