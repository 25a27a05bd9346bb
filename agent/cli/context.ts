import { hostname, userInfo } from 'node:os';
import type { Command } from 'commander';
import { parseDurationMs } from '../core/duration.ts';
import { CairnError } from '../core/errors.ts';
import type { Repository, Who } from '../core/repository.ts';
import type { DeletableStorage } from '../core/storage.ts';
import type { OperationOptions } from '../commands/operation.ts';
import type { EngineRegistry } from '../engines/registry.ts';
import { Output, processStreams, type CliStreams } from './output.ts';
import { wrapStorage, type RunRecord, type StorageFlags } from './storage-options.ts';
// The storage backends, the passphrase reader and the repository (with zod's schemas and the KMS
// client behind it) are imported by the methods that use them, not when the CLI starts:
// `cairn --version` and `--help` need none of them (issue 21, start-up).

/** Options every command inherits from the program. */
export interface GlobalOptions {
  repo?: string;
  passwordFile?: string;
  passwordCommand?: string;
  json?: boolean;
  quiet?: boolean;
  concurrency: number;
  lockWait?: string;
}

/**
 * What a command needs from the CLI around it: the output, the cancellation
 * signal, the environment and the ways to open a repository. Each command file
 * under commands/ exports one `register…(program, cli)`, so adding a command
 * is one file and one line of command-table.ts.
 */
export class Cli {
  readonly env: NodeJS.ProcessEnv;
  readonly streams: CliStreams;
  /** Given by a test (its own engines), else loaded by loadEngines(). */
  private registry: EngineRegistry | undefined;
  readonly controller = new AbortController();
  /** Replaced once the global flags are parsed (--json, --quiet). */
  output: Output;
  /** What --metrics-file reports about this run (storage-options.ts). */
  readonly run: RunRecord = { startedAt: Date.now() };
  /** An exit code for an outcome that is not an error to report (wal-fetch: "never archived" is exit 1, silently). */
  quietExitCode: number | undefined;

  constructor(env: NodeJS.ProcessEnv, streams: CliStreams = processStreams(), engines?: EngineRegistry) {
    this.env = env;
    this.streams = streams;
    this.registry = engines;
    this.output = new Output({ json: jsonFromEnvironment(env), quiet: false, streams });
  }

  /** The output for the global flags (--json, --quiet); `dump`, whose stdout is the file, asks for quiet text. */
  setOutput(flags: { json?: boolean | undefined; quiet?: boolean | undefined }): void {
    this.output = new Output({
      json: Boolean(flags.json) || jsonFromEnvironment(this.env),
      quiet: Boolean(flags.quiet),
      streams: this.streams,
    });
  }

  /**
   * Loads the built-in engines (their option schemas are most of what the CLI would otherwise
   * evaluate at start-up), unless a test gave its own. registerCommands calls it before backup
   * and restore register (they take every engine's flags); other commands call it if they need it.
   */
  async loadEngines(): Promise<EngineRegistry> {
    this.registry ??= (await import('../engines/registry.ts')).engineRegistry;
    return this.registry;
  }

  /** The engines --engine names and snapshots are restored with, whose flags backup and restore take. */
  get engines(): EngineRegistry {
    if (!this.registry) throw new Error('the engines were read before Cli.loadEngines() loaded them');
    return this.registry;
  }

  get signal(): AbortSignal {
    return this.controller.signal;
  }

  globals(cmd: Command): GlobalOptions {
    return cmd.optsWithGlobals<GlobalOptions>();
  }

  /** The storage named by --repo (or CAIRN_REPOSITORY). */
  async storage(cmd: Command): Promise<DeletableStorage> {
    const g = this.globals(cmd);
    if (!g.repo) throw new CairnError('Cairn.Usage', 'no repository given', { hint: 'pass --repo URL or set CAIRN_REPOSITORY' });
    const storage = await this.storageAt(g.repo, cmd);
    this.run.repository ??= storage.location;
    return storage;
  }

