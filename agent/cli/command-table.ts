import type { Command } from 'commander';
import type { Cli } from './context.ts';
import { addHelpExamples } from './help-examples.ts';

type Register = (program: Command, cli: Cli) => void;

/**
 * Every command, in the order `cairn --help` lists them: one file each under commands/, with
 * the names it registers. A file is imported only when its command runs (or for help): a
 * command's module pulls in its whole library (the repository, engines, PITR…), and loading
 * every one of them cost most of the CLI's start-up (issue 21). The names here only choose
 * what to load; a name missing or wrong makes main() load every command, never fail.
 */
const COMMANDS: [names: string[], load: () => Promise<Register>][] = [
  [['init'], async () => (await import('./commands/init.ts')).registerInit],
  [['backup'], async () => (await import('./commands/backup.ts')).registerBackup],
  [['engines'], async () => (await import('./commands/engines.ts')).registerEngines],
  [['snapshots'], async () => (await import('./commands/snapshots.ts')).registerSnapshots],
  [['restore'], async () => (await import('./commands/restore.ts')).registerRestore],
  [['verify'], async () => (await import('./commands/verify.ts')).registerVerify],
  [['drill'], async () => (await import('./commands/drill.ts')).registerDrill],
  [['forget'], async () => (await import('./commands/forget.ts')).registerForget],
  [['pin', 'unpin'], async () => (await import('./commands/pin.ts')).registerPin],
  [['prune'], async () => (await import('./commands/prune.ts')).registerPrune],
  [['unlock'], async () => (await import('./commands/unlock.ts')).registerUnlock],
  [['history'], async () => (await import('./commands/history.ts')).registerHistory],
  [['stats'], async () => (await import('./commands/stats.ts')).registerStats],
  [['check'], async () => (await import('./commands/check.ts')).registerCheck],
  [['repair'], async () => (await import('./commands/repair.ts')).registerRepair],
  [['copy'], async () => (await import('./commands/copy.ts')).registerCopy],
  [['ls'], async () => (await import('./commands/ls.ts')).registerLs],
  [['find'], async () => (await import('./commands/find.ts')).registerFind],
  [['diff'], async () => (await import('./commands/diff.ts')).registerDiff],
  [['dump'], async () => (await import('./commands/dump.ts')).registerDump],
  [['tag'], async () => (await import('./commands/tag.ts')).registerTag],
  [['key'], async () => (await import('./commands/key/index.ts')).registerKey],
  [['agent'], async () => (await import('./commands/agent.ts')).registerAgent],
  [['wal-push'], async () => (await import('./commands/wal-push.ts')).registerWalPush],
  [['wal-fetch'], async () => (await import('./commands/wal-fetch.ts')).registerWalFetch],
  [['wal-daemon'], async () => (await import('./commands/wal-daemon.ts')).registerWalDaemon],
  [['binlog-push'], async () => (await import('./commands/binlog-push.ts')).registerBinlogPush],
  [['pitr'], async () => (await import('./commands/pitr/index.ts')).registerPitr],
  [['completion'], async () => (await import('./commands/completion.ts')).registerCompletion],
  [['generate'], async () => (await import('./commands/generate.ts')).registerGenerate],
];

/** Commands that read the whole command tree (a completion script, the man pages): they load every command. */
const WHOLE_TREE: ReadonlySet<string> = new Set(['completion', 'generate']);

/**
 * Commands that take every engine's flags (--db-host, --target-version…): the engines are loaded
 * before they register. Others load them when they run, if they need them (Cli.loadEngines).
 */
const ENGINE_FLAGS: ReadonlySet<string> = new Set(['backup', 'restore']);

/** The command names of COMMANDS, for the test that checks them against what each file registers. */
export const COMMAND_NAMES: readonly (readonly string[])[] = COMMANDS.map(([names]) => names);

/**
 * Loads and registers every command, or (the common case) only the one that argv names, then
 * adds the examples to the --help of those registered (help-examples.ts).
 */
export async function registerCommands(program: Command, cli: Cli, argv: string[]): Promise<void> {
  const wanted = commandInArgv(program, argv.slice(2));
  if (wanted === 'version') return; // commander prints the version before it looks at any command
  const register = async ([names, load]: (typeof COMMANDS)[number]): Promise<void> => {
    if (names.some((name) => ENGINE_FLAGS.has(name))) await cli.loadEngines();
    (await load())(program, cli);
  };
  const chosen = wanted === undefined || WHOLE_TREE.has(wanted) ? [] : COMMANDS.filter(([names]) => names.includes(wanted));
  for (const entry of chosen) await register(entry);
  if (chosen.length === 0 || !program.commands.some((c) => c.name() === wanted))
    for (const entry of COMMANDS) if (!chosen.includes(entry)) await register(entry);
  addHelpExamples(program);
}

/**
 * What commander will do with these arguments (argv without node and the script), as far as
 * loading goes: 'version' when the global --version comes before any command name, the command
 * name when the arguments before it are global options only (a value of one is skipped), or
 * undefined (help, an unknown option, anything unusual), which loads every command so commander
 * sees the whole program as before.
 */
export function commandInArgv(program: Command, args: string[]): string | undefined {
  for (let i = 0; i < args.length; i++) {
    const arg = args[i] as string;
    if (!arg.startsWith('-')) return arg;
    if (arg === '-V' || arg === '--version') return 'version';
    const [flag, inline] = arg.startsWith('--') ? arg.split(/=(.*)/s, 2) : [arg, undefined];
    const option = program.options.find((o) => o.long === flag || o.short === flag);
    if (option === undefined || (option.optional && inline === undefined)) return undefined;
    if (option.required && inline === undefined) i++; // its value is the next argument
  }
  return undefined;
}
