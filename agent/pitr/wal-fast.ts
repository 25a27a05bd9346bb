import { CairnError, ExitCode, errorMessage } from '../core/errors.ts';
import { clientOptionsFrom, walFetch, walFetchMissingExit, walPush, type ForwardedFlags } from './wal-client.ts';

/**
 * wal-push and wal-fetch without the rest of the CLI: PostgreSQL starts one
 * per WAL segment, and loading every command's modules (the AWS SDK,
 * commander, zod…) costs about half a second each time, which caps archiving
 * at two segments a second. cairn.js hands those two commands here first;
 * anything this small parser does not recognise (help, an option it does not
 * know) returns undefined and goes through the full CLI (agent/cli/commands/wal-push.ts, wal-fetch.ts),
 * which behaves the same.
 */

const GLOBAL_VALUES: Record<string, keyof ForwardedFlags | null> = {
  '-r': 'repo',
  '--repo': 'repo',
  '--password-file': 'passwordFile',
  '--password-command': 'passwordCommand',
  '--storage-hook': 'storageHook',
  '--limit-upload': 'limitUpload',
  '--limit-download': 'limitDownload',
  '--max-transfers': 'maxTransfers',
  '--concurrency': 'concurrency',
  '--lock-wait': null,
  '--metrics-file': null,
};
const GLOBAL_SWITCHES = new Set(['--json', '-q', '--quiet']);
const COMMAND_VALUES = new Set(['--stream', '--spool-dir', '--stage-dir']);

interface Parsed {
  command: 'wal-push' | 'wal-fetch';
  flags: Partial<ForwardedFlags>;
  options: { stream?: string; spoolDir?: string; stageDir?: string };
  args: string[];
}

/** argv without node and the script. undefined: not a command this parser takes on. */
export function parseWalArgv(argv: readonly string[]): Parsed | undefined {
  const flags: Partial<ForwardedFlags> = {};
  let i = 0;
  for (; i < argv.length; i++) {
    const word = argv[i] as string;
    if (word === 'wal-push' || word === 'wal-fetch') break;
    if (GLOBAL_SWITCHES.has(word)) continue;
    const [name, inline] = splitOption(word);
    if (!(name in GLOBAL_VALUES)) return undefined;
    const value = inline ?? argv[++i];
    if (value === undefined) return undefined;
    const field = GLOBAL_VALUES[name];
    if (field) flags[field] = value;
  }
  const command = argv[i] as Parsed['command'] | undefined;
  if (!command) return undefined;
  const options: Parsed['options'] = {};
  const args: string[] = [];
  for (i++; i < argv.length; i++) {
    const word = argv[i] as string;
    if (!word.startsWith('-') || word === '-') {
      args.push(word);
      continue;
    }
    const [name, inline] = splitOption(word);
    if (!COMMAND_VALUES.has(name)) return undefined;
    const value = inline ?? argv[++i];
    if (value === undefined) return undefined;
    if (name === '--stream') options.stream = value;
    else if (name === '--spool-dir') options.spoolDir = value;
    else if (command === 'wal-fetch') options.stageDir = value;
    else return undefined;
  }
  if (args.length !== (command === 'wal-push' ? 1 : 2)) return undefined;
  return { command, flags, options, args };
}

function splitOption(word: string): [string, string | undefined] {
  const eq = word.indexOf('=');
  return word.startsWith('--') && eq > 0 ? [word.slice(0, eq), word.slice(eq + 1)] : [word, undefined];
}

/** Runs wal-push / wal-fetch; the exit code, or undefined when the full CLI should handle argv. */
export async function runWalCommand(argv: readonly string[], env: NodeJS.ProcessEnv): Promise<number | undefined> {
  const parsed = parseWalArgv(argv);
  if (!parsed) return undefined;
  const repo = parsed.flags.repo ?? env.CAIRN_REPOSITORY;
  // No repository: the full CLI words that error as for every command. A bad --stream is refused by the daemon it would start.
  if (!repo) return undefined;
  try {
    const options = clientOptionsFrom(
      { ...parsed.flags, repo, passwordFile: parsed.flags.passwordFile ?? undefined },
      { spoolDir: parsed.options.spoolDir, stream: parsed.options.stream, stageDir: parsed.options.stageDir, env, cwd: process.cwd() },
    );
    if (parsed.command === 'wal-push') {
      await walPush(parsed.args[0] as string, options);
      return 0;
    }
    // Not archived: exit 1 without a word, as PostgreSQL expects of restore_command.
    return (await walFetch(parsed.args[0] as string, parsed.args[1] as string, options)) ? 0 : walFetchMissingExit(env);
  } catch (error) {
    const cairn = error instanceof CairnError ? error : new CairnError('Cairn.Failure', errorMessage(error), { cause: error });
    const exitCode = parsed.command === 'wal-fetch' ? ExitCode.walFetchFailed : cairn.exitCode;
    // As the full CLI reports an error (cli/output.ts): a JSON line on stdout when asked for (--json, CAIRN_JSON), the words on stderr.
    if (argv.includes('--json') || /^(1|true|yes)$/i.test(env.CAIRN_JSON ?? '')) {
      process.stdout.write(
        `${JSON.stringify({ time: new Date().toISOString(), type: 'error', code: cairn.code, message: cairn.message, hint: cairn.hint, exitCode })}\n`,
      );
    }
    process.stderr.write(`cairn: ${cairn.message}\n${cairn.hint ? `hint: ${cairn.hint}\n` : ''}`);
    return exitCode;
  }
}