  /** Another repository's storage (e.g. copy's target), under the same limits, cancellation and --storage-hook. */
  async storageAt(url: string, cmd: Command, base?: DeletableStorage): Promise<DeletableStorage> {
    const storage = base ?? (await (await import('../storage/open.ts')).openStorage(url, this.env));
    return wrapStorage(storage, cmd.optsWithGlobals<StorageFlags>(), { env: this.env, signal: this.signal, stderr: this.streams.stderr });
  }

  /** The passphrase as given (passphrase.ts: flags, CAIRN_PASSWORD_FILE/_COMMAND, CAIRN_PASSWORD) or a prompt (confirm: ask twice). */
  async passphrase(cmd: Command, confirm = false): Promise<string> {
    const g = this.globals(cmd);
    const { readPassphrase } = await import('./passphrase.ts');
    return readPassphrase({ env: this.env, passwordFile: g.passwordFile, passwordCommand: g.passwordCommand, confirm });
  }

  async openRepo(cmd: Command): Promise<{ g: GlobalOptions; repo: Repository; storage: DeletableStorage }> {
    const storage = await this.storage(cmd);
    const g = this.globals(cmd);
    const { defaultSources, openRepository } = await import('./open-repository.ts');
    // Passphrase given, else the repository's KMS keys, else a prompt (unlock.ts).
    return {
      g,
      repo: await openRepository(
        storage,
        defaultSources({ env: this.env, passwordFile: g.passwordFile, passwordCommand: g.passwordCommand }),
      ),
      storage,
    };
  }

  who(host?: string): Who {
    return { host: host ?? hostname(), user: currentUser() };
  }

  /** Lease length (CAIRN_LOCK_LEASE, seconds; shorter in tests) and how long to wait for a lock. */
  locking(g: GlobalOptions): { leaseMs?: number; lockWaitMs?: number } {
    const lease = this.env.CAIRN_LOCK_LEASE;
    return {
      ...(lease ? { leaseMs: parseDurationMs(/^\d+$/.test(lease) ? `${lease}s` : lease) } : {}),
      ...(g.lockWait ? { lockWaitMs: parseDurationMs(g.lockWait) } : {}),
    };
  }

  /**
   * What every repository command is given, in one place: who runs it, where
   * its progress goes, the lease and lock wait, the concurrency and the
   * cancellation signal. The library turns it into its OperationContext.
   */
  operation(g: GlobalOptions, host?: string): OperationOptions & { concurrency: number; signal: AbortSignal } {
    return { who: this.who(host), progress: this.output, concurrency: g.concurrency, signal: this.signal, ...this.locking(g) };
  }
}

export function currentUser(): string {
  try {
    return userInfo().username;
  } catch {
    return String(process.getuid?.() ?? 'unknown');
  }
}

export const collect = (value: string, previous: string[]): string[] => [...previous, value];

export function positiveInt(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1 || n > 64)
    throw new CairnError('Cairn.Usage', `expected a whole number from 1 to 64, got ${JSON.stringify(value)}`);
  return n;
}

export function nonNegativeInt(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0) throw new CairnError('Cairn.Usage', `expected a whole number, got ${JSON.stringify(value)}`);
  return n;
}

export function parsePercent(text: string, allowZero = false): number {
  const n = Number(text.replace(/%$/, ''));
  if (!Number.isFinite(n) || n < 0 || (n === 0 && !allowZero) || n > 100)
    throw new CairnError('Cairn.Usage', `invalid percentage ${JSON.stringify(text)}`, { hint: 'give a number from 0 to 100, e.g. 10%' });
  return n / 100;
}

/**
 * CAIRN_JSON=1 (or true/yes) asks for JSON lines as --json does. Text is the default whatever stdout
 * is, as restic's: `cairn snapshots | less`, `> file` and cron mail read what a terminal shows, and
 * scripts and the SSM document ask for JSON by name.
 */
export function jsonFromEnvironment(env: NodeJS.ProcessEnv): boolean {
  return /^(1|true|yes)$/i.test(env.CAIRN_JSON ?? '');
}
