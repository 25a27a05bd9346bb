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
 * shows it anyway. Where the operator told Node how to report warnings (NODE_NO_WARNINGS,
 * --no-warnings, --disable-warning, --redirect-warnings, --trace-warnings), Node reports them as
 * told.
 */

interface Run {
  output: () => Output;
  debug: boolean;
}

const runs = new Set<Run>();
/** Node's printer (or whatever listened before the first run), put back when the last run ends. */
let replaced: Array<(warning: Error) => void> = [];

function onWarning(warning: Error & { code?: string; detail?: string }): void {
  for (const run of runs) {
    if (!run.debug && warning.name === 'MaxListenersExceededWarning' && (warning as { emitter?: unknown }).emitter instanceof Stream)
      continue;
    const code = warning.code ? ` [${warning.code}]` : '';
    const detail = typeof warning.detail === 'string' ? ` (${warning.detail})` : '';
    run.output().warn(`${warning.name}${code}: ${warning.message}${detail}`);
  }
}

/**
 * Whether the operator chose how Node reports warnings: not at all (NODE_NO_WARNINGS=1 or
 * --no-warnings: Node then installs no printer), some not (--disable-warning), into a file
 * (--redirect-warnings), or with their stacks (--trace-warnings). Node's own handling is then
 * left as it is.
 */
function nodeHandlesWarnings(env: NodeJS.ProcessEnv): boolean {
  if (process.listenerCount('warning') === 0) return true;
  const flags = [...process.execArgv, ...(env.NODE_OPTIONS ?? '').split(/\s+/)];
  return flags.some((flag) => /^--(redirect-warnings|trace-warnings|disable-warning)\b/.test(flag));
}

/** Routes process warnings to the run's output until the returned function is called. */
export function routeProcessWarnings(output: () => Output, debug: boolean, env: NodeJS.ProcessEnv): () => void {
  if (runs.size === 0) {
    if (nodeHandlesWarnings(env)) return () => undefined;
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
