import { engineCatalog } from '../core/engine-options/catalog.ts';
import type { PitrLogKind } from '../core/engine-options/spec.ts';
import { CairnError } from '../core/errors.ts';
import type { ReplayContext, ReplayResult } from './replay.ts';

type Replayer = (ctx: ReplayContext) => Promise<ReplayResult>;

/**
 * The replay of each log kind, loaded when a point-in-time restore needs it (a
 * restore of files never loads database code). Which engine's snapshots use
 * which log comes from the engines' capabilities.
 */
const replayers: Record<PitrLogKind, () => Promise<Replayer>> = {
  // Literal specifiers, so the agent bundle (esbuild) carries both.
  wal: async () => (await import('./pg-recovery.ts')).replayPostgres,
  binlog: async () => (await import('./binlog-replay.ts')).replayMariadb,
};

export async function replayerFor(engine: string): Promise<Replayer> {
  const log = engineCatalog.get(engine)?.capabilities.pitr?.log;
  if (log === undefined) {
    throw new CairnError(
      'Cairn.Usage',
      `the ${engine} engine has no log replay: point-in-time recovery works for ${engineCatalog
        .pitrEngines()
        .map((s) => s.name)
        .join(' and ')} (physical) snapshots`,
      { hint: 'restore the snapshot itself, without --to-*' },
    );
  }
  return replayers[log]();
}
