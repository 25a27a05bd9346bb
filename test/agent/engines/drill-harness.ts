import { chmod, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { PieceReader } from '../../../agent/core/piece-reader.ts';
import { Repository } from '../../../agent/core/repository.ts';
import type { DrillCheck } from '../../../agent/engines/engine.ts';
import { engineRegistry } from '../../../agent/engines/registry.ts';
import { RepositorySource } from '../../../agent/engines/source.ts';
import { Restorer } from '../../../agent/files/restorer.ts';
import { silentProgress } from '../../../agent/progress/progress.ts';
import { FileStorage } from '../../../agent/storage/file.ts';
import { PASSPHRASE } from '../../helpers/repo.ts';

/**
 * Runs an engine's drill member on a snapshot of a file repository, as the drill command does:
 * the snapshot's engine from its manifest, a scratch directory (0711) removed afterwards.
 */
export async function drillSnapshot(
  repoPath: string,
  snapshotId: string,
  options: { thorough?: boolean; env?: NodeJS.ProcessEnv } = {},
): Promise<DrillCheck[]> {
  const repo = await Repository.open(new FileStorage(repoPath), PASSPHRASE);
  const snapshot = await repo.findSnapshot(snapshotId);
  const reader = new PieceReader(repo, await repo.loadIndex(4), { cacheFrames: 8 });
  const source = new RepositorySource(snapshot, reader, async (directory) => {
    await new Restorer(reader, {
      target: resolve(directory),
      applyRoot: true,
      includes: [],
      force: false,
      ignoreErrors: false,
      readAheadBytes: 16 << 20,
      progress: silentProgress,
    }).run(snapshot);
  });
  const engine = engineRegistry.byName(snapshot.engine);
  if (!engine.drill) throw new Error(`the ${snapshot.engine} engine has no drill`);
  const tempDir = await mkdtemp(join(tmpdir(), 'cairn-drill-test-'));
  await chmod(tempDir, 0o711);
  try {
    return await engine.drill(source, {
      progress: silentProgress,
      env: options.env ?? process.env,
      tempDir,
      thorough: options.thorough ?? false,
    });
  } finally {
    await rm(tempDir, { recursive: true, force: true });
  }
}

/** The check of that name, or a failure listing the checks there are. */
export function checkNamed(checks: readonly DrillCheck[], name: string): DrillCheck {
  const check = checks.find((c) => c.name === name);
  if (!check) throw new Error(`no check ${name} among ${checks.map((c) => c.name).join(', ')}`);
  return check;
}
