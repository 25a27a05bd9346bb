import { open, readdir, rename } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { z } from 'zod';
import { CairnError } from '../core/errors.ts';
import type { ProgressListener } from '../progress/progress.ts';
import { PARTIAL_SUFFIX } from './engine.ts';
import { ownerSpec } from '../process/owner.ts';
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
    throw (
      (await stoppedRestoreIn(target)) ??
      new CairnError('Cairn.TargetNotEmpty', `${target} is not empty; nothing was written`, {
        hint: `give a new, empty directory for ${what}`,
      })
    );
  }
  return target;
}

/**
 * The error for a directory holding a physical restore that stopped part-way (a file an engine held
 * back, still under its partial name, at most one directory down), or undefined.
 */
export async function stoppedRestoreIn(target: string): Promise<CairnError | undefined> {
  const top = await readdir(target, { withFileTypes: true }).catch(() => []);
  for (const entry of top) {
    const names = entry.isDirectory()
      ? (await readdir(join(target, entry.name)).catch(() => [] as string[])).map((name) => `${entry.name}/${name}`)
      : [entry.name];
    const held = names.find((name) => name.endsWith(PARTIAL_SUFFIX));
    if (held)
      return new CairnError(
        'Cairn.TargetNotEmpty',
        `${target} holds a restore that stopped part-way (${held} was never moved into place); nothing was written`,
        { hint: `empty ${target} and run the restore again` },
      );
  }
  return undefined;
}

/**
 * Checks the --owner user exists before anything is written: a name mistyped would otherwise fail
 * the restore at its end, after every byte of the data directory was written.
 */
export async function requireOwner(owner: string | undefined, env: NodeJS.ProcessEnv): Promise<void> {
  if (!owner) return;
  // A numeric id too: its login group comes from its account (process/owner.ts).
  await run(['id', '-u', '--', owner], { env }).catch((error: unknown) => {
    throw new CairnError('Cairn.Usage', `--owner ${owner}: there is no such user on this host; nothing was written`, {
      hint: 'name the user the database server runs as (for example mysql or postgres), or leave --owner out',
      cause: error,
    });
  });
}

/** Gives a restored data directory to the user its server runs as (e.g. mysql, postgres). */
export async function giveTo(target: string, owner: string | undefined, env: NodeJS.ProcessEnv): Promise<void> {
  if (owner) await run(['chown', '-R', await ownerSpec(owner, env), target], { env, hint: `check that the user ${owner} exists` });
}

/**
 * An engine's last step: flushes the restored directory's filesystem to disk (`sync --file-system`:
 * the restore writes through the page cache), then moves the files it held back
 * (RestoreToOptions.partial) into place and flushes their directories. Until the rename the
 * server refuses the directory; after it, the directory is whole even across a power cut.
 */
export async function placeLast(
  target: string,
  paths: readonly string[],
  env: NodeJS.ProcessEnv,
  progress: Pick<ProgressListener, 'warn'>,
): Promise<void> {
  await run(['sync', '--file-system', target], { env }).catch((error: unknown) => {
    progress.warn(
      `could not flush ${target} to disk (${error instanceof Error ? error.message : String(error)}): the restore is complete, but a power cut in the next seconds could lose part of it; run \`sync\` before starting the server`,
    );
  });
  for (const path of paths) {
    const final = join(target, path);
    try {
      await rename(final + PARTIAL_SUFFIX, final);
    } catch (error) {
      // Not written: --include left it out (a few files taken from a physical snapshot).
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') continue;
      throw error;
    }
    const directory = await open(dirname(final), 'r');
    try {
      await directory.sync();
    } catch {
      // Some filesystems refuse fsync on a directory; the rename is then as durable as they make it.
    } finally {
      await directory.close();
    }
  }
}
