import { Stream } from 'node:stream';
import type { Output } from './output.ts';

/**
 * Node's process warnings, reported as the command's own warnings while it runs: `warning: …` on
 * a terminal, a `warning` line with --json, instead of Node's `(node:PID) …` text on stderr, which
 * no script reading the command's output expects.
 *
 * One kind is dropped: MaxListenersExceededWarning on a stream. @google-cloud/storage and
 * teeny-request pass each download's response body through several stream pipelines of their own,
 * and a restore or `verify --read-data` from gs:// printed "Possible EventEmitter memory leak
 * detected. 11 error listeners added to [PassThrough]" for some of them: listeners of one
 * download, released when it ends, not a leak, and nothing an operator can act on. CAIRN_DEBUG
 * shows it anyway.
 */

interface Run {
  output: () => Output;
  debug: boolean;
}

const runs = new Set<Run>();
/** Node's printer (or whatever listened before the first run), put back when the last run ends. */
let replaced: Array<(warning: Error) => void> = [];

function onWarning(warning: Error): void {
  for (const run of runs) {
    if (!run.debug && warning.name === 'MaxListenersExceededWarning' && (warning as { emitter?: unknown }).emitter instanceof Stream)
      continue;
    run.output().warn(`${warning.name}: ${warning.message}`);
  }
}

/** Routes process warnings to the run's output until the returned function is called. */
export function routeProcessWarnings(output: () => Output, debug: boolean): () => void {
  if (runs.size === 0) {
    replaced = process.listeners('warning');
    process.removeAllListeners('warning');
    process.on('warning', onWarning);
  }
  const run: Run = { output, debug };
  runs.add(run);
  return () => {
    if (!runs.delete(run) || runs.size > 0) return;
    process.off('warning', onWarning);
    for (const listener of replaced) process.on('warning', listener);
    replaced = [];
  };
}
