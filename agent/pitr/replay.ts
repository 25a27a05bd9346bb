import type { LogArchive } from '../core/log-archive.ts';
import type { ReplayPlan } from '../core/log-chain.ts';
import type { ProgressListener } from '../progress/progress.ts';

/**
 * What `cairn restore --to-*` hands an engine's replay after the base snapshot
 * is restored into `directory` (docs/pitr.md): PostgreSQL writes the recovery
 * settings (the server replays through wal-fetch when started); MariaDB
 * replays the archived binlogs into the restored datadir.
 */
export interface ReplayContext {
  directory: string;
  plan: ReplayPlan;
  archive: LogArchive;
  /** How the restored server calls back into cairn for WAL (PostgreSQL): argv prefix, e.g. [node, cairn.js, --repo, URL]. */
  cairnArgv: string[];
  /** The owner of the restored directory (the database server's user), when given. */
  owner?: string | undefined;
  env: NodeJS.ProcessEnv;
  signal?: AbortSignal | undefined;
  progress: ProgressListener;
  tempDir: string;
}

export interface ReplayResult {
  /** What was done, for the summary: "recovery.signal written; start the server to replay to …", "replayed 42 transactions". */
  summary: string;
  /** Files fetched and replayed here (MariaDB), or left for the server to fetch (PostgreSQL). */
  files: number;
  bytes: number;
}
