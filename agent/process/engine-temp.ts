import { tmpdir } from 'node:os';
import { errorMessage } from '../core/errors.ts';
import { makeOwnedDir, removeKilledDirs, removeOwnedDir, type OwnedKind } from './owned-dir.ts';

/**
 * The private temporary directory of an engine's backup or restore, or of a point-in-time replay:
 * it holds the database password's option file or PGPASSFILE, an etcd snapshot of the whole
 * keyspace, the replay's server files. Removed when the command ends; a SIGKILL left it (and the
 * secrets in it) in /tmp for good, so each new one first removes what killed runs of this user
 * left under the same parent (process/owned-dir.ts).
 */
const KINDS = {
  engine: { prefix: 'cairn-engine-', owner: '.cairn-owner', what: "the temporary directory of an engine's backup or restore" },
  replay: { prefix: 'cairn-replay-', owner: '.cairn-owner', what: 'the temporary directory of a point-in-time replay' },
} as const satisfies Record<string, OwnedKind>;

export async function makeEngineTemp(
  kind: keyof typeof KINDS,
  parent: string | undefined,
  warn: (message: string) => void,
): Promise<{ path: string; remove: () => Promise<void> }> {
  const under = parent ?? tmpdir();
  for (const left of await removeKilledDirs(under, KINDS[kind], warn))
    warn(
      `removed ${left}, left by a ${kind === 'engine' ? 'backup or restore' : 'replay'} that was killed (it may have held a database password)`,
    );
  const path = await makeOwnedDir(under, KINDS[kind], 0o700);
  // Never in place of the command's own error: a directory left is swept by the next run.
  return { path, remove: () => removeOwnedDir(path).catch((error: unknown) => warn(`could not remove ${path}: ${errorMessage(error)}`)) };
}
