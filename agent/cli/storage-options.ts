import { hostname } from 'node:os';
import type { Writable } from 'node:stream';
import { Option, type Command } from 'commander';
import { CairnError, errorMessage } from '../core/errors.ts';
import type { DeletableStorage } from '../core/storage.ts';
import { writeMetricsFile, type RunMetrics } from '../progress/metrics-file.ts';
import { HookStorage } from '../storage/hook.ts';
import { TransferStorage, parseMBps } from '../storage/throttle.ts';

/** Global flags about how the CLI talks to storage, and the metrics file. */
export interface StorageFlags {
  storageHook?: string;
  limitUpload?: string;
  limitDownload?: string;
  maxTransfers?: number;
  metricsFile?: string;
}

/** Commands that write a metrics file when --metrics-file is given. */
export const METRICS_OPERATIONS = new Set(['backup', 'restore', 'verify', 'prune', 'check', 'copy']);

export function addStorageOptions(program: Command): Command {
  return program
    .addOption(
      new Option(
        '--storage-hook <command>',
        'pass every object through this command (--operation write|read appended; docs/storage-hooks.md)',
      ).env('CAIRN_STORAGE_HOOK'),
    )
    .addOption(
      new Option('--limit-upload <MBps>', 'limit uploads to this many megabytes per second (the whole process)').env('CAIRN_LIMIT_UPLOAD'),
    )
    .addOption(
      new Option('--limit-download <MBps>', 'limit downloads to this many megabytes per second (the whole process)').env(
        'CAIRN_LIMIT_DOWNLOAD',
      ),
    )
    .addOption(
      new Option('--max-transfers <n>', 'cap storage requests in flight at once, independently of --concurrency')
        .env('CAIRN_MAX_TRANSFERS')
        .argParser(transferCount),
    )
    .addOption(
      new Option(
        '--metrics-file <path>',
        'backup/restore/verify/prune: write Prometheus metrics here afterwards (node_exporter textfile collector)',
      ).env('CAIRN_METRICS_FILE'),
    );
}

function transferCount(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1 || n > 256)
    throw new CairnError('Cairn.Usage', `--max-transfers expects a whole number from 1 to 256, got ${JSON.stringify(value)}`);
  return n;
}

/**
 * The backend as commands see it: limits, the transfer cap and cancellation
 * on the stored bytes (TransferStorage), then the hook on top, so limits count
 * what really crosses the network and a cached hook result costs no transfer.
 */
export function wrapStorage(
  base: DeletableStorage,
  flags: StorageFlags,
  context: { env: NodeJS.ProcessEnv; signal: AbortSignal; stderr: Writable },
): DeletableStorage {
  const storage: DeletableStorage = new TransferStorage(base, {
    uploadBytesPerSecond: flags.limitUpload ? parseMBps(flags.limitUpload, '--limit-upload') : undefined,
    downloadBytesPerSecond: flags.limitDownload ? parseMBps(flags.limitDownload, '--limit-download') : undefined,
    maxTransfers: flags.maxTransfers,
    signal: context.signal,
  });
  if (!flags.storageHook?.trim()) return storage;
  return new HookStorage(storage, {
    command: flags.storageHook,
    env: context.env,
    onStderr: (line) => context.stderr.write(`storage-hook: ${line}\n`),
  });
}

/** What the run tells the metrics file; filled as the command goes. */
export interface RunRecord {
  operation?: string;
  startedAt: number;
  repository?: string;
  backup?: RunMetrics['backup'];
}

/** Writes the metrics file after a command, when asked for one. A failure to write warns and does not change the exit code. */
export async function finishRun(flags: StorageFlags, run: RunRecord, success: boolean, stderr: Writable): Promise<void> {
  if (!flags.metricsFile || !run.operation || !METRICS_OPERATIONS.has(run.operation)) return;
  try {
    await writeMetricsFile(flags.metricsFile, {
      operation: run.operation,
      repository: run.repository ?? 'unknown',
      host: hostname(),
      success,
      startedAt: run.startedAt,
      finishedAt: Date.now(),
      backup: success ? run.backup : undefined,
    });
  } catch (error) {
    stderr.write(`warning: could not write the metrics file ${flags.metricsFile}: ${errorMessage(error)}\n`);
  }
}
