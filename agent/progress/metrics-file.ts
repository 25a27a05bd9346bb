import { randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { setTimeout as delay } from 'node:timers/promises';
import { basename, dirname, join } from 'node:path';
import { writeFileDurably } from '../core/durable-file.ts';
import { tryLockFile, type HeldLockFile } from '../core/lock-file.ts';

/**
 * `--metrics-file PATH`: after a command, Prometheus text-format metrics for
 * node_exporter's textfile collector (`--collector.textfile.directory`). One
 * file holds the series of every operation that writes to it: a run replaces
 * its own operation's series and keeps the others' (a `backup` then a `verify`
 * leave both, so an alert on the backup's freshness keeps its data). The file
 * is replaced atomically (a temporary file in the same directory, then a
 * rename), so the collector never reads half a file (it only reads names
 * ending in `.prom`), and the read-merge-write is done under a lock file beside
 * it, so two commands finishing at once do not drop each other's series. A
 * failed run keeps the previous success time of its operation (read back from
 * the old file) and sets cairn_last_run_success to 0, so an alert on
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

/** The samples of one run, in the order they are written. */
function runSamples(run: RunMetrics, previousSuccessSeconds?: number): Sample[] {
  const labels = `{operation="${escape(run.operation)}",repository="${escape(run.repository)}",host="${escape(run.host)}"}`;
  const samples: Sample[] = [];
  const gauge = (name: string, help: string, value: number): void => {
    samples.push({ name, help, type: 'gauge', labels, operation: escape(run.operation), value: format(value) });
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
  return samples;
}

/** One run's metrics alone, as a file holding no other operation's would read. */
export function renderMetrics(run: RunMetrics, previousSuccessSeconds?: number): string {
  return render(runSamples(run, previousSuccessSeconds));
}

/**
 * The file's new text: `run`'s series in place of its operation's old ones,
 * every other operation's series as they were. Each metric keeps one HELP and
 * one TYPE line with all its samples below them, as the text format requires
 * (the collector rejects a file that repeats them). Lines that are not samples
 * of an operation (no `operation` label) are dropped: cairn never wrote them.
 */
export function mergeMetrics(oldText: string, run: RunMetrics): string {
  const old = parseSamples(oldText);
  const operation = escape(run.operation);
  const success = old.find((s) => s.name === 'cairn_last_success_timestamp_seconds' && s.operation === operation);
  const previous = success === undefined ? undefined : Number(success.value);
  const kept = old.filter((s) => s.operation !== operation);
  return render([...runSamples(run, previous !== undefined && Number.isFinite(previous) ? previous : undefined), ...kept]);
}

/** The success time recorded in an existing metrics file, for the same operation. */
export function previousSuccess(text: string, operation: string): number | undefined {
  const found = parseSamples(text).find((s) => s.name === 'cairn_last_success_timestamp_seconds' && s.operation === escape(operation));
  const value = found === undefined ? NaN : Number(found.value);
  return Number.isFinite(value) ? value : undefined;
}

interface Sample {
  name: string;
  help: string;
  type: string;
  /** The label set as written, braces included. */
  labels: string;
  /** The operation label's value as written (escaped). */
  operation: string;
  value: string;
}

function parseSamples(text: string): Sample[] {
  const help = new Map<string, string>();
  const type = new Map<string, string>();
  const samples: Sample[] = [];
  for (const line of text.split('\n')) {
    const comment = /^# (HELP|TYPE) ([a-zA-Z_:][a-zA-Z0-9_:]*) (.*)$/.exec(line);
    if (comment) {
      (comment[1] === 'HELP' ? help : type).set(comment[2] as string, comment[3] as string);
      continue;
    }
    const sample = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?:[^"}]|"(?:[^"\\]|\\.)*")*\})\s+(\S+)\s*$/.exec(line);
    if (!sample) continue;
    const name = sample[1] as string;
    const labels = sample[2] as string;
    const operation = /[{,]operation="((?:[^"\\]|\\.)*)"/.exec(labels)?.[1];
    if (operation === undefined) continue;
    samples.push({ name, help: help.get(name) ?? name, type: type.get(name) ?? 'gauge', labels, operation, value: sample[3] as string });
  }
  return samples;
}

/** Grouped by metric, in the order metrics first appear; within a metric, by operation. */
function render(samples: Sample[]): string {
  const byName = new Map<string, Sample[]>();
  for (const s of samples) byName.set(s.name, [...(byName.get(s.name) ?? []), s]);
  let out = '';
  for (const [name, group] of byName) {
    const first = group[0] as Sample;
    out += `# HELP ${name} ${first.help}\n# TYPE ${name} ${first.type}\n`;
    for (const s of [...group].sort((a, b) => (a.operation < b.operation ? -1 : a.operation > b.operation ? 1 : 0)))
      out += `${name}${s.labels} ${s.value}\n`;
  }
  return out;
}

/** Lock files older than this were left by a process that died: a merge holds its lock for milliseconds. */
const STALE_LOCK_MS = 10_000;
/** How long a writer waits for another one's lock before giving up (the caller warns). */
const LOCK_WAIT_MS = 30_000;

export async function writeMetricsFile(path: string, run: RunMetrics): Promise<void> {
  const lock = join(dirname(path), `.${basename(path)}.lock`);
  const held = await acquire(lock);
  try {
    const old = await readFile(path, 'utf8').catch((error: unknown) => {
      // No file yet: a first run. Any other failure to read it must not erase the other operations' series.
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return '';
      throw error;
    });
    const text = mergeMetrics(old, run);
    await writeFileDurably(path, text, join(dirname(path), `.${basename(path).slice(0, 64)}.${randomBytes(6).toString('hex')}.tmp`), 0o644);
  } finally {
    await held.release();
  }
}

/** Takes the lock file (lock-file.ts), waiting while another writer holds it. */
async function acquire(lock: string): Promise<HeldLockFile> {
  const deadline = Date.now() + LOCK_WAIT_MS;
  for (;;) {
    const held = await tryLockFile(lock, { staleMs: STALE_LOCK_MS, mode: 0o644 });
    if (held) return held;
    if (Date.now() > deadline)
      throw new Error(`${lock} has been held by another cairn for ${LOCK_WAIT_MS / 1000} s; remove it if no cairn command is running`);
    await delay(25);
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
