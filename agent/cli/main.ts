import { CommanderError } from 'commander';
import { CairnError, ExitCode, errorMessage } from '../core/errors.ts';
import type { EngineRegistry } from '../engines/registry.ts';
import { Cli } from './context.ts';
import type { CliStreams } from './output.ts';
import { createProgram } from './program.ts';
import { finishRun, type StorageFlags } from './storage-options.ts';
import { commandInArgv, registerCommands } from './command-table.ts';
import { routeProcessWarnings } from './process-warnings.ts';

/**
 * Runs the CLI and returns the process exit code (docs/exit-codes.md); never
 * exits the process, so tests call it in-process: `main(['node', 'cairn',
 * ...args], env, { stdout, stderr })` with any writable streams, and an
 * engine registry of their own (createEngineRegistry) to add a test engine.
 * The first SIGINT/SIGTERM cancels the command; the bin (cairn.js) exits at a second.
 */
export async function main(
  argv: string[],
  env: NodeJS.ProcessEnv = process.env,
  streams?: CliStreams,
  engines?: EngineRegistry,
): Promise<number> {
  const cli = new Cli(env, streams, engines);
  const onSignal = (signal: NodeJS.Signals): void => {
    if (cli.signal.aborted) return;
    const outcome =
      cli.run.operation === 'restore'
        ? 'the restore target is incomplete (restore again into an empty directory, or with --force)'
        : 'nothing was committed';
    cli.controller.abort(new CairnError('Cairn.Cancelled', `cancelled by ${signal}; ${outcome}`));
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  const unrouteWarnings = routeProcessWarnings(() => cli.output, Boolean(env.CAIRN_DEBUG), process.env);
  const program = createProgram(cli);
  // wal-fetch's exit 1 says "never archived" to PostgreSQL; every failure exits above 125 (ExitCode.walFetchFailed).
  const failed = (code: number): number => (commandInArgv(program, argv.slice(2)) === 'wal-fetch' ? ExitCode.walFetchFailed : code);
  try {
    await registerCommands(program, cli, argv);
    await program.parseAsync(argv);
    await finishRun(program.opts<StorageFlags>(), cli.run, true, cli.streams.stderr);
    return cli.quietExitCode ?? ExitCode.ok;
  } catch (error) {
    if (error instanceof CommanderError) {
      if (error.code === 'commander.helpDisplayed' || error.code === 'commander.version' || error.exitCode === 0) return ExitCode.ok;
      return failed(ExitCode.usage);
    }
    const failure =
      cli.signal.aborted && !(error instanceof CairnError && error.code !== 'Cairn.Cancelled') ? (cli.signal.reason as unknown) : error;
    const cairn = failure instanceof CairnError ? failure : new CairnError('Cairn.Failure', errorMessage(failure), { cause: failure });
    cli.output.error({ code: cairn.code, message: cairn.message, hint: cairn.hint, exitCode: failed(cairn.exitCode) });
    if (env.CAIRN_DEBUG && failure instanceof Error) cli.streams.stderr.write(`${failure.stack}\n`);
    await finishRun(program.opts<StorageFlags>(), cli.run, false, cli.streams.stderr);
    return failed(cairn.exitCode);
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    unrouteWarnings();
  }
}
