import { spawn } from 'node:child_process';
import { Writable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { jsonMessageProblem } from '../../agent/cli/json-messages.ts';
import { main } from '../../agent/cli/main.ts';
import type { EngineRegistry } from '../../agent/engines/registry.ts';

export const CAIRN_BIN = fileURLToPath(new URL('../../agent/cli/cairn.js', import.meta.url));

export interface CliResult {
  code: number | null;
  /** The signal that ended the process (runCliProcess only; always null in-process). */
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  /** stdout parsed as JSON lines (what the CLI prints with --json or CAIRN_JSON=1, which runCli and runCliProcess set unless the caller gives CAIRN_JSON). */
  lines: Array<Record<string, unknown>>;
}

/**
 * The environment a run sees: the caller's variables over PATH and HOME, nothing else of the test's
 * own. Prune's GC grace is a second, as the lease is shortened where a test waits on it: tests that
 * are about the grace give their own (or call the library with an injected wait).
 */
function runEnvironment(env: Record<string, string>): Record<string, string> {
  return { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '/tmp', CAIRN_GC_GRACE: '1', CAIRN_JSON: '1', ...env };
}

/** runEnvironment for a run whose text is read: no CAIRN_JSON unless the caller gives one. */
function textEnvironment(env: Record<string, string>): Record<string, string> {
  const all = runEnvironment(env);
  if (env.CAIRN_JSON === undefined) delete all.CAIRN_JSON;
  return all;
}

function result(code: number | null, signal: NodeJS.Signals | null, stdout: string, stderr: string): CliResult {
  const lines = stdout
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as Record<string, unknown>);
  checkMessages(lines);
  return { code, signal, stdout, stderr, lines };
}

/**
 * Every JSON line the CLI prints in any test is held to the documented schema
 * (agent/cli/json-messages.ts, docs/json-output.md): a message that drifts fails the test that
 * printed it. Lines without the envelope (`time` and `type`) are not the CLI's: a dumped file's.
 */
export function checkMessages(lines: Array<Record<string, unknown>>): void {
  for (const line of lines) {
    if (typeof line.time !== 'string' || typeof line.type !== 'string') continue;
    const problem = jsonMessageProblem(line);
    if (problem)
      throw new Error(
        `cairn printed a JSON line docs/json-output.md does not describe (${problem}): ${JSON.stringify(line).slice(0, 400)}`,
      );
  }
}

/** Keeps what is written to it; not a terminal (the CLI shows no progress line on it). */
class Captured extends Writable {
  text = '';
  override _write(chunk: Buffer | string, _encoding: BufferEncoding, done: () => void): void {
    this.text += chunk.toString();
    done();
  }
}

/**
 * Variables that libraries read from process.env themselves, not from the environment main() is
 * given: the AWS SDK's credential and endpoint chain (AWS_ACCESS_KEY_ID, AWS_ENDPOINT_URL_KMS, ...),
 * Google's client (GOOGLE_APPLICATION_CREDENTIALS, its proxies), os.tmpdir() (TMPDIR). An
 * in-process run puts the caller's values of these into process.env while it runs, and takes the
 * test's own out, as a child given only the caller's environment would see them.
 */
const PROCESS_GLOBAL = /^(AWS_|GOOGLE_|GCLOUD_|CLOUDSDK_)|^((https?|no)_proxy|TMPDIR)$/i;

/** The process.env overlay of the in-process runs in flight: they may share it only if they agree on it. */
let overlay: { values: Map<string, string>; saved: Map<string, string | undefined>; runs: number } | undefined;

function applyOverlay(env: Record<string, string>): () => void {
  const values = new Map(Object.entries(env).filter(([key]) => PROCESS_GLOBAL.test(key)));
  if (overlay) {
    const mine = [...values].map(([k, v]) => `${k}=${v}`).sort();
    const theirs = [...overlay.values].map(([k, v]) => `${k}=${v}`).sort();
    if (mine.join('\n') !== theirs.join('\n')) {
      throw new Error(
        `runCli: in-process runs at the same time need the same process-global variables (${[...new Set([...values.keys(), ...overlay.values.keys()])].join(', ')}); use runCliProcess for one of them`,
      );
    }
    overlay.runs++;
  } else {
    const saved = new Map<string, string | undefined>();
    for (const key of Object.keys(process.env)) if (PROCESS_GLOBAL.test(key)) saved.set(key, process.env[key]);
    for (const key of saved.keys()) Reflect.deleteProperty(process.env, key);
    for (const [key, value] of values) {
      if (!saved.has(key)) saved.set(key, undefined);
      process.env[key] = value;
    }
    overlay = { values, saved, runs: 1 };
  }
  return () => {
    if (!overlay || --overlay.runs > 0) return;
    for (const [key, value] of overlay.saved) {
      if (value === undefined) Reflect.deleteProperty(process.env, key);
      else process.env[key] = value;
    }
    overlay = undefined;
  };
}

/**
 * Runs `cairn` in this process: main(argv, env, streams) from agent/cli/main.ts, the same
 * function the bin calls, with captured (non-TTY) streams and CAIRN_JSON=1 (unless the caller
 * gives CAIRN_JSON), so it speaks JSON lines as scripts ask it to. The result has the shape of runCliProcess's (signal always null). Use
 * runCliProcess when the test is about the process: signals, exit, memory, stdin, cwd, the
 * bin's own start (cairn.js: wal-push/wal-fetch's fast entry, UV_THREADPOOL_SIZE), a daemon,
 * or another user.
 */
export async function runCli(args: string[], env: Record<string, string>, options: { engines?: EngineRegistry } = {}): Promise<CliResult> {
  const stdout = new Captured();
  const stderr = new Captured();
  const runEnv = runEnvironment(env);
  const restore = applyOverlay(runEnv);
  try {
    const code = await main(['node', 'cairn', ...args], runEnv, { stdout, stderr }, options.engines);
    return result(code, null, stdout.text, stderr.text);
  } finally {
    restore();
  }
}

/** A captured stdout that says it is a terminal, as an operator's is. */
class CapturedTerminal extends Captured {
  readonly isTTY = true;
}

/**
 * runCli without CAIRN_JSON and with stdout taken for a terminal, so a command prints the text an
 * operator reads (stderr stays a non-terminal: no progress line). `lines` is then empty unless the
 * text holds JSON.
 */
export async function runCliText(args: string[], env: Record<string, string>): Promise<CliResult> {
  const stdout = new CapturedTerminal();
  const stderr = new Captured();
  const runEnv = textEnvironment(env);
  const restore = applyOverlay(runEnv);
  try {
    const code = await main(['node', 'cairn', ...args], runEnv, { stdout, stderr });
    return result(code, null, stdout.text, stderr.text);
  } finally {
    restore();
  }
}

/** Runs the real `cairn` bin as a child process (with CAIRN_JSON=1 unless the caller gives CAIRN_JSON: JSON lines). */
export function runCliProcess(
  args: string[],
  env: Record<string, string>,
  options: { onSpawn?: (pid: number) => void; cwd?: string } = {},
): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CAIRN_BIN, ...args], {
      env: runEnvironment(env),
      stdio: ['ignore', 'pipe', 'pipe'],
      ...(options.cwd === undefined ? {} : { cwd: options.cwd }),
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    if (child.pid !== undefined) options.onSpawn?.(child.pid);
    child.on('close', (code, signal) => resolve(result(code, signal, stdout, stderr)));
  });
}

export function lastOfType(result: CliResult, type: string): Record<string, unknown> | undefined {
  return result.lines.filter((l) => l.type === type).at(-1);
}
