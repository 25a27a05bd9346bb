import { randomBytes } from 'node:crypto';
import { open, readFile, rename, unlink } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';

/**
 * `--metrics-file PATH`: after a command, Prometheus text-format metrics for
 * node_exporter's textfile collector (`--collector.textfile.directory`). The
 * file is replaced atomically (a temporary file in the same directory, then a
 * rename), so the collector never reads half a file; the collector only reads
 * names ending in `.prom`. A failed run keeps the previous success time (read
 * back from the old file) and sets cairn_last_run_success to 0, so an alert on
 * `time() - cairn_last_success_timestamp_seconds` keeps counting.
 */
export interface RunMetrics {
  operation: string;
  /** Printable repository location, no credentials (Storage.location). */
  repository: string;
  host: string;
  success: boolean;
  /** Unix milliseconds. */
  startedAt: number;
  finishedAt: number;
  /** Backup only, on success. */
  backup?:
    | { bytesRead: number; bytesAdded: number; rawBytesAdded: number; totalBytes: number; totalFiles: number; durationMs: number }
    | undefined;
}

interface Metric {
  name: string;
  help: string;
  type: 'gauge';
  value: number;
}

export function renderMetrics(run: RunMetrics, previousSuccessSeconds?: number): string {
  const labels = `{operation="${escape(run.operation)}",repository="${escape(run.repository)}",host="${escape(run.host)}"}`;
  const metrics: Metric[] = [];
  const gauge = (name: string, help: string, value: number): void => {
    metrics.push({ name, help, type: 'gauge', value });
  };
  const lastSuccess = run.success ? run.finishedAt / 1000 : previousSuccessSeconds;
  if (lastSuccess !== undefined)
    gauge('cairn_last_success_timestamp_seconds', 'Unix time the last successful run of this operation finished.', lastSuccess);
  gauge('cairn_last_run_timestamp_seconds', 'Unix time the last run of this operation finished, successful or not.', run.finishedAt / 1000);
  gauge('cairn_last_run_success', '1 if the last run of this operation succeeded, 0 if it failed or was cancelled.', run.success ? 1 : 0);
  gauge(
    'cairn_last_run_duration_seconds',
    'Wall-clock duration of the last run of this operation.',
    (run.finishedAt - run.startedAt) / 1000,
  );
  const b = run.backup;
  if (b) {
    gauge('cairn_backup_bytes_read', 'Bytes the last backup read from its source (unchanged files are not read).', b.bytesRead);
    gauge('cairn_backup_bytes_added', 'Stored (compressed, encrypted) bytes the last backup added to the repository.', b.bytesAdded);
    gauge('cairn_backup_duration_seconds', 'Duration of the last backup.', b.durationMs / 1000);
    gauge(
      'cairn_backup_dedupe_ratio',
      "Share of the last snapshot's bytes already in the repository (0: all new, 1: nothing new).",
      b.totalBytes > 0 ? Math.min(1, Math.max(0, 1 - b.rawBytesAdded / b.totalBytes)) : 1,
    );
    gauge('cairn_snapshot_files', 'Files in the last snapshot.', b.totalFiles);
    gauge('cairn_snapshot_bytes', 'Logical bytes in the last snapshot.', b.totalBytes);
  }
  return metrics.map((m) => `# HELP ${m.name} ${m.help}\n# TYPE ${m.name} ${m.type}\n${m.name}${labels} ${format(m.value)}\n`).join('');
}

/** The success time recorded in an existing metrics file, for the same operation. */
export function previousSuccess(text: string, operation: string): number | undefined {
  for (const line of text.split('\n')) {
    const match = /^cairn_last_success_timestamp_seconds\{(.*)\}\s+(\S+)/.exec(line);
    if (!match) continue;
    if (!(match[1] as string).includes(`operation="${escape(operation)}"`)) continue;
    const value = Number(match[2]);
    if (Number.isFinite(value)) return value;
  }
  return undefined;
}

export async function writeMetricsFile(path: string, run: RunMetrics): Promise<void> {
  let old: number | undefined;
  if (!run.success) {
    old = await readFile(path, 'utf8').then(
      (text) => previousSuccess(text, run.operation),
      () => undefined,
    );
  }
  const text = renderMetrics(run, old);
  const tmp = join(dirname(path), `.${basename(path)}.${randomBytes(6).toString('hex')}.tmp`);
  try {
    const handle = await open(tmp, 'wx', 0o644);
    try {
      await handle.writeFile(text);
      await handle.sync();
    } finally {
      await handle.close();
    }
    await rename(tmp, path);
  } catch (error) {
    await unlink(tmp).catch(() => undefined);
    throw error;
  }
}

function escape(value: string): string {
  return value.replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/"/g, '\\"');
}

function format(value: number): string {
  if (Number.isNaN(value)) return 'NaN';
  if (!Number.isFinite(value)) return value > 0 ? '+Inf' : '-Inf';
  return String(value);
}
