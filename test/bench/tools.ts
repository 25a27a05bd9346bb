import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { builtCli } from '../../agent/cli/built-cli.js';
import { CommandFailed, runTimed, type Timed } from './measure.ts';

/**
 * The tools under test, each driven through its command line exactly as a user
 * would run it. Every timed call is one whole subprocess (start-up included).
 */

/** The TypeScript sources' entry (the PITR section's archive_command runs its light wal-push entry). */
export const CAIRN_CLI = fileURLToPath(new URL('../../agent/cli/cairn.js', import.meta.url));
/**
 * The package bin, what `npx cairn` runs and what hosts run (the same bundle): the build of
 * `npm run build:cli`, which buildCairn() makes before the timed commands, or the sources when
 * a file changed after it (cliKind() says which ran).
 */
export const CAIRN_BIN = fileURLToPath(new URL('../../agent/cli/bin.js', import.meta.url));
const ROOT = new URL('../../', import.meta.url);

/** Builds the CLI the bin runs (npm run build:cli); a failed build leaves the bin on the sources, which the report says. */
export function buildCairn(): void {
  const built = spawnSync(process.execPath, [fileURLToPath(new URL('agent/cli/build.ts', ROOT))], { encoding: 'utf8' });
  if (built.status !== 0) throw new CommandFailed(`npm run build:cli failed: ${built.stderr}`);
}

/** What the bin runs now: the build, or the sources (a file was edited after the build). */
export function cliKind(): 'build' | 'sources' {
  return builtCli(ROOT).entry ? 'build' : 'sources';
}
const PASSWORD = 'cairn-bench-password';

export interface Logs {
  dir: string;
  seq: number;
}

/** A log file prefix per command, numbered in run order so the logs read as a timeline. */
function logPrefix(logs: Logs, label: string): string {
  logs.seq++;
  return join(logs.dir, `${String(logs.seq).padStart(2, '0')}-${label.replace(/[^a-z0-9]+/gi, '-')}`);
}

export interface BackupResult extends Timed {
  /** What the tool itself says it added (cairn: stored bytes; restic 0.14: bytes before compression). */
  reportedAddedBytes: number | undefined;
}

/** A repository-based tool (Cairn, restic): the same phases, the same meaning. */
export interface RepoTool {
  readonly name: string;
  readonly repo: string;
  init(): Promise<void>;
  backup(data: string): Promise<BackupResult>;
  restore(target: string): Promise<Timed>;
  /** Where the restore put the data's contents (restic recreates the absolute path under the target). */
  restoredRoot(target: string, data: string): string;
  verify(): Promise<Timed>;
}

/** The JSON lines a command printed whose `key` is `value`, last one. */
function lastJsonLine(file: string, key: string, value: string): Record<string, unknown> | undefined {
  const lines = readFileSync(file, 'utf8')
    .split('\n')
    .filter((l) => l.startsWith('{'));
  for (const line of lines.reverse()) {
    try {
      const parsed = JSON.parse(line) as Record<string, unknown>;
      if (parsed[key] === value) return parsed;
    } catch {
      // progress output cut mid-line; not ours to judge here
    }
  }
  return undefined;
}

export class Cairn implements RepoTool {
  readonly name = 'cairn';
  readonly repo: string;
  private readonly logs: Logs;
  private readonly env: Record<string, string>;

  /** `env`: more of the environment (an S3 repository's credentials and CA). */
  constructor(repo: string, logs: Logs, env: Record<string, string> = {}) {
    this.repo = repo;
    this.logs = logs;
    this.env = { ...env, CAIRN_REPOSITORY: repo, CAIRN_PASSWORD: PASSWORD };
  }

  private run(label: string, args: string[]): Promise<Timed> {
    // process.execPath: the same Node 22 that runs this script (PATH may hold an older one).
    return runTimed(process.execPath, [CAIRN_BIN, '--json', ...args], { env: this.env, logPrefix: logPrefix(this.logs, `cairn-${label}`) });
  }

  async init(): Promise<void> {
    await this.run('init', ['init']);
  }

  async backup(data: string): Promise<BackupResult> {
    const timed = await this.run('backup', ['backup', data]);
    const summary = lastJsonLine(timed.stdoutFile, 'type', 'summary');
    if (!summary) throw new CommandFailed(`cairn backup printed no summary line (see ${timed.stdoutFile})`);
    return { ...timed, reportedAddedBytes: summary.bytesAdded as number };
  }

  restore(target: string): Promise<Timed> {
    return this.run('restore', ['restore', 'latest', '--target', target]);
  }

  restoredRoot(target: string): string {
    return target;
  }

  async verify(): Promise<Timed> {
    const timed = await this.run('verify', ['verify', '--read-data']);
    const result = lastJsonLine(timed.stdoutFile, 'type', 'verify');
    // A verify that finds problems must fail the run even if the exit code says otherwise.
    if (result?.ok !== true) throw new CommandFailed(`cairn verify --read-data did not report ok: ${JSON.stringify(result)}`);
    return timed;
  }
}

export class Restic implements RepoTool {
  readonly name = 'restic';
  readonly repo: string;
  private readonly logs: Logs;
  private readonly env: Record<string, string>;
  private readonly globalArgs: string[];

  /** `options`: more of the environment and global flags (an S3 repository's credentials, `--cacert`). */
  constructor(repo: string, cache: string, logs: Logs, options: { env?: Record<string, string>; args?: string[] } = {}) {
    this.repo = repo;
    this.logs = logs;
    // Its cache lives in the work dir, so it is removed with it and every run starts cold alike.
    this.env = { ...options.env, RESTIC_REPOSITORY: repo, RESTIC_PASSWORD: PASSWORD, RESTIC_CACHE_DIR: cache };
    this.globalArgs = options.args ?? [];
  }

  private run(label: string, args: string[]): Promise<Timed> {
    return runTimed('restic', [...this.globalArgs, ...args], { env: this.env, logPrefix: logPrefix(this.logs, `restic-${label}`) });
  }

  async init(): Promise<void> {
    await this.run('init', ['init', '--repository-version', '2']);
  }

  async backup(data: string): Promise<BackupResult> {
    const timed = await this.run('backup', ['backup', '--compression', 'auto', '--json', data]);
    const summary = lastJsonLine(timed.stdoutFile, 'message_type', 'summary');
    return { ...timed, reportedAddedBytes: summary?.data_added as number | undefined };
  }

  restore(target: string): Promise<Timed> {
    return this.run('restore', ['restore', 'latest', '--target', target]);
  }

  restoredRoot(target: string, data: string): string {
    return join(target, data);
  }

  verify(): Promise<Timed> {
    return this.run('check', ['check', '--read-data']);
  }
}

/** The throughput limit for a first backup: one stream, tar into zstd -3 on both cores. */
export function tarZstd(data: string, output: string, logs: Logs): Promise<Timed> {
  const script = 'set -o pipefail; tar -cf - -C "$1" . | zstd -T2 -3 -q -f -o "$2"';
  return runTimed('bash', ['-c', script, 'tar-zstd', data, output], { logPrefix: logPrefix(logs, 'tar-zstd') });
}
