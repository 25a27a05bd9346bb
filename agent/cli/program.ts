import { availableParallelism } from 'node:os';
import { Command, Option } from 'commander';
import { VERSION } from '../core/version.ts';
import { positiveInt, type Cli, type GlobalOptions } from './context.ts';
import { addStorageOptions } from './storage-options.ts';

/** The `cairn` program with the global flags every command inherits; the commands are added by main.ts. */
export function createProgram(cli: Cli): Command {
  const program = new Command('cairn')
    .description('Encrypted, deduplicated, incremental backups of databases and directories')
    .version(VERSION)
    .addOption(new Option('-r, --repo <url>', 'repository: a directory, file:///path or s3://bucket/prefix').env('CAIRN_REPOSITORY'))
    .option('--password-file <file>', 'read the passphrase from this file (also CAIRN_PASSWORD_FILE; default: CAIRN_PASSWORD, or a prompt)')
    .option('--password-command <command>', 'run this shell command and read the passphrase from its output (also CAIRN_PASSWORD_COMMAND)')
    .option('--json', 'print JSON lines instead of text (also CAIRN_JSON=1)')
    .option('-q, --quiet', 'no progress line')
    .option('--lock-wait <duration>', 'when the repository is locked, keep trying this long (e.g. 30s, 10m)')
    .option(
      '--concurrency <n>',
      'pieces compressed and objects transferred at once (buffers held: backup ≈ (n + 1) × 18 MiB, restore ≈ n × 12 MiB + 40 MiB)',
      positiveInt,
      Math.min(8, Math.max(2, availableParallelism())),
    )
    .exitOverride()
    .configureOutput({ writeOut: (text) => cli.streams.stdout.write(text), writeErr: (text) => cli.streams.stderr.write(text) })
    .hook('preAction', (_cmd, action) => {
      if (cli.env !== process.env) readEnvironment(action, cli.env);
      cli.setOutput(action.optsWithGlobals<GlobalOptions>());
      cli.run.operation ??= action.name();
    });
  return addStorageOptions(program);
}

/**
 * Commander reads an option's environment variable (`.env(...)`) from
 * process.env; main() called in-process with its own environment reads them
 * from that one instead, as the bin does from the process's.
 */
function readEnvironment(action: Command, env: NodeJS.ProcessEnv): void {
  for (let cmd: Command | null = action; cmd; cmd = cmd.parent) {
    for (const option of cmd.options) {
      if (!option.envVar) continue;
      const key = option.attributeName();
      const source = cmd.getOptionValueSource(key);
      if (source !== undefined && source !== 'default' && source !== 'env') continue; // given on the command line
      const raw = env[option.envVar];
      if (raw === undefined) {
        if (source === 'env') cmd.setOptionValueWithSource(key, option.defaultValue, 'default');
        continue;
      }
      const value: unknown = option.parseArg ? option.parseArg(raw, option.defaultValue) : option.isBoolean() ? true : raw;
      cmd.setOptionValueWithSource(key, value, 'env');
    }
  }
}
