import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import type { Readable, Writable } from 'node:stream';
import { CairnError } from '../core/errors.ts';
import { childEnvironment, type ChildKind } from '../core/child-env.ts';

/**
 * Child processes, spawned from argv arrays only (never a shell string), so no
 * value can inject a command. A failure says which of three things happened:
 * the program could not be started, it exited non-zero, or a signal killed it,
 * and carries the end of its stderr. Secrets go through a private file, a
 * file descriptor or (etcdctl's login, granted explicitly) the environment,
 * never argv (argv is world-readable in /proc). Every child's environment is
 * built by childEnvironment (core/child-env.ts): no Cairn secret reaches it.
 */
export type ProcessFailureKind = 'spawn' | 'exit' | 'signal';

export class ProcessError extends CairnError {
  readonly kind: ProcessFailureKind;
  readonly command: string;
  readonly processExitCode: number | null;
  readonly stderr: string;

  constructor(
    kind: ProcessFailureKind,
    command: string,
    detail: { code?: number | null; signal?: string | null; stderr?: string; cause?: unknown; hint?: string },
  ) {
    const stderr = (detail.stderr ?? '').trim();
    const what =
      kind === 'spawn'
        ? `could not start ${command}`
        : kind === 'exit'
          ? `${command} exited with code ${detail.code}`
          : `${command} was killed by ${detail.signal}`;
    super('Cairn.Failure', stderr ? `${what}: ${lastLines(stderr, 5)}` : what, { hint: detail.hint, cause: detail.cause });
    this.name = 'ProcessError';
    this.kind = kind;
    this.command = command;
    this.processExitCode = detail.code ?? null;
    this.stderr = stderr;
  }
}

function lastLines(text: string, count: number): string {
  return text.split('\n').slice(-count).join(' | ').slice(-1000);
}

export interface RunOptions {
  /** The environment the child's is built from (process.env by default); what the child's kind is denied is removed. */
  env?: NodeJS.ProcessEnv;
  /** What the child is (core/child-env.ts); `tool` by default, runHook passes `hook`. */
  kind?: ChildKind;
  /** Variables the child is given on purpose, added after the environment is scrubbed (etcdctl's ETCDCTL_USER=name:password). */
  grant?: Readonly<Record<string, string | undefined>>;
  cwd?: string;
  /** Bytes to write to stdin (then it is closed). */
  input?: Buffer | string;
  /** A stream piped into stdin. */
  stdin?: Readable;
  /** Where stdout goes; by default it is collected and returned. */
  stdout?: Writable;
  /** Called with each stderr line (logging); stderr is also kept for the error message. */
  onStderr?: (line: string) => void;
  signal?: AbortSignal;
  hint?: string;
}

export interface RunResult {
  stdout: string;
  stderr: string;
}

/** Runs a program to completion. */
export async function run(argv: readonly string[], options: RunOptions = {}): Promise<RunResult> {
  const child = start(argv, options);
  return finish(child, argv, options);
}

/** Starts a program whose stdout the caller reads as a stream; `done` settles when it exits. */
export function stream(
  argv: readonly string[],
  options: Omit<RunOptions, 'stdout'> = {},
): { stdout: Readable; done: Promise<RunResult>; child: ChildProcess } {
  const child = start(argv, { ...options, stdout: undefined }, true);
  const done = finish(child, argv, options, true);
  return { stdout: child.stdout as Readable, done, child };
}

function start(argv: readonly string[], options: RunOptions, streaming = false): ChildProcess {
  const [program, ...args] = argv;
  if (!program) throw new CairnError('Cairn.Usage', 'empty command');
  const spawnOptions: SpawnOptions = {
    env: childEnvironment(options.env ?? process.env, options.kind ?? 'tool', options.grant),
    cwd: options.cwd,
    stdio: [options.input !== undefined || options.stdin ? 'pipe' : 'ignore', options.stdout || streaming ? 'pipe' : 'pipe', 'pipe'],
    signal: options.signal,
  };
  const child = spawn(program, args, spawnOptions);
  if (options.input !== undefined) child.stdin?.end(options.input);
  else if (options.stdin && child.stdin) {
    options.stdin.pipe(child.stdin);
    child.stdin.on('error', () => undefined); // the child closing stdin early shows as its exit status
  }
  if (options.stdout && child.stdout) child.stdout.pipe(options.stdout);
  return child;
}

function finish(child: ChildProcess, argv: readonly string[], options: RunOptions, streaming = false): Promise<RunResult> {
  const name = argv[0] as string;
  return new Promise((resolve, reject) => {
    let stdout = '';
    let stderr = '';
    let partial = '';
    if (!streaming && !options.stdout) child.stdout?.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr?.on('data', (d: Buffer) => {
      const text = d.toString();
      stderr = (stderr + text).slice(-64 * 1024);
      if (options.onStderr) {
        const lines = (partial + text).split('\n');
        partial = lines.pop() ?? '';
        for (const line of lines) if (line.trim()) options.onStderr(line);
      }
    });
    child.on('error', (error: NodeJS.ErrnoException) => {
      if (error.name === 'AbortError')
        reject(new CairnError('Cairn.Cancelled', `${name} was stopped: the operation was cancelled`, { cause: error }));
      else
        reject(
          new ProcessError('spawn', name, {
            cause: error,
            hint: error.code === 'ENOENT' ? `install ${name} or put it on PATH` : options.hint,
          }),
        );
    });
    child.on('close', (code, signal) => {
      if (partial.trim() && options.onStderr) options.onStderr(partial);
      if (code === 0) resolve({ stdout, stderr });
      else if (signal) reject(new ProcessError('signal', name, { signal, stderr, hint: options.hint }));
      else reject(new ProcessError('exit', name, { code, stderr, hint: options.hint }));
    });
  });
}

/** Runs an operator-supplied hook command (`--pre-hook`, `--stop-cmd`): through `sh -c`, since the operator wrote it as a shell line. */
export async function runHook(kind: string, command: string, options: RunOptions = {}): Promise<RunResult> {
  try {
    return await run(['/bin/sh', '-c', command], { ...options, kind: 'hook' });
  } catch (error) {
    if (error instanceof ProcessError) {
      throw new CairnError('Cairn.Failure', `the ${kind} command failed: ${error.message.replace(/^\/bin\/sh /, '')}`, {
        hint: `fix or test it by hand: sh -c ${JSON.stringify(command)}`,
        cause: error,
      });
    }
    throw error;
  }
}
