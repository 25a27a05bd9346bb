import { CairnError } from '../core/errors.ts';
import type { ReplayContext, ReplayResult } from './replay.ts';

type Replayer = (ctx: ReplayContext) => Promise<ReplayResult>;

/**
 * The replay of each engine with a log archive, loaded when a point-in-time
 * restore needs it (a restore of files never loads database code).
 */
const replayers: Record<string, () => Promise<Replayer>> = {
  // Literal specifiers, so the agent bundle (esbuild) carries both.
  postgres: async () => (await import('./pg-recovery.ts')).replayPostgres,
  mariadb: async () => (await import('./binlog-replay.ts')).replayMariadb,
};

export async function replayerFor(engine: string): Promise<Replayer> {
  const load = replayers[engine];
  if (!load) {
    throw new CairnError(
      'Cairn.Usage',
      `the ${engine} engine has no log replay: point-in-time recovery works for postgres and mariadb (physical) snapshots`,
      {
        hint: 'restore the snapshot itself, without --to-*',
      },
    );
  }
  return load();
}
