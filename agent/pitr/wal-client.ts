import { spawn, type ChildProcess } from 'node:child_process';
import { open } from 'node:fs/promises';
import { connect } from 'node:net';
import { basename, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { childEnvironment } from '../core/child-env.ts';
import { CairnError, type ErrorCode } from '../core/errors.ts';
import { decodeResponse, encodeLine, MAX_LINE, type WalRequest, type WalResponse } from './wal-protocol.ts';
import { chooseSpoolDir, ensureSpoolDir, repositoryIdentity, spoolPaths, type SpoolPaths } from './wal-spool.ts';
import { streamOfDataDirectory } from '../process/pg-control.ts';

/**
 * wal-push and wal-fetch: thin clients of the WAL daemon (wal-daemon.ts).
 * PostgreSQL runs them once per segment, so they never open the repository
 * (no scrypt, no KMS): they find the daemon's socket, starting the daemon
 * when there is none, send one request and wait for its answer.
 */

/**
 * The CLI entry the daemon is started with. From the sources that is agent/cli/cairn.js; in the
 * agent bundle (one file, cdk/lib/agent-bundle.ts) this module is the bundle itself, which is the
 * CLI entry: a path relative to it would point outside the install directory.
 */
const HERE = fileURLToPath(import.meta.url);
const CAIRN_SCRIPT = HERE.endsWith('wal-client.ts') ? fileURLToPath(new URL('../cli/cairn.js', import.meta.url)) : HERE;
const START_TIMEOUT_MS = 60_000;

export interface WalClientOptions {
  /** The repository as the user named it (--repo / CAIRN_REPOSITORY). */
  repo: string;
  /** Global options the daemon is started with (--repo, --password-file, storage limits), paths made absolute. */
  globalArgs: string[];
  spoolDir?: string | undefined;
  stream?: string | undefined;
  /** wal-fetch --stage-dir: the restore's staging directory (relative to the data directory), which the daemon fills ahead. */
  stageDir?: string | undefined;
  env: NodeJS.ProcessEnv;
  cwd: string;
}

export interface DaemonHandle {
  spool: SpoolPaths;
  stream: string;
  /** The daemon in the foreground: node, cairn.js, the global options, wal-daemon and its own. */
  startArgv: string[];
  env: NodeJS.ProcessEnv;
}

/** The global options a daemon is started with, as the client was given them (paths absolute: the daemon runs in the spool directory). */
export interface ForwardedFlags {
  repo: string;
  passwordFile?: string | undefined;
  passwordCommand?: string | undefined;
  storageHook?: string | undefined;
  limitUpload?: string | undefined;
  limitDownload?: string | undefined;
  maxTransfers?: string | number | undefined;
  concurrency?: string | number | undefined;
}

export function clientOptionsFrom(
  flags: ForwardedFlags,
  rest: { spoolDir?: string | undefined; stream?: string | undefined; stageDir?: string | undefined; env: NodeJS.ProcessEnv; cwd: string },
): WalClientOptions {
  const repo = repositoryIdentity(flags.repo);
  const globalArgs = ['--repo', repo];
  if (flags.concurrency !== undefined) globalArgs.push('--concurrency', String(flags.concurrency));
  // The daemon runs in the spool directory: a relative passphrase file, given either way, is resolved here.
  const envFile = flags.passwordCommand || rest.env.CAIRN_PASSWORD_COMMAND ? undefined : rest.env.CAIRN_PASSWORD_FILE || undefined;
  const passwordFile = flags.passwordFile ?? envFile;
  if (passwordFile) globalArgs.push('--password-file', resolve(rest.cwd, passwordFile));
  // A command is run by the daemon, in the spool directory (documented in docs/pitr.md): it must not depend on the working directory.
  if (flags.passwordCommand) globalArgs.push('--password-command', flags.passwordCommand);
  if (flags.storageHook) globalArgs.push('--storage-hook', flags.storageHook);
  if (flags.limitUpload) globalArgs.push('--limit-upload', flags.limitUpload);
  if (flags.limitDownload) globalArgs.push('--limit-download', flags.limitDownload);
  if (flags.maxTransfers !== undefined) globalArgs.push('--max-transfers', String(flags.maxTransfers));
  return { repo, globalArgs, ...rest };
}

/** The daemon for this repository and stream (the stream from the data directory's pg_control unless given). */
export async function daemonFor(options: WalClientOptions): Promise<DaemonHandle> {
  const stream = options.stream ?? (await streamOfDataDirectory(options.cwd));
  const dir = await chooseSpoolDir(options.spoolDir, options.env);
  await ensureSpoolDir(dir);
  const spool = spoolPaths(dir, options.repo, stream);
  return {
    spool,
    stream,
    startArgv: [process.execPath, CAIRN_SCRIPT, ...options.globalArgs, 'wal-daemon', '--spool-dir', dir, '--stream', stream],
    env: options.env,
  };
}

/** Archives one file (archive_command's %p, relative to the data directory). Resolves once it is durably stored and described. */
export async function walPush(path: string, options: WalClientOptions): Promise<'stored' | 'already-archived'> {
  const daemon = await daemonFor(options);
  const answer = await ask(daemon, { v: 1, op: 'push', path: resolve(options.cwd, path), dataDir: resolve(options.cwd) });
  if (answer.op !== 'push') throw unexpected(answer.op);
  return answer.outcome;
}

/** Writes the archived file `name` to `dest`; false when it was never archived (PostgreSQL then tries elsewhere or ends recovery). */
export async function walFetch(name: string, dest: string, options: WalClientOptions): Promise<boolean> {
  const daemon = await daemonFor(options);
  const stage = options.stageDir === undefined ? undefined : resolve(options.cwd, options.stageDir);
  const answer = await ask(daemon, { v: 1, op: 'fetch', name: basename(name), dest: resolve(options.cwd, dest), stage });
  if (answer.op !== 'fetch') throw unexpected(answer.op);
  return answer.found;
}

function unexpected(op: string): CairnError {
  return new CairnError('Cairn.Failure', `the WAL daemon answered a different request (${op})`, {
    hint: 'stop it with `cairn wal-daemon --stop` and try again',
  });
}

/** Sends a request, starting the daemon first when none listens, or again when the one that answered was stopping (idle). */
export async function ask(daemon: DaemonHandle, request: WalRequest): Promise<Extract<WalResponse, { ok: true }>> {
  for (let attempt = 1; ; attempt++) {
    const answer = await askOnce(daemon, request);
    if (answer.ok) return answer;
    if (!answer.error.retry || attempt >= 100) throw fromWire(answer.error);
    await sleep(50);
  }
}

async function askOnce(daemon: DaemonHandle, request: WalRequest): Promise<WalResponse> {
  let answer = await exchange(daemon.spool, request);
  if (answer === 'absent') {
    const starter = startDaemon(daemon);
    try {
      const deadline = Date.now() + START_TIMEOUT_MS;
      for (;;) {
        await sleep(20);
        answer = await exchange(daemon.spool, request);
        if (answer !== 'absent') break;
        // Exit 0 means another client's daemon won the race to start: keep knocking.
        if (starter.failed()) throw await starter.failure();
        if (Date.now() > deadline) {
          throw new CairnError('Cairn.Failure', `the WAL daemon did not start within ${START_TIMEOUT_MS / 1000} s`, {
            hint: `see its log ${daemon.spool.log}`,
          });
        }
      }
    } finally {
      starter.detach();
    }
  }
  return answer;
}

/** Only asks a daemon that is already running: undefined when there is none. */
export async function askRunning(spool: SpoolPaths, request: WalRequest): Promise<Extract<WalResponse, { ok: true }> | undefined> {
  const answer = await exchange(spool, request);
  if (answer === 'absent') return undefined;
  if (!answer.ok) throw fromWire(answer.error);
  return answer;
}

function fromWire(error: { code: string; message: string; hint?: string | undefined }): CairnError {
  const known = new CairnError(error.code as ErrorCode, error.message, { hint: error.hint });
  return known.exitCode === undefined ? new CairnError('Cairn.Failure', error.message, { hint: error.hint }) : known;
}

/** One request on one connection. 'absent': nothing listens (no socket, or a stale one), so nothing was sent. */
function exchange(spool: SpoolPaths, request: WalRequest): Promise<WalResponse | 'absent'> {
  return new Promise((resolvePromise, reject) => {
    const socket = connect(spool.socket);
    let connected = false;
    let received = '';
    socket.on('connect', () => {
      connected = true;
      socket.write(encodeLine(request));
    });
    socket.on('data', (chunk: Buffer) => {
      received += chunk.toString();
      if (received.length > MAX_LINE) socket.destroy(new Error('answer too long'));
    });
    socket.on('error', (error: NodeJS.ErrnoException) => {
      if (!connected && (error.code === 'ENOENT' || error.code === 'ECONNREFUSED')) resolvePromise('absent');
      else if (!connected)
        reject(
          new CairnError('Cairn.Failure', `cannot reach the WAL daemon at ${spool.socket}: ${error.message}`, {
            hint: `check the spool directory ${spool.dir}`,
            cause: error,
          }),
        );
    });
    socket.on('close', () => {
      if (!connected) return;
      const line = received.split('\n')[0] ?? '';
      if (!received.includes('\n')) {
        reject(
          new CairnError(
            'Cairn.Failure',
            'the WAL daemon closed the connection before answering (it stopped or was killed); nothing is reported archived',
            {
              hint: `PostgreSQL retries on its own; see the daemon's log ${spool.log}`,
            },
          ),
        );
        return;
      }
      try {
        resolvePromise(decodeResponse(line));
      } catch (error) {
        reject(
          new CairnError('Cairn.Failure', `the WAL daemon's answer was not understood: ${(error as Error).message}`, {
            hint: 'is the daemon the same cairn version? stop it with `cairn wal-daemon --stop`',
            cause: error,
          }),
        );
      }
    });
  });
}

interface Starter {
  failed(): boolean;
  failure(): Promise<CairnError>;
  detach(): void;
}

/**
 * Starts the daemon detached (its own session, so the database's signals to
 * its process group do not reach it), logging to the spool's log file. Its
 * stdout is read only until it is up: a daemon that cannot open the
 * repository prints the error there (JSON, as the CLI does on a pipe).
 */
function startDaemon(daemon: DaemonHandle): Starter {
  let child: ChildProcess | undefined;
  let exitCode: number | null | undefined;
  let spawnError: Error | undefined;
  let stdout = '';
  const ready = (async () => {
    const log = await open(daemon.spool.log, 'a', 0o600);
    try {
      child = spawn(daemon.startArgv[0] as string, daemon.startArgv.slice(1), {
        detached: true,
        cwd: daemon.spool.dir,
        // Cairn itself: it keeps the repository passphrase, nothing else secret (core/child-env.ts).
        env: childEnvironment(daemon.env, 'cairn'),
        stdio: ['ignore', 'pipe', log.fd],
      });
    } finally {
      await log.close();
    }
    child.stdout?.on('data', (d: Buffer) => (stdout = (stdout + d.toString()).slice(-16_384)));
    child.on('error', (error) => (spawnError = error));
    child.on('exit', (code, signal) => (exitCode = code ?? (signal ? 128 : 1)));
  })().catch((error: unknown) => {
    spawnError = error as Error;
  });
  return {
    failed: () => spawnError !== undefined || (exitCode !== undefined && exitCode !== 0),
    async failure() {
      await ready;
      if (spawnError)
        return new CairnError('Cairn.Failure', `could not start the WAL daemon: ${spawnError.message}`, {
          hint: `see ${daemon.spool.log}`,
          cause: spawnError,
        });
      await sleep(50); // the last of its stdout
      const reported = stdout
        .split('\n')
        .filter((l) => l.startsWith('{'))
        .map((l) => {
          try {
            return JSON.parse(l) as { type?: string; code?: string; message?: string; hint?: string };
          } catch {
            return {};
          }
        })
        .find((l) => l.type === 'error' && l.code && l.message);
      if (reported)
        return fromWire({
          code: reported.code as string,
          message: `the WAL daemon could not start: ${reported.message as string}`,
          hint: reported.hint,
        });
      return new CairnError('Cairn.Failure', `the WAL daemon exited with code ${exitCode ?? '?'} while starting`, {
        hint: `see its log ${daemon.spool.log}`,
      });
    },
    detach() {
      void ready.then(() => {
        child?.stdout?.destroy();
        child?.unref();
      });
    },
  };
}

/**
 * wal-fetch's exit status for a file never archived: 1, as PostgreSQL's restore_command expects,
 * unless CAIRN_WAL_FETCH_MISSING_EXIT asks for another (1–125): the snippet `cairn restore` writes
 * asks for 99, so that a cairn that fails to start (exit 1) is not taken for "not archived".
 */
export function walFetchMissingExit(env: NodeJS.ProcessEnv): number {
  const asked = Number(env.CAIRN_WAL_FETCH_MISSING_EXIT);
  return Number.isInteger(asked) && asked >= 1 && asked <= 125 ? asked : 1;
}
