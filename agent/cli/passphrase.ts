import { readFile } from 'node:fs/promises';
import { CairnError, errorMessage } from '../core/errors.ts';
import { ProcessError, run } from '../process/run.ts';
import { warnIfExposed } from '../core/secret-file.ts';

export interface PassphraseSource {
  env: NodeJS.ProcessEnv;
  passwordFile?: string | undefined;
  /** A shell command whose standard output is the passphrase (a secret manager's CLI). */
  passwordCommand?: string | undefined;
  /** Ask twice (a new passphrase at init) when prompting. */
  confirm?: boolean;
}

type Given = { file: string } | { command: string } | { value: string };

/**
 * Where the passphrase is given, as restic takes it: --password-file or --password-command, then
 * CAIRN_PASSWORD_FILE or CAIRN_PASSWORD_COMMAND, then CAIRN_PASSWORD; undefined when none is (the
 * repository's KMS keys, then a prompt). Two of one rank is a mistake, not a choice to guess at.
 */
function given(source: PassphraseSource): Given | undefined {
  const pick = (file: string | undefined, command: string | undefined, names: string): Given | undefined => {
    if (file && command) throw new CairnError('Cairn.Usage', `give one of ${names}, not both`);
    return file ? { file } : command ? { command } : undefined;
  };
  const value = source.env.CAIRN_PASSWORD;
  return (
    pick(source.passwordFile, source.passwordCommand, '--password-file and --password-command') ??
    pick(
      source.env.CAIRN_PASSWORD_FILE || undefined,
      source.env.CAIRN_PASSWORD_COMMAND || undefined,
      'CAIRN_PASSWORD_FILE and CAIRN_PASSWORD_COMMAND',
    ) ??
    (value ? { value } : undefined)
  );
}

/** Whether a passphrase is given (flag or environment), so no KMS key or prompt is tried. */
export function passphraseGiven(source: PassphraseSource): boolean {
  return given(source) !== undefined;
}

/** The passphrase as given (passphraseGiven), else a prompt on the terminal; never a command-line argument. */
export async function readPassphrase(source: PassphraseSource): Promise<string> {
  const from = given(source);
  if (from && 'file' in from) return readPasswordFile(from.file);
  if (from && 'command' in from) return runPasswordCommand(from.command, source.env);
  if (from) return from.value;
  if (!process.stdin.isTTY) {
    throw new CairnError('Cairn.Usage', 'no passphrase given', {
      hint: 'set CAIRN_PASSWORD, CAIRN_PASSWORD_FILE or CAIRN_PASSWORD_COMMAND, pass --password-file FILE or --password-command CMD, or run on a terminal to be asked',
    });
  }
  const first = await prompt('Repository passphrase: ');
  if (first.length === 0) throw new CairnError('Cairn.Usage', 'an empty passphrase is not allowed');
  if (source.confirm && (await prompt('Repeat the passphrase: ')) !== first) {
    throw new CairnError('Cairn.Usage', 'the two passphrases differ; nothing was written');
  }
  return first;
}

async function readPasswordFile(path: string): Promise<string> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (error) {
    throw new CairnError('Cairn.Usage', `cannot read the password file ${path}: ${errorMessage(error)}`, { cause: error });
  }
  const passphrase = text.replace(/\r?\n$/, '');
  if (passphrase.length === 0) throw new CairnError('Cairn.Usage', `the password file ${path} is empty`);
  await warnIfExposed(path, 'the password file');
  return passphrase;
}

/**
 * Runs the password command with /bin/sh, as an operator's hook: without Cairn's own secrets in
 * its environment (core/child-env.ts). Its standard output, one trailing newline removed, is the
 * passphrase; it is never logged, and a failure names the command's exit, not its output.
 */
async function runPasswordCommand(command: string, env: NodeJS.ProcessEnv): Promise<string> {
  let stdout: string;
  try {
    ({ stdout } = await run(['/bin/sh', '-c', command], { env, kind: 'hook' }));
  } catch (error) {
    // Its standard error is diagnostics (its output, the secret, is never shown).
    const why =
      error instanceof ProcessError
        ? `failed (exit ${error.processExitCode ?? 'by a signal'})${error.stderr ? `: ${error.stderr.split('\n').pop() ?? ''}` : ''}`
        : `could not run: ${errorMessage(error)}`;
    throw new CairnError('Cairn.Usage', `the password command ${why}`, {
      hint: `run it by hand to see why: sh -c ${JSON.stringify(command)}`,
      cause: error,
    });
  }
  const passphrase = stdout.replace(/\r?\n$/, '');
  if (passphrase.length === 0)
    throw new CairnError('Cairn.Usage', 'the password command printed nothing', {
      hint: 'it must print the passphrase on its standard output',
    });
  return passphrase;
}

async function prompt(question: string): Promise<string> {
  const stdin = process.stdin;
  process.stderr.write(question);
  stdin.setRawMode(true);
  stdin.resume();
  try {
    return await new Promise<string>((resolve, reject) => {
      let value = '';
      const onData = (chunk: Buffer): void => {
        for (const char of chunk.toString('utf8')) {
          if (char === '\r' || char === '\n') {
            stdin.off('data', onData);
            process.stderr.write('\n');
            resolve(value);
            return;
          }
          if (char === '\u0003') {
            stdin.off('data', onData);
            reject(new CairnError('Cairn.Cancelled', 'cancelled at the passphrase prompt'));
            return;
          }
          if (char === '\u007f' || char === '\b') value = value.slice(0, -1);
          else value += char;
        }
      };
      stdin.on('data', onData);
    });
  } finally {
    stdin.setRawMode(false);
    stdin.pause();
  }
}
