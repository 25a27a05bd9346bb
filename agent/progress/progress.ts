/** What long operations report while they run. Listeners decide how (TTY line, JSON lines, task heartbeats). */
export interface ProgressEvent {
  phase: 'scan' | 'backup' | 'restore' | 'verify' | 'copy';
  files: number;
  bytes: number;
  totalFiles?: number;
  totalBytes?: number;
  /** Bytes added to the repository so far (backup). */
  bytesAdded?: number;
  current?: string;
}

export interface ProgressListener {
  progress(event: ProgressEvent): void;
  /** A problem that does not stop the operation (an unreadable file, a file changed while read). */
  warn(message: string, details?: Record<string, unknown>): void;
  /** True when totals would be shown (an ETA on a terminal): only then is the source counted beside the backup. */
  readonly wantsTotals?: boolean;
  /**
   * When totals are first shown, in ms from the start (0 unless the listener says: JSON progress,
   * which the CLI emits every 10 s): the scan beside a backup starts then, so a backup done sooner
   * makes no second metadata pass.
   */
  readonly totalsAfterMs?: number;
  /** At most one event this often, in ms (200 unless the listener says; a test's listener may want every event: 0). */
  readonly reportEveryMs?: number;
}

export const silentProgress: ProgressListener = {
  progress: () => undefined,
  warn: () => undefined,
};
